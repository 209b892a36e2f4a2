"""The output waveform's ratio mask (neurocodec_jax.mixture_mask) on cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal as sps

from neurocodec_jax import mixture_mask


def _reference(mixture, target, other, power, n_fft=512, hop=128):
  """scipy's STFT pair, written independently of the JAX one."""
  stft = lambda x: sps.stft(x, nperseg=n_fft, noverlap=n_fft - hop, window="hann")[2]
  a, b = np.abs(stft(target)) ** power, np.abs(stft(other)) ** power
  _, y = sps.istft(a / np.maximum(a + b, 1e-12) * stft(mixture), nperseg=n_fft,
                   noverlap=n_fft - hop, window="hann")
  return y[:len(mixture)]


@pytest.mark.parametrize("power", [0.5, 1.0, 2.0])
def test_ratio_mask_matches_scipys_stft_mask(power):
  rng = np.random.default_rng(0)
  mixture, target, other = rng.standard_normal((3, 16000)).astype(np.float32)
  got = mixture_mask.ratio_mask(jnp.asarray(mixture), jnp.asarray(target), jnp.asarray(other),
                                power)
  # float32 against scipy: measured at most 6.0e-7 absolute (1.6e-7 relative, norm-wise).
  np.testing.assert_allclose(got, _reference(mixture, target, other, power), atol=3e-6)


def test_ratio_mask_separates_talkers_in_disjoint_bands_and_passes_a_lone_one():
  t = np.arange(16000) / 16000
  low, high = np.sin(2 * np.pi * 300 * t), 0.7 * np.sin(2 * np.pi * 3000 * t)
  mixture = jnp.asarray(low + high, jnp.float32)[None]       # [batch, T]
  out = np.asarray(mixture_mask.ratio_mask(mixture, jnp.asarray(low)[None],
                                           jnp.asarray(high)[None], 1.0))[0]
  inner = slice(1000, -1000)      # the STFT's zero-padded boundaries excepted
  err = np.linalg.norm((out - low)[inner]) / np.linalg.norm(low[inner])
  assert err < 1e-2, err          # the 300 Hz talker alone (3000 Hz leaks < 1%)
  # A target with no competitor keeps the whole mixture (the STFT pair is an identity).
  alone = mixture_mask.ratio_mask(mixture, mixture, jnp.zeros_like(mixture), 0.5)
  np.testing.assert_allclose(np.asarray(alone)[0][inner], np.asarray(mixture)[0][inner],
                             atol=1e-5)


def test_ratio_mask_is_differentiable_in_both_estimates():
  rng = np.random.default_rng(1)
  mixture, target, other = (jnp.asarray(x) for x in rng.standard_normal((3, 2, 4000)))
  loss = lambda a, b: jnp.sum(mixture_mask.ratio_mask(mixture, a, b, 0.5) * mixture)
  ga, gb = jax.grad(loss, argnums=(0, 1))(target, other)
  assert np.isfinite(ga).all() and np.isfinite(gb).all()
  assert np.abs(ga).max() > 0 and np.abs(gb).max() > 0
  # A silent competitor (all-zero bins) keeps the gradients finite.
  ga, gb = jax.grad(loss, argnums=(0, 1))(target, jnp.zeros_like(other))
  assert np.isfinite(ga).all() and np.isfinite(gb).all()


def test_mask_floor_mixes_the_mixture_back_in():
  """The floor f gives f x the mixture + (1 - f) x the plain masked mixture (the STFT
  is linear); f = 1 is the mixture itself, and the output reaches output_waveform."""
  rng = np.random.default_rng(3)
  mixture, target, other = (jnp.asarray(rng.standard_normal((2, 4000)), jnp.float32)
                            for _ in range(3))
  plain = mixture_mask.ratio_mask(mixture, target, other, 0.5)
  floored = mixture_mask.ratio_mask(mixture, target, other, 0.5, 0.2)
  np.testing.assert_allclose(floored, 0.2 * mixture + 0.8 * plain, atol=1e-5)
  np.testing.assert_allclose(mixture_mask.ratio_mask(mixture, target, other, 0.5, 1.0),
                             mixture, atol=1e-5)
  assert np.abs(np.asarray(floored - plain)).max() > 1e-2
  np.testing.assert_array_equal(
      mixture_mask.output_waveform("mixture_mask", 0.5, 0.2, target, other, mixture), floored)


def test_output_waveform_checks_its_inputs():
  x = jnp.zeros((1, 1000))
  assert mixture_mask.output_waveform("decoded", 0.5, 0.0, x, None, None) is x
  with pytest.raises(ValueError, match="needs the competing stream"):
    mixture_mask.output_waveform("mixture_mask", 0.5, 0.0, x, None, x)
  with pytest.raises(ValueError, match="must be one of"):
    mixture_mask.output_waveform("wiener", 0.5, 0.0, x, x, x)


def test_back_off_blends_in_the_mixture_only_where_the_selector_is_unsure():
  rng = np.random.default_rng(4)
  output, mixture = (jnp.asarray(rng.standard_normal((3, 1, 100)), jnp.float32) for _ in range(2))
  margin = jnp.asarray([0.1, 0.5, 0.3])
  got = np.asarray(mixture_mask.back_off(output, mixture, margin, 0.3, 0.25))
  np.testing.assert_allclose(got[0], 0.25 * mixture[0] + 0.75 * output[0], atol=1e-6)
  np.testing.assert_array_equal(got[1:], np.asarray(output)[1:])   # 0.3 is not below 0.3
  np.testing.assert_array_equal(mixture_mask.back_off(output, mixture, margin, 0.0, 0.5), output)
  logits = jnp.asarray([[[1.0, 3.0], [2.0, 1.0]]])                  # [1, frames, 2]
  np.testing.assert_allclose(mixture_mask.selector_margin(logits), [1.5])
