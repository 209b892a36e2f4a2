"""scripts/attention_maps.py: the recorded weights are the model's, the lags its clocks."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurocodec_jax.models.generator import NeuroCodec
from tests.conftest import tiny_config

_spec = importlib.util.spec_from_file_location(
    "attention_maps", os.path.join(os.path.dirname(__file__), "..", "scripts", "attention_maps.py"))
attention_maps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(attention_maps)


@pytest.mark.parametrize("backbone", ["mamba", "transformer"])
def test_records_one_cross_attention_map_per_layer(backbone, tmp_path):
  config = tiny_config(str(tmp_path), backbone=backbone, num_layers=2)
  model = NeuroCodec.from_config(config)
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.standard_normal((2, config.codec.arch.latent_dim, 30)), jnp.float32)
  eeg = jnp.asarray(rng.standard_normal((2, config.eeg_channels, 64)), jnp.float32)
  variables = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                         z, eeg, train=False)
  layers = attention_maps.attention_weights(model, variables, z, eeg)
  assert len(layers) == 2                       # the EEG cross-attention only
  for w in layers:
    assert w.shape[:3] == (2, config.model.num_heads, 30)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)   # softmax rows


def test_lags_and_uniform_summary():
  # 10 frames of 20 ms, EEG at 100 Hz, features spanning samples j-1..j+1 (centre j).
  lags = attention_maps.lag_seconds(10, 40, 0.02, 100.0, (-1, 1))
  assert lags[0, 0] == pytest.approx(-0.02) and lags[9, 29] == pytest.approx(0.29 - 0.2)
  uniform = np.full((1, 1, 10, 40), 1 / 40)
  s = attention_maps.summarize(uniform, lags)
  assert s["mean_lag_s"] == pytest.approx(s["uniform_mean_lag_s"])
  assert s["relative_entropy"] == pytest.approx(1.0)
  # All mass on the feature 100 ms after each frame: in the response window, lag 0.1 s.
  peaked = np.zeros((1, 1, 10, 40))
  for i in range(10):
    peaked[0, 0, i, int(round(((i + 1) * 0.02 + 0.1) * 100))] = 1.0
  s = attention_maps.summarize(peaked, lags)
  assert s["mean_lag_s"] == pytest.approx(0.1) and s["mass_in_response_window"] == 1.0
