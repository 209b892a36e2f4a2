"""Train NeuroCodec: ``neurocodec-train --config neurocodec_jax/configs/neurocodec.py:demo --workdir DIR``
(or ``python train.py ...`` in a checkout).

Override any config field with ``--config.<field>=<value>``. Re-running the same
command resumes from the latest checkpoint in the workdir.
"""

import logging

from absl import app, flags

from neurocodec_jax.configs import CONFIG_FILE
from neurocodec_jax.cli import one_line_errors
from neurocodec_jax.configs.validate import define_config_flag, parse_flags, validate_or_exit

define_config_flag("config", CONFIG_FILE, "Config file, optionally with :preset.",
                   lock_config=True)
flags.DEFINE_string("workdir", None, "Run folder (default: config.checkpoint_dir).")
flags.DEFINE_bool("multihost", False, "Call jax.distributed.initialize() first.")
flags.DEFINE_bool("keep_freed_memory", True,
                  "On the CPU backend, set glibc's malloc to keep freed memory for reuse "
                  "(neurocodec_jax/host_memory.py: 3-14% faster steps with waveform "
                  "terms; the process holds its peak memory). --nokeep_freed_memory: "
                  "glibc as shipped.")
FLAGS = flags.FLAGS


@one_line_errors
def main(argv):
  """Trains ``FLAGS.config`` in ``FLAGS.workdir``."""
  del argv
  config = validate_or_exit(FLAGS.config)
  # The training stack (JAX: seconds to import) comes after the flags, so that an
  # unknown --config key is reported at once.
  import jax  # pylint: disable=g-import-not-at-top
  import codec_bridge  # pylint: disable=g-import-not-at-top,unused-import  (the codec)
  from neurocodec_jax.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.INFO)
  if FLAGS.multihost:
    jax.distributed.initialize()
  if FLAGS.keep_freed_memory and jax.default_backend() == "cpu":
    from neurocodec_jax import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.keep_freed_memory()
  train_and_evaluate(config, FLAGS.workdir or config.checkpoint_dir)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)


def run():
  """The ``neurocodec-train`` console script."""
  app.run(main, flags_parser=parse_flags)
