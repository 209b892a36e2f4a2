"""``python -m neurocodec_jax.cli.latent_structure --config FILE:PRESET [--split test --n 64]``:
prints ``neurocodec_jax.latent_structure.measure`` for the configured codec."""

import json
import sys

from absl import app, flags
from ml_collections import config_flags

import codec_bridge  # pylint: disable=unused-import  (registers the codec loader)
from neurocodec_jax.configs import CONFIG_FILE
from neurocodec_jax.latent_structure import KINDS, measure
from neurocodec_jax.run import build_run

config_flags.DEFINE_config_file("config", CONFIG_FILE + ":demo", "NeuroCodec config file and preset.")
flags.DEFINE_string("split", "test", "split with unattended_<split>.h5")
flags.DEFINE_integer("n", 64, "number of trials (the first n)")


def main(argv):
  del argv
  split = flags.FLAGS.split
  run = build_run(flags.FLAGS.config, {split: KINDS})
  print(json.dumps(measure(run.codec, run.sources[split], flags.FLAGS.n), indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(app.run(main))
