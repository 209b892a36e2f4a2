"""Config validation: every field of a ``neurocodec_jax/configs/neurocodec.py`` config, in one place.

``validate(config)`` checks the key set against the presets' (an unknown key is
named with the closest valid ones), each enumerated field against the values the
code that consumes it accepts (``choices()``), each number against its range, and
the few fields that constrain each other. It raises one ``ConfigError`` naming
every bad field with what it accepts, e.g.::

  model.selector='corelation' is invalid: expected one of 'none', 'correlation'
  (did you mean 'correlation'?)

train.py and evaluate.py call it (``validate_or_exit``) right after the flags are
parsed, before any data or codec work. They define their config flag with
``define_config_flag`` and pass ``parse_flags`` to ``app.run``: ml_collections
reports an unknown ``--config.<key>`` as a bare AttributeError traceback, these
turn it into one line with the closest valid keys.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import re
import sys
from collections.abc import Mapping, Sequence

from absl import app
from ml_collections import config_flags

from neurocodec_jax.configs import neurocodec


class ConfigError(ValueError):
  """An invalid config; the message names each bad key or value and what is valid."""


# An enumeration whose consuming code has no importable constant yet: the code accepts
# exactly these (train/loop's non-finite handling).
NONFINITE = ("stop", "skip")
# codec_bridge.loading.resolve_device: "auto", or a torch device this project runs on.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def choices() -> dict[str, tuple[str, ...]]:
  """The valid values of each enumerated field, as the consuming code accepts them."""
  # Imported here, not at the top: the modules pull in JAX/Flax (seconds), and an
  # unknown --config key must be reported before that.
  from neurocodec_jax.models import generator  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.ops import scan  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import hdf5  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import layers  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import optim, steps  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import run  # pylint: disable=g-import-not-at-top
  return {
      "preset": tuple(neurocodec.PRESETS),
      "activation": layers.ACTIVATIONS,
      "backbone": generator.BACKBONES,
      "model.scan_backend": tuple(scan.BACKENDS),
      "model.selector": tuple(generator.SELECTORS),
      "model.select_window": generator.SELECT_WINDOWS,
      "model.output_norm": generator.OUTPUT_NORMS,
      "model.select_decision": generator.SELECT_DECISIONS,
      "model.mix_input": tuple(steps.MIX_INPUTS),
      "model.target_latent": tuple(steps.TARGET_LATENTS),
      "train.schedule": optim.SCHEDULES,
      "train.nonfinite": NONFINITE,
      "data.eeg_units": ("auto",) + tuple(hdf5.EEG_UNITS),
      "codec.model_type": tuple(neurocodec.DAC_ARCHS),
      "codec.backend": run.CODEC_BACKENDS,
  }


# ------------------------------------------------------------- field checks ----
# Each check returns None when the value is valid, else what is expected.

def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, *, or_value: int | None = None):
  expected = f"an integer >= {lo}" + (f", or {or_value}" if or_value is not None else "")
  return lambda v: None if _is_int(v) and (v >= lo or v == or_value) else expected


def _number(lo: float | None = None, hi: float | None = None, *, lo_open=False,
            hi_open=False):
  """A finite number in the interval (NaN and inf never pass)."""
  if lo is not None and hi is not None:
    expected = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  elif lo is not None:
    expected = f"a finite number {'>' if lo_open else '>='} {lo:g}"
  else:
    expected = "a finite number"

  def check(v):
    ok = (_is_number(v) and math.isfinite(v)
          and (lo is None or (v > lo if lo_open else v >= lo))
          and (hi is None or (v < hi if hi_open else v <= hi)))
    return None if ok else expected
  return check


def _bool(v):
  return None if isinstance(v, bool) else "True or False"


def _text(v):
  return None if isinstance(v, str) and v else "a non-empty string"


def _optional_text(v):
  return None if v is None or (isinstance(v, str) and v) else "None or a non-empty string"


def _ints(lo: int, *, nonempty: bool):
  expected = f"a {'non-empty ' if nonempty else ''}list of integers >= {lo}"

  def check(v):
    ok = (isinstance(v, Sequence) and not isinstance(v, str) and (v or not nonempty)
          and all(_is_int(x) and x >= lo for x in v))
    return None if ok else expected
  return check


def _codebook_dim(v):
  ok = (_is_int(v) and v >= 1) or _ints(1, nonempty=True)(v) is None
  return None if ok else "an integer >= 1, or a list of them (one per codebook)"


def _bands(v):
  def band_ok(b):
    return (isinstance(b, Sequence) and len(b) == 2 and all(_is_number(x) for x in b)
            and 0 <= b[0] < b[1] <= 1)
  ok = isinstance(v, Sequence) and not isinstance(v, str) and v and all(map(band_ok, v))
  return None if ok else "a non-empty list of (low, high) fractions with 0 <= low < high <= 1"


def _device(v):
  ok = isinstance(v, str) and DEVICE_PATTERN.fullmatch(v)
  return None if ok else "'auto', 'cpu', 'cuda' or 'cuda:N'"


def _choice(values: tuple[str, ...]):
  listed = ", ".join(repr(x) for x in values)

  def check(v):
    if isinstance(v, str) and v in values:
      return None
    close = difflib.get_close_matches(v, values, n=1) if isinstance(v, str) else []
    return f"one of {listed}" + (f" (did you mean {close[0]!r}?)" if close else "")
  return check


def _rules() -> dict:
  """The check of every field (tests/test_config.py: exactly the presets' fields)."""
  positive, count = _int(1), _int(0)
  weight = _number(0.0)                               # loss weights, decay: finite >= 0
  rate = _number(0.0, lo_open=True)                   # learning rates, clips, epsilons
  rules = {
      "preset": None, "activation": None, "backbone": None,   # enumerations: choices()
      "normalize_latents": _bool, "noise_cue": _bool,
      "lambda_recon": weight, "lambda_env": weight, "lambda_mel": weight,
      "lambda_adv": weight, "lambda_feat": weight, "lambda_sep": weight,
      "lambda_sep_env": weight, "lambda_select": weight,
      "hidden_dim": positive, "num_layers": positive, "batch_size": positive,
      "lr": rate, "epochs": positive, "eeg_channels": positive,
      "root": _text, "checkpoint_dir": _text, "seed": count,
      # data
      "data.segment_seconds": rate, "data.eeg_rate": positive, "data.eeg_units": None,
      "data.train_split": _text, "data.val_split": _text, "data.test_split": _text,
      "data.num_workers": count, "data.check_finite": _bool,
      # codec
      "codec.model_type": None, "codec.weights": _optional_text, "codec.random": _bool,
      "codec.device": _device, "codec.backend": None, "codec.cache_dir": _optional_text,
      "codec.precompute_batch_size": positive, "codec.store_z": _bool,
      "codec.n_quantizers_eval": positive,           # <= arch.n_codebooks: _relations
      "codec.arch.sample_rate": positive, "codec.arch.encoder_dim": positive,
      "codec.arch.encoder_rates": _ints(1, nonempty=True), "codec.arch.latent_dim": positive,
      "codec.arch.decoder_dim": positive, "codec.arch.decoder_rates": _ints(1, nonempty=True),
      "codec.arch.n_codebooks": positive, "codec.arch.codebook_size": positive,
      "codec.arch.codebook_dim": _codebook_dim,
      # model
      "model.num_heads": positive, "model.dropout": _number(0.0, 1.0, hi_open=True),
      "model.d_state": positive, "model.d_conv": positive, "model.expand": positive,
      "model.dt_min": rate, "model.dt_max": rate, "model.dt_init_floor": rate,
      "model.scan_backend": None, "model.eeg_dim": positive, "model.cheb_k": positive,
      "model.max_len": positive, "model.stream_lookahead": count,
      "model.time_aligned_pe": _bool, "model.eeg_kernel": positive, "model.selector": None,
      "model.select_window": None, "model.output_norm": None, "model.select_decision": None,
      "model.mixture_consistency": _bool, "model.mix_input": None,
      "model.target_latent": None,
      "model.transformer_ff_dim": positive,
      # discriminators and mel loss (a discriminator family may be left empty)
      "disc.rates": _ints(1, nonempty=False), "disc.periods": _ints(1, nonempty=False),
      "disc.fft_sizes": _ints(1, nonempty=False), "disc.bands": _bands,
      "disc.width": rate, "disc.lr": rate, "disc.grad_clip": rate,
      "mel.n_mels": _ints(1, nonempty=True), "mel.window_lengths": _ints(1, nonempty=True),
      "mel.clamp_eps": rate, "mel.mag_weight": weight, "mel.log_weight": weight,
      "mel.pow": rate,
      # train (log/checkpoint intervals are moduli: >= 1)
      "train.weight_decay": weight, "train.grad_clip": rate, "train.schedule": None,
      "train.plateau_factor": _number(0.0, 1.0, lo_open=True, hi_open=True),
      "train.plateau_patience": count, "train.warmup_steps": count,
      "train.waveform_start": count, "train.cue_curriculum_steps": count,
      "train.max_steps": _int(1, or_value=-1),
      "train.log_every": positive, "train.checkpoint_every": positive,
      "train.eval_every": _int(1, or_value=-1), "train.keep_checkpoints": positive,
      "train.nonfinite": None, "train.tensorboard": _bool, "train.wandb": _bool,
      # synthetic dataset
      "synthetic.n_train": positive, "synthetic.n_val": positive,
      "synthetic.n_test": positive, "synthetic.subjects": positive,
      "synthetic.eeg_snr_db": _number(), "synthetic.seed": count,
  }
  for path, values in choices().items():
    rules[path] = _choice(values)
  return rules


def _relations(c) -> list[str]:
  """Fields that constrain each other (checked once each field is valid on its own)."""
  problems = []
  if c.hidden_dim % c.model.num_heads:     # Flax attention splits hidden_dim into heads
    problems.append(f"hidden_dim={c.hidden_dim!r} is invalid: expected a multiple of "
                    f"model.num_heads={c.model.num_heads!r}")
  if c.model.dt_max < c.model.dt_min:
    problems.append(f"model.dt_max={c.model.dt_max!r} is invalid: expected >= "
                    f"model.dt_min={c.model.dt_min!r}")
  n_codebooks = c.codec.arch.n_codebooks
  if c.codec.n_quantizers_eval > n_codebooks:
    problems.append(f"codec.n_quantizers_eval={c.codec.n_quantizers_eval!r} is invalid: "
                    f"expected an integer in [1, codec.arch.n_codebooks={n_codebooks!r}]")
  for name in ("lambda_sep", "lambda_sep_env", "lambda_select"):
    if c[name] > 0 and c.model.selector != "correlation":
      problems.append(f"{name}={c[name]!r} needs model.selector='correlation' (a term of "
                      f"the selector's streams), got {c.model.selector!r}")
  if c.train.cue_curriculum_steps and c.model.selector != "correlation":
    problems.append(f"train.cue_curriculum_steps={c.train.cue_curriculum_steps!r} needs "
                    f"model.selector='correlation' (the cue it anneals is the selector's), "
                    f"got {c.model.selector!r}")
  if len(c.mel.n_mels) != len(c.mel.window_lengths):
    problems.append(f"mel.window_lengths has {len(c.mel.window_lengths)} entries: expected "
                    f"one per mel.n_mels ({len(c.mel.n_mels)})")
  return problems


# --------------------------------------------------------------------- keys ----

def _is_group(v) -> bool:
  return isinstance(v, Mapping) or (hasattr(v, "keys") and hasattr(v, "__getitem__"))


def _leaves(node, prefix: str = "") -> dict:
  """``{"model.dropout": 0.3, ...}``: every non-group field of a (nested) config."""
  out = {}
  for key in node.keys():
    value = node[key]
    if _is_group(value):
      out.update(_leaves(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _has_key(node, path: str) -> bool:
  for part in path.split("."):
    if not _is_group(node) or part not in node.keys():
      return False
    node = node[part]
  return True


def check_key(config, path: str, source: str = "") -> None:
  """Raises ``ConfigError`` unless ``path`` ("model.dropout") names a field of ``config``.

  The message names the unknown key (and ``source``, e.g. the flag that set it)
  with the closest valid names, or, when none is close, every valid key of its group.
  """
  node, done = config, []
  key = repr(path) + (f" in {source}" if source else "")
  for part in path.split("."):
    where = ".".join(done)
    if not _is_group(node):
      raise ConfigError(f"unknown key {key}: {where!r} is a value, not a group")
    keys = sorted(node.keys())
    if part not in keys:
      prefix = where + "." if where else ""
      close = difflib.get_close_matches(part, keys, n=3)
      if close:
        # The corrected path when the rest of it exists there ('modle.dropout' ->
        # 'model.dropout'), else the group's name alone.
        rest = ".".join(path.split(".")[len(done) + 1:])
        hints = [f"{prefix}{k}.{rest}" for k in close
                 if rest and _has_key(node[k], rest)] or [prefix + k for k in close]
        raise ConfigError(f"unknown key {key} (did you mean "
                          f"{' or '.join(repr(h) for h in hints)}?)")
      raise ConfigError(f"unknown key {key}; valid keys of "
                        f"{where or 'the config'}: {', '.join(keys)}")
    node = node[part]
    done.append(part)


def validate(config):
  """Returns ``config`` if every field is valid, else raises one ``ConfigError``.

  Checks the keys against the presets' (``config`` may be unlocked, e.g. rebuilt
  from a dict), every field's type, range or valid values, and the fields that
  constrain each other. The message lists every problem, separated by "; ".
  """
  reference = neurocodec.get_config()             # all presets share one key set
  schema, fields = _leaves(reference), _leaves(config)
  problems = []
  for path in sorted(set(fields) - set(schema)):
    try:
      check_key(reference, path)
    except ConfigError as e:
      problems.append(str(e))
  problems += [f"missing key {path!r}" for path in sorted(set(schema) - set(fields))]
  rules = _rules()
  for path, value in fields.items():
    expected = rules[path](value) if path in rules else None
    if expected:
      problems.append(f"{path}={value!r} is invalid: expected {expected}")
  if not problems:
    problems = _relations(config)
  if problems:
    raise ConfigError("; ".join(problems))
  return config


# ------------------------------------------------------------- command line ----

def validate_or_exit(config):
  """``validate`` for a command line: a bad config ends the program with one line."""
  try:
    return validate(config)
  except ConfigError as e:
    sys.exit(f"Config error: {e}")


def _config_spec(argv: Sequence[str], name: str) -> str | None:
  """The value of ``--<name>`` in ``argv`` ("neurocodec_jax/configs/neurocodec.py:demo"), if given."""
  for i, arg in enumerate(argv):
    m = re.fullmatch(rf"--?{name}(=(.*))?", arg)
    if m:
      return m.group(2) if m.group(1) else (argv[i + 1] if i + 1 < len(argv) else None)
  return None


def unknown_override(argv: Sequence[str], name: str = "config",
                     default: str | None = None) -> str | None:
  """The message for the first ``--<name>.<key>`` in ``argv`` naming no field, if any.

  The config is the one ``--<name>`` (else ``default``) names, before overrides.
  """
  spec = _config_spec(argv, name) or default
  if not spec:
    return None
  try:   # loaded as config_flags loads it: "file.py:arg" -> get_config("arg")
    path, colon, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("_config_to_check", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    base = module.get_config(*([arg] if colon else []))
  except Exception:  # pylint: disable=broad-except
    return None      # an unloadable config file: left to ml_collections to report
  for arg in argv:
    m = re.match(rf"--?(?:no)?{name}\.([^=]+)", arg)
    if m:
      try:
        check_key(base, m.group(1), source=arg)
      except ConfigError as e:
        return str(e)
  return None


# ml_collections reports an unknown key in an override as a bare AttributeError or
# KeyError traceback: when the flags are parsed, or, without --config, already when
# the flag is defined (its default is loaded then, with the overrides).

def define_config_flag(name: str, default: str | None, help_string: str, **kwargs):
  """``config_flags.DEFINE_config_file``; an unknown ``--<name>.<key>`` exits with one line."""
  try:
    return config_flags.DEFINE_config_file(name, default, help_string, **kwargs)
  except (AttributeError, KeyError):
    message = unknown_override(kwargs.get("sys_argv") or sys.argv, name, default)
    if message is None:
      raise
  sys.exit(f"Config error: {message}")


def parse_flags(argv: list[str], flag_values=None) -> list[str]:
  """absl flag parsing for ``app.run(main, flags_parser=parse_flags)``.

  As absl's own, plus: an unknown ``--config.<key>`` ends the program with one line
  naming the key and the closest valid ones. ``flag_values`` (tests) parses into
  those flags and leaves absl's own errors raised.
  """
  try:
    return app.parse_flags_with_usage(argv) if flag_values is None else flag_values(argv)
  except (AttributeError, KeyError):
    message = unknown_override(argv)
    if message is None:
      raise
  sys.exit(f"Config error: {message}")
