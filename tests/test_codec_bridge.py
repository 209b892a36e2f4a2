"""The codec bridge vs DAC itself (small random DAC): quantizer, decode, VJP, loading."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import codec_bridge
from codec_bridge import loading
from configs.neurocodec import DEMO_CODEC
from neurocodec_jax import codec


@pytest.fixture(scope="module")
def dac_model():
  return codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu")


@pytest.fixture(scope="module")
def qparams(dac_model):
  return codec_bridge.quantizer_params(dac_model)


def test_codes_to_z_equals_dac_from_codes(dac_model, qparams):
  audio = torch.from_numpy(np.random.default_rng(0).uniform(-.5, .5, (2, 1, 9600)).astype(np.float32))
  with torch.no_grad():
    z, codes, *_ = dac_model.encode(dac_model.preprocess(audio, 16000))
    z_ref, _, _ = dac_model.quantizer.from_codes(codes)
  ours = codec.codes_to_z(qparams, jnp.asarray(codes.numpy()))
  np.testing.assert_allclose(ours, z_ref.numpy(), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ours, z.numpy(), rtol=1e-5, atol=1e-5)   # z is from_codes(codes)
  print(f"codes_to_z max err {np.abs(np.asarray(ours) - z_ref.numpy()).max():.1e}")


@pytest.mark.parametrize("n_quantizers", [1, 2, 4])
def test_requantize_equals_dac_quantizer(dac_model, qparams, n_quantizers):
  audio = torch.from_numpy(np.random.default_rng(1).uniform(-.5, .5, (2, 1, 9600)).astype(np.float32))
  with torch.no_grad():
    z_enc = dac_model.encoder(dac_model.preprocess(audio, 16000))
    z_noisy = z_enc + 0.3 * torch.randn_like(z_enc)      # a "prediction" off the codebooks
    ref, ref_codes, *_ = dac_model.quantizer(z_noisy, n_quantizers=n_quantizers)
  ours, ours_codes = codec.requantize(qparams, jnp.asarray(z_noisy.numpy()), n_quantizers,
                                      return_codes=True)
  np.testing.assert_array_equal(ours_codes, ref_codes.numpy())
  np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-5, atol=1e-5)


def test_decode_equals_torch_decoder_and_vjp_equals_autograd(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  rng = np.random.default_rng(2)
  z = rng.standard_normal((3, 64, 17)).astype(np.float32)
  wave, vjp = jax.vjp(decode, jnp.asarray(z))
  assert wave.shape == (3, 1, 17 * 320)
  zt = torch.from_numpy(z).requires_grad_()
  ref = dac_model.decoder(zt)
  n = ref.shape[-1]                          # 17 * 320 - 8 (odd stride 5), tail zero-padded
  np.testing.assert_allclose(wave[..., :n], ref.detach().numpy(), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(wave[..., n:], 0.0)
  g = rng.standard_normal(wave.shape).astype(np.float32)
  (gz,) = vjp(jnp.asarray(g))
  ref.backward(torch.from_numpy(g[..., :n]))
  np.testing.assert_allclose(gz, zt.grad.numpy(), rtol=1e-5, atol=1e-6)
  assert len(decode.cache) == 0              # the backward consumed the kept graph


def test_decode_finite_differences(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  z = np.random.default_rng(3).standard_normal((1, 64, 6)).astype(np.float64)
  loss = lambda z: float(jnp.sum(decode(jnp.asarray(z, jnp.float32)) ** 2))
  grad = np.asarray(jax.grad(lambda z: jnp.sum(decode(z) ** 2))(jnp.asarray(z, jnp.float32)))
  eps = 1e-2
  for idx in [(0, 0, 0), (0, 10, 3), (0, 63, 5)]:
    zp, zm = z.copy(), z.copy()
    zp[idx] += eps
    zm[idx] -= eps
    fd = (loss(zp) - loss(zm)) / (2 * eps)
    np.testing.assert_allclose(grad[idx], fd, rtol=2e-2, atol=2e-3)


def test_decode_under_jit_and_grad_of_scalar_loss(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  z = jnp.asarray(np.random.default_rng(4).standard_normal((2, 64, 5)), jnp.float32)
  f = jax.jit(jax.value_and_grad(lambda z: jnp.mean(decode(z) ** 2)))
  value, grad = f(z)
  value2, grad2 = f(z)
  np.testing.assert_array_equal(grad, grad2)
  assert np.isfinite(value) and grad.shape == z.shape and np.abs(grad).max() > 0
  assert len(decode.cache) == 0


def test_forward_without_backward_does_not_leak(dac_model):
  decode = codec_bridge.make_decoder(dac_model, max_graphs=2)
  z = jnp.ones((1, 64, 3))
  for _ in range(5):
    jax.vjp(decode, z)                      # forward kept, backward never called
  assert len(decode.cache) == 2


def test_decode_shape_errors(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  with pytest.raises(ValueError, match=r"z of shape \[batch, 64, frames\]"):
    decode(jnp.ones((1, 32, 4)))
  with pytest.raises(ValueError, match="float32"):
    decode(jnp.ones((1, 64, 4), jnp.float16))


def test_missing_weights_offline_gives_helpful_error(tmp_path, monkeypatch):
  monkeypatch.setattr(loading, "DAC_CACHE", str(tmp_path / "cache"))
  with pytest.raises(codec_bridge.WeightsNotFound, match=r"python -m dac download "
                     r"--model_type 44khz.*codec\.weights"):
    codec_bridge.load_dac("44khz")
  with pytest.raises(codec_bridge.WeightsNotFound, match="does not exist"):
    codec_bridge.load_dac("16khz", weights=str(tmp_path / "nope.pth"))


def test_loads_weights_file_and_cache(tmp_path, monkeypatch, dac_model):
  # A DAC-format file (state_dict + metadata kwargs), as the release files are.
  kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in DEMO_CODEC.items()}
  path = tmp_path / "cache" / "weights_16khz_8kbps_0.0.5.pth"
  path.parent.mkdir()
  torch.save({"state_dict": dac_model.state_dict(), "metadata": {"kwargs": kwargs}}, path)
  monkeypatch.setattr(loading, "DAC_CACHE", str(path.parent))
  loaded = codec_bridge.load_dac("16khz", device="cpu")       # found in the cache
  assert loaded.neurocodec_identity["random"] is False
  assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
  assert (codec_bridge.codec_identity(loaded)["weights_sha256"]
          == codec_bridge.codec_identity(dac_model)["weights_sha256"])


def test_random_mode_is_logged_loudly_and_reproducible(caplog):
  with caplog.at_level(logging.WARNING):
    a = codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu")
  assert "RANDOM-WEIGHT DAC" in caplog.text
  b = codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu")
  assert codec_bridge.codec_identity(a) == codec_bridge.codec_identity(b)


def test_real_config_never_falls_back_to_random(tmp_path, monkeypatch):
  from configs import neurocodec
  monkeypatch.setattr(loading, "DAC_CACHE", str(tmp_path))
  with pytest.raises(codec_bridge.WeightsNotFound):
    codec_bridge.load_dac_from_config(neurocodec.get_config("cocktail").codec)
