"""``python train.py ...``: the ``neurocodec_jax.cli.train`` entry point from a checkout
(installed: ``neurocodec-train``)."""

from absl import app

from neurocodec_jax.cli import train
from neurocodec_jax.configs.validate import parse_flags

if __name__ == "__main__":
  app.run(train.main, flags_parser=parse_flags)
