"""Config validation of a ``neurocodec_jax/configs/neurocodec.py`` config, by the fields
declared in ``neurocodec_jax.config_fields``.

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
import os
import re
import sys
from collections.abc import Mapping, Sequence

from absl import app
from ml_collections import config_flags

from neurocodec_jax import config_fields
from neurocodec_jax.configs import neurocodec


class ConfigError(ValueError):
  """An invalid config; the message names each bad key or value and what is valid."""


def choices() -> dict[str, tuple[str, ...]]:
  """The valid values of each enumerated field (``config_fields.choices`` and the
  presets)."""
  return dict(config_fields.choices(), preset=tuple(neurocodec.PRESETS))


def rules() -> dict:
  """The check of every field, as ``config_fields.FIELDS`` declares it."""
  return config_fields.checks({"preset": tuple(neurocodec.PRESETS)})


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
  for name in ("lambda_sep", "lambda_sep_env", "lambda_select", "lambda_token"):
    if c[name] > 0 and c.model.selector != "correlation":
      problems.append(f"{name}={c[name]!r} needs model.selector='correlation' (a term of "
                      f"the selector's streams), got {c.model.selector!r}")
  if c.train.cue_curriculum_steps and c.model.selector != "correlation":
    problems.append(f"train.cue_curriculum_steps={c.train.cue_curriculum_steps!r} needs "
                    f"model.selector='correlation' (the cue it anneals is the selector's), "
                    f"got {c.model.selector!r}")
  masked = c.model.output_waveform in ("mixture_mask", "refined_mask")
  if masked and c.model.selector != "correlation":
    problems.append(f"model.output_waveform={c.model.output_waveform!r} needs model.selector="
                    f"'correlation' (the mask is its two streams'), got {c.model.selector!r}")
  if c.model.unsure_margin > 0 and not masked:
    problems.append(f"model.unsure_margin={c.model.unsure_margin!r} backs a masked output "
                    f"off toward the mixture: it needs model.output_waveform 'mixture_mask' "
                    f"or 'refined_mask', got {c.model.output_waveform!r}")
  if c.model.output_waveform == "refined_mask" and not (c.model.refiner
                                                         and os.path.isfile(c.model.refiner)):
    problems.append(f"model.output_waveform='refined_mask' needs model.refiner, a trained "
                    f"refiner's file (python -m neurocodec_jax.cli.refine writes one), got "
                    f"{c.model.refiner!r}: no such file")
  if (c.model.stream_form == "tokens") != (c.lambda_token > 0):
    problems.append(f"model.stream_form={c.model.stream_form!r} and lambda_token="
                    f"{c.lambda_token!r}: the token term trains the tokens streams and "
                    f"only those (set both or neither)")
  if c.model.stream_form == "tokens" and (c.codec.requantize_output
                                          or c.model.mixture_consistency):
    problems.append("model.stream_form='tokens' decodes its own codes: it needs "
                    "codec.requantize_output=False (re-quantizing would change them) and "
                    "model.mixture_consistency=False (codes do not add up)")
  if c.model.bidirectional and c.backbone != "mamba":
    problems.append(f"model.bidirectional=True needs backbone='mamba', got {c.backbone!r}")
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
  checks = rules()
  for path, value in fields.items():
    expected = checks[path](value) if path in checks else None
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


def load_config_file(spec: str):
  """The config ``"file.py:preset"`` names, loaded as ml_collections' config flags load
  it (``get_config("preset")``); FileNotFoundError when the file is missing."""
  path, colon, arg = spec.partition(":")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such config file.")
  module_spec = importlib.util.spec_from_file_location("_config_file", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(*([arg] if colon else []))


def unknown_override(argv: Sequence[str], name: str = "config",
                     default: str | None = None) -> str | None:
  """The message for the first ``--<name>.<key>`` in ``argv`` naming no field, if any.

  The config is the one ``--<name>`` (else ``default``) names, before overrides.
  """
  spec = _config_spec(argv, name) or default
  if not spec:
    return None
  try:
    base = load_config_file(spec)
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
