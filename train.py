"""Train NeuroCodec: ``python train.py --config configs/neurocodec.py:demo --workdir DIR``.

Override any config field with ``--config.<field>=<value>``. Re-running the same
command resumes from the latest checkpoint in the workdir.
"""

import logging

from absl import app, flags
import jax
from ml_collections import config_flags

from neurocodec_jax.train.loop import train_and_evaluate

config_flags.DEFINE_config_file("config", "configs/neurocodec.py",
                                "Config file, optionally with :preset.", lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder (default: config.checkpoint_dir).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.getLogger().setLevel(logging.INFO)
  if FLAGS.multihost:
    jax.distributed.initialize()
  config = FLAGS.config
  train_and_evaluate(config, FLAGS.workdir or config.checkpoint_dir)


if __name__ == "__main__":
  app.run(main)
