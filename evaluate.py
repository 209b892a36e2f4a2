"""``python evaluate.py ...``: the ``neurocodec_jax.cli.evaluate`` entry point from a checkout
(installed: ``neurocodec-evaluate``)."""

from absl import app

from neurocodec_jax.cli import evaluate
from neurocodec_jax.configs.validate import parse_flags

if __name__ == "__main__":
  app.run(evaluate.main, flags_parser=parse_flags)
