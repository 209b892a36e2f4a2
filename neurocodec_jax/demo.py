"""`make demo`: the main job on the embedded default (synthetic data, small random codec).

Generates the synthetic AAD dataset for the ``demo`` preset when it is absent
and prints a summary of it.
"""

import logging
import os
import sys

from configs import neurocodec
from neurocodec_jax.data import open_split, synthetic


def prepare_data(config) -> str:
  """Generates the synthetic dataset at ``config.root`` unless it exists."""
  if os.path.isdir(config.root):
    print(f"[demo] synthetic dataset found at {config.root} (delete it to regenerate)")
  else:
    print(f"[demo] generating the synthetic AAD dataset at {config.root}")
    synthetic.generate(config.root, synthetic.spec_from_config(config))
  print(synthetic.summarize(config.root))
  for split in ("train", "val", "test"):
    open_split(config, split)            # validates the layout against the config
  return config.root


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  config = neurocodec.get_config("demo")
  prepare_data(config)
  print("[demo] training is not implemented yet: this demo stops after the data.")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
