"""Config presets: load, keep the original's keys, reject unknown keys."""

import pytest

from configs import neurocodec

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
  """`--config configs/neurocodec.py:demo --config.batch_size=4` as train.py parses it."""
  from absl import flags
  from ml_collections import config_flags
  argv = ["prog", "--config=configs/neurocodec.py:demo", "--config.batch_size=4",
          "--config.model.dropout=0.0"]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv, sys_argv=argv)
  fv(argv)
  assert fv.config.preset == "demo" and fv.config.batch_size == 4
  assert fv.config.model.dropout == 0.0
  argv = ["prog", "--config=configs/neurocodec.py:demo", "--config.batchsize=4"]
  fv2 = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=fv2, sys_argv=argv)
  with pytest.raises(Exception, match="batchsize"):
    fv2(argv)
