"""Entry points: ``train``, ``evaluate``, ``demo``, ``extract``. They alone choose the codec
(``codec_bridge``) and read configs; the library imports neither."""

import functools
import sys


def expected_errors() -> tuple[type[BaseException], ...]:
  """The errors an entry point reports in one line: each names the file or field and
  what was expected (a missing run or file, a bad dataset, checkpoint or config)."""
  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import DataError
  from neurocodec_jax.train.checkpoint import CheckpointError
  from neurocodec_jax.training import ConfigMismatch
  from neurocodec_jax.data.speech import SpeechSourceError
  from neurocodec_jax.recordings import RecordingError
  from neurocodec_jax.configs.validate import ConfigError
  return (FileNotFoundError, NotADirectoryError, DataError, CheckpointError, ConfigMismatch,
          SpeechSourceError, RecordingError, ConfigError)


def one_line_errors(main):
  """Wraps an entry point's ``main``: an expected error ends the program with one
  line on stderr (exit status 2), not a traceback; anything else is a bug and keeps
  its traceback."""

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except BaseException as e:  # pylint: disable=broad-except
      if isinstance(e, expected_errors()):
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
      raise
  return wrapped


def use_refiner(config, path: str) -> None:
  """Makes ``config``'s output the mixture through the mask refined by the refiner at
  ``path`` (``python -m neurocodec_jax.cli.refine``), backed off where the selector is
  unsure as chosen for that refiner on val, when its file records a choice."""
  from neurocodec_jax.models import refiner  # pylint: disable=g-import-not-at-top
  back_off = refiner.chosen_back_off(path)
  config.model.refiner = path
  config.model.output_waveform = "refined_mask"
  if back_off:
    config.model.unsure_margin = back_off["unsure_margin"]
    config.model.unsure_mix = back_off["unsure_mix"]
