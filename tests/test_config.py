"""Config presets: load, keep the original's keys, reject unknown keys; validation."""

import math
import os
import subprocess
import sys
import time

import ml_collections
import pytest

from neurocodec_jax.configs import neurocodec
from neurocodec_jax.configs import validate as check

ORIGINAL_KEYS = ("activation", "normalize_latents", "lambda_recon", "lambda_env",
                 "lambda_mel", "lambda_adv", "lambda_feat", "hidden_dim", "num_layers",
                 "batch_size", "lr", "epochs", "eeg_channels", "backbone", "noise_cue",
                 "root", "checkpoint_dir", "seed")


@pytest.mark.parametrize("preset", neurocodec.PRESETS)
def test_presets_load_with_original_keys(preset):
  config = neurocodec.get_config(preset)
  for key in ORIGINAL_KEYS:
    assert key in config, key
  assert config.preset == preset


def test_preset_sizes():
  cocktail, kul, demo = (neurocodec.get_config(p) for p in ("cocktail", "kul", "demo"))
  assert (cocktail.codec.arch.sample_rate, cocktail.eeg_channels) == (44100, 128)
  assert cocktail.codec.arch.latent_dim == 1024 and cocktail.codec.arch.n_codebooks == 9
  assert (kul.codec.arch.sample_rate, kul.eeg_channels, kul.codec.model_type) == (
      16000, 64, "16khz")
  # No preset uses random weights: the demo uses the project's trained codec.
  assert not demo.codec.random and not cocktail.codec.random and not kul.codec.random
  assert demo.codec.weights == neurocodec.DEMO_CODEC_WEIGHTS
  assert dict(demo.codec.arch) == neurocodec.DEMO_CODEC
  assert cocktail.codec.weights is None     # real configs never default to random


def test_default_preset_is_cocktail():
  assert neurocodec.get_config().preset == "cocktail"
  assert neurocodec.get_config("").preset == "cocktail"


def test_unknown_preset_rejected():
  with pytest.raises(ValueError, match="Unknown preset 'nope'"):
    neurocodec.get_config("nope")


@pytest.mark.parametrize("key", ["hiden_dim", "model.heads"])
def test_unknown_key_rejected_naming_it(key):
  config = neurocodec.get_config("demo")
  *parents, leaf = key.split(".")
  target = config
  for p in parents:
    target = target[p]
  with pytest.raises(AttributeError, match=leaf):
    setattr(target, leaf, 1)


def test_overrides_keep_types():
  config = neurocodec.get_config("demo")
  config.batch_size = 4
  config.codec.weights = "/path/to/weights.pth"
  assert config.batch_size == 4 and config.codec.weights == "/path/to/weights.pth"
  with pytest.raises(TypeError):
    config.batch_size = "four"


def test_command_line_overrides(tmp_path):
  """`--config neurocodec_jax/configs/neurocodec.py:demo --config.batch_size=4` as train.py parses it."""
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", "--config=neurocodec_jax/configs/neurocodec.py:demo", "--config.batch_size=4",
          "--config.model.dropout=0.0"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
  fv(argv)
  assert fv.config.preset == "demo" and fv.config.batch_size == 4
  assert fv.config.model.dropout == 0.0
  argv = ["prog", "--config=neurocodec_jax/configs/neurocodec.py:demo", "--config.batchsize=4"]
  fv2 = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv2, sys_argv=argv)
  with pytest.raises(Exception, match="batchsize"):
    fv2(argv)


# ------------------------------------------------------------- validation ----

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILE = os.path.join(ROOT, "neurocodec_jax", "configs", "neurocodec.py")
ENUM_FIELDS = ("preset", "activation", "backbone", "model.scan_backend", "model.selector",
               "model.select_window", "model.eeg_norm", "model.output_norm",
               "model.select_decision", "model.mix_input", "model.target_latent",
               "model.stream_form", "model.cue_form", "model.output_waveform", "train.schedule",
               "train.nonfinite", "train.waveform_output",
               "data.eeg_units",
               "codec.model_type", "codec.backend", "synthetic.eeg_model",
               "synthetic.subject_split")


def _set(config, path, value):
  *parents, leaf = path.split(".")
  for p in parents:
    config = config[p]
  config[leaf] = value


def _error(config) -> str:
  with pytest.raises(check.ConfigError) as e:
    check.validate(config)
  return str(e.value)


@pytest.mark.parametrize("preset", neurocodec.PRESETS)
def test_presets_are_valid(preset):
  assert check.validate(neurocodec.get_config(preset)) is not None


def test_every_field_is_declared_once():
  # A new config field must be declared in config_fields.FIELDS (its check and whether
  # a run resumes after it changes), or validation would skip it.
  from neurocodec_jax import config_fields  # pylint: disable=g-import-not-at-top
  for preset in neurocodec.PRESETS:
    assert set(check._leaves(neurocodec.get_config(preset))) == set(config_fields.FIELDS)
  assert set(check.rules()) == set(config_fields.FIELDS)
  assert set(check.choices()) == set(ENUM_FIELDS)
  assert {f.resume for f in config_fields.FIELDS.values()} <= {
      config_fields.HOST, config_fields.RESUME, config_fields.WEIGHT, config_fields.FIXED}


def test_resumability_is_read_from_the_declaration():
  from neurocodec_jax import config_fields as f  # pylint: disable=g-import-not-at-top
  assert f.resumable("lr", 1e-3, 1e-4) and f.resumable("train.max_steps", 10, 20)
  assert f.resumable("lambda_mel", 15.0, 5.0) and not f.resumable("lambda_mel", 15.0, 0.0)
  assert not f.resumable("hidden_dim", 64, 128) and not f.resumable("no.such_key", 1, 2)
  assert "train.max_steps" in f.host_only() and "lr" not in f.host_only()


def test_choices_come_from_the_consuming_code():
  from neurocodec_jax.models import generator  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.ops import scan  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  choices = check.choices()
  assert choices["model.scan_backend"] == tuple(scan.BACKENDS)
  assert choices["model.selector"] == tuple(generator.SELECTORS)
  assert choices["model.mix_input"] == tuple(steps.MIX_INPUTS)
  assert choices["codec.model_type"] == tuple(neurocodec.DAC_ARCHS)
  from neurocodec_jax import run  # pylint: disable=g-import-not-at-top
  assert choices["codec.backend"] == run.CODEC_BACKENDS == ("torch", "jax")
  assert neurocodec.get_config().codec.backend == "torch"      # the default is unchanged
  assert "millivolts" in choices["data.eeg_units"]


@pytest.mark.parametrize("field", ENUM_FIELDS)
def test_enum_typo_names_field_value_and_choices(field):
  config = neurocodec.get_config("demo")
  valid = check.choices()[field]
  typo = valid[0][:-1]
  _set(config, field, typo)
  message = _error(config)
  assert f"{field}={typo!r} is invalid: expected one of" in message
  for value in valid:
    assert repr(value) in message
  assert f"(did you mean {valid[0]!r}?)" in message


def test_nonfinite_other_than_stop_or_skip_rejected():
  # The loop treats anything but "stop" as "skip": a typo must not silently skip.
  config = neurocodec.get_config("demo")
  config.train.nonfinite = "stpo"
  assert _error(config) == ("train.nonfinite='stpo' is invalid: expected one of 'stop', "
                            "'skip' (did you mean 'stop'?)")


@pytest.mark.parametrize("path, value, expected", [
    ("batch_size", 0, "an integer >= 1"),
    ("lr", 0.0, "a finite number > 0"),
    ("lr", math.nan, "a finite number > 0"),
    ("lr", math.inf, "a finite number > 0"),
    ("epochs", 0, "an integer >= 1"),
    ("hidden_dim", 0, "an integer >= 1"),
    ("num_layers", 0, "an integer >= 1"),
    ("eeg_channels", 0, "an integer >= 1"),
    ("lambda_mel", -1.0, "a finite number >= 0"),
    ("model.dropout", 1.0, "a number in [0, 1)"),
    ("data.segment_seconds", 0.0, "a finite number > 0"),
    ("train.max_steps", 0, "an integer >= 1, or -1"),
    ("train.eval_every", 0, "an integer >= 1, or -1"),
    ("train.keep_checkpoints", 0, "an integer >= 1"),
    ("train.log_every", 0, "an integer >= 1"),
    ("train.plateau_factor", 1.0, "a number in (0, 1)"),
    ("codec.device", "gpu", "'auto', 'cpu', 'cuda' or 'cuda:N'"),
    ("disc.bands", ((0.5, 0.25),), "a non-empty list of (low, high) fractions"),
])
def test_out_of_range_names_field_value_and_range(path, value, expected):
  config = neurocodec.get_config("demo")
  _set(config, path, value)
  message = _error(config)
  assert message.startswith(f"{path}={value!r} is invalid: expected {expected}"), message


@pytest.mark.parametrize("path, value", [
    ("train.max_steps", -1), ("train.eval_every", -1), ("codec.device", "cuda:1"),
    ("codec.device", "cpu"), ("data.eeg_units", "millivolts"), ("model.dropout", 0.0),
    ("disc.rates", ()), ("codec.weights", "/some/weights.pth")])
def test_edge_values_accepted(path, value):
  config = neurocodec.get_config("demo")
  _set(config, path, value)
  check.validate(config)


def test_every_problem_in_one_message():
  config = neurocodec.get_config("demo")
  config.batch_size, config.train.schedule = 0, "cosin"
  message = _error(config)
  assert "batch_size=0 is invalid" in message
  assert "train.schedule='cosin' is invalid" in message and "'cosine'?" in message


@pytest.mark.parametrize("path, value, expected", [
    ("hidden_dim", 63, "hidden_dim=63 is invalid: expected a multiple of model.num_heads=4"),
    ("codec.n_quantizers_eval", 9, "codec.n_quantizers_eval=9 is invalid: expected an "
                                   "integer in [1, codec.arch.n_codebooks=8]"),
    ("model.dt_max", 1e-4, "model.dt_max=0.0001 is invalid: expected >= model.dt_min=0.001"),
    ("mel.window_lengths", (32, 64), "mel.window_lengths has 2 entries: expected one per "
                                     "mel.n_mels (7)"),
])
def test_fields_that_constrain_each_other(path, value, expected):
  config = neurocodec.get_config("demo")
  _set(config, path, value)
  assert _error(config) == expected


def test_cue_curriculum_needs_the_selector():
  config = neurocodec.get_config("cocktail")           # the original: no selector
  config.train.cue_curriculum_steps = 100
  assert _error(config) == ("train.cue_curriculum_steps=100 needs model.selector="
                            "'correlation' (the cue it anneals is the selector's), got 'none'")
  config.model.selector = "correlation"
  check.validate(config)


@pytest.mark.parametrize("name", ["lambda_sep", "lambda_sep_env", "lambda_select",
                                  "lambda_token"])
def test_selector_terms_need_the_selector(name):
  config = neurocodec.get_config("cocktail")
  config[name] = 1.0
  assert _error(config).split("; ")[0] == (f"{name}=1.0 needs model.selector='correlation' (a term of the "
                            "selector's streams), got 'none'")


def test_envelope_contrast_needs_a_positive_temperature_and_the_other_talker():
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("cocktail")
  config.lambda_env_contrast, config.env_contrast_temperature = 1.0, 0.0
  assert _error(config) == "env_contrast_temperature=0.0 is invalid: expected a finite number > 0"
  config.env_contrast_temperature = 0.1
  check.validate(config)
  assert {"clean", "unattended"} <= set(steps.batch_fields(config))


def test_token_streams_need_their_term_and_their_own_codes():
  config = neurocodec.get_config("demo")
  config.model.stream_form = "tokens"
  assert "model.stream_form='tokens' and lambda_token=0.0" in _error(config)
  config.lambda_token = 1.0
  assert "needs codec.requantize_output=False" in _error(config)
  config.codec.requantize_output = False
  config.model.mixture_consistency = False
  check.validate(config)
  config.model.stream_form = "direct"                  # the term without its streams
  assert "model.stream_form='direct' and lambda_token=1.0" in _error(config)


def test_refined_output_and_back_off_need_their_inputs(tmp_path):
  config = neurocodec.get_config("demo")            # a selector with the masked output
  config.model.output_waveform = "refined_mask"
  assert "needs model.refiner, a trained refiner's file" in _error(config)
  path = tmp_path / "refiner.msgpack"
  path.write_bytes(b"")
  config.model.refiner = str(path)
  check.validate(config)
  config.model.unsure_margin = 0.3
  check.validate(config)
  config.model.output_waveform = "decoded"
  assert "model.unsure_margin=0.3 backs a masked output off" in _error(config)
  config.model.unsure_margin = -1.0
  assert "model.unsure_margin" in _error(config)


def test_unknown_and_missing_keys_of_an_unlocked_config():
  # A config rebuilt from a dict is not locked: validate compares the key sets.
  config = ml_collections.ConfigDict(neurocodec.get_config("demo").to_dict())
  config.model.dropuot = 0.1
  del config.train["nonfinite"]
  message = _error(config)
  assert "unknown key 'model.dropuot' (did you mean 'model.dropout'?)" in message
  assert "missing key 'train.nonfinite'" in message


@pytest.mark.parametrize("path, expected", [
    ("model.dropuot", "unknown key 'model.dropuot' (did you mean 'model.dropout'?)"),
    ("modle.dropout", "unknown key 'modle.dropout' (did you mean 'model.dropout'?)"),
    ("hiden_dim", "unknown key 'hiden_dim' (did you mean 'hidden_dim'?)"),
    ("batch_size.x", "unknown key 'batch_size.x': 'batch_size' is a value, not a group"),
])
def test_check_key_suggests_close_names(path, expected):
  with pytest.raises(check.ConfigError) as e:
    check.check_key(neurocodec.get_config("demo"), path)
  assert str(e.value) == expected


def test_check_key_without_close_name_lists_the_group():
  with pytest.raises(check.ConfigError, match=r"unknown key 'model.zzz'; valid keys of "
                                              r"model: bidirectional, cheb_k, cue_form, "
                                              r"d_conv, .*transformer_ff_dim"):
    check.check_key(neurocodec.get_config("demo"), "model.zzz")


def test_validate_or_exit_is_one_line():
  config = neurocodec.get_config("demo")
  config.batch_size = 0
  with pytest.raises(SystemExit) as e:
    check.validate_or_exit(config)
  assert e.value.code == "Config error: batch_size=0 is invalid: expected an integer >= 1"


def _flags(argv, define=check.define_config_flag):
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  define("config", CONFIG_FILE, "config", flag_values=fv, sys_argv=argv)
  return fv


def test_unknown_override_at_flag_parsing_is_one_line():
  """train.py's parsing of ``--config ...:demo --config.model.dropuot=0.1``."""
  argv = ["prog", f"--config={CONFIG_FILE}:demo", "--config.model.dropuot=0.1"]
  fv = _flags(argv)
  with pytest.raises(SystemExit) as e:
    check.parse_flags(argv, fv)
  assert e.value.code == ("Config error: unknown key 'model.dropuot' in "
                          "--config.model.dropuot=0.1 (did you mean 'model.dropout'?)")
  argv = ["prog", f"--config={CONFIG_FILE}:demo", "--config.model.dropout=0.1"]
  fv = _flags(argv)
  check.parse_flags(argv, fv)
  assert fv.config.model.dropout == 0.1


def test_unknown_override_without_config_flag_is_one_line():
  # Without --config, ml_collections applies the overrides to the default when the
  # flag is defined (train.py's import), not when the flags are parsed.
  argv = ["prog", "--config.modle.dropout=0.1"]
  with pytest.raises(SystemExit) as e:
    _flags(argv)
  assert e.value.code == ("Config error: unknown key 'modle.dropout' in "
                          "--config.modle.dropout=0.1 (did you mean 'model.dropout'?)")


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_cli_unknown_key_fails_fast(script, tmp_path):
  """The path users hit: one line on stderr, before JAX (or any data/codec work) loads."""
  argv = [sys.executable, "-X", "importtime", os.path.join(ROOT, script),
          f"--config={CONFIG_FILE}:demo", "--config.model.dropuot=0.1",
          "--workdir", str(tmp_path), "--checkpoint", str(tmp_path)]
  start = time.monotonic()
  proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60,
                        check=False)
  elapsed = time.monotonic() - start
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1 and lines[-1] == (
      "Config error: unknown key 'model.dropuot' in --config.model.dropuot=0.1 "
      "(did you mean 'model.dropout'?)"), proc.stderr[-2000:]
  imported = {l.rsplit("|", 1)[-1].strip() for l in lines if l.startswith("import time:")}
  assert not imported & {"jax", "torch", "h5py"}, imported & {"jax", "torch", "h5py"}
  assert elapsed < 10, elapsed    # ~0.3 s idle; importing JAX alone is seconds


def test_cli_output_waveform_reaches_the_config(tmp_path):
  """evaluate.py --output_waveform sets model.output_waveform, which the config's checks
  then see (the masked output needs a selector model)."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                         f"--config={CONFIG_FILE}:demo", "--config.model.selector=none",
                         "--checkpoint", str(tmp_path), "--output_waveform", "mixture_mask"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert "model.output_waveform='mixture_mask' needs model.selector='correlation'" in (
      proc.stderr.strip().splitlines()[-1])


def test_cli_missing_run_is_one_line(tmp_path):
  """evaluate.py on a folder without a run: one line naming the file, no traceback."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                         "--workdir", str(tmp_path)], cwd=ROOT, capture_output=True,
                        text=True, timeout=300, check=False)
  lines = [l for l in proc.stderr.strip().splitlines() if not l.startswith(("W", "I0"))]
  assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert lines[-1].startswith("error: ") and "config.json not found" in lines[-1], lines
