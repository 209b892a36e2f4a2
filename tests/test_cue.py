"""The selector's cue forms (neurocodec_jax/models/cue.py) on known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurocodec_jax.models import cue


def _ar1(rng, n, length, a):
  e = rng.standard_normal((n, length))
  x = np.zeros_like(e)
  for t in range(1, length):
    x[:, t] = a * x[:, t - 1] + e[:, t]
  return x


def test_causal_fir_delays_and_scales_and_takes_per_example_taps():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((3, 20, 2)))
  y = cue.causal_fir(x, jnp.array([0.0, 0.0, 2.0]))
  np.testing.assert_allclose(y[:, 2:], 2 * x[:, :-2], rtol=1e-6)
  np.testing.assert_array_equal(y[:, :2], 0.0)
  taps = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  y = cue.causal_fir(x[..., 0], taps)
  np.testing.assert_allclose(y[0], x[0, :, 0], rtol=1e-6)
  np.testing.assert_allclose(y[1, 1:], x[1, :-1, 0], rtol=1e-6)
  np.testing.assert_allclose(y[2, 1:], x[2, 1:, 0] + x[2, :-1, 0], rtol=1e-6)


def test_whitener_recovers_an_ar1_process_and_whitens_it():
  rng = np.random.default_rng(1)
  x = _ar1(rng, 4, 4000, 0.9)
  w = np.asarray(cue.whitener(jnp.asarray(x), 2))
  np.testing.assert_allclose(w[:, 0], 1.0)
  np.testing.assert_allclose(w[:, 1], -0.9, atol=0.04)
  np.testing.assert_allclose(w[:, 2], 0.0, atol=0.04)
  white = np.asarray(cue.causal_fir(jnp.asarray(x), jnp.asarray(w)))[:, 2:]
  lag1 = np.mean(white[:, 1:] * white[:, :-1]) / np.mean(white ** 2)
  assert abs(lag1) < 0.05
  # No gradient through the fit.
  g = jax.grad(lambda c: cue.whitener(c, 2).sum())(jnp.asarray(x))
  np.testing.assert_array_equal(g, 0.0)


def test_backward_form_compares_as_is():
  e = jnp.ones((2, 10, 2))
  assert cue.compared(e, "backward") is e
  with pytest.raises(ValueError, match="model.cue_form must be one of"):
    cue.compared(e, "sideways")


def test_forward_form_predicts_each_hypothesis_from_both_talkers():
  """Under "k attended": the attended response on talker k plus the unattended one on
  the other, centred, then whitened."""
  rng = np.random.default_rng(3)
  env = jnp.asarray(rng.standard_normal((2, 30, 2)))
  responses = jnp.asarray(rng.standard_normal((2, 5)))
  white = cue.whitener(jnp.asarray(rng.standard_normal((2, 30))), 2)
  got = cue.compared(env, "forward", responses, white)
  for k in (0, 1):
    p = cue.causal_fir(env[..., k], responses[0]) + cue.causal_fir(env[..., 1 - k], responses[1])
    want = cue.causal_fir(p - p.mean(1, keepdims=True), white)
    np.testing.assert_allclose(got[..., k], want, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="compares two envelopes"):
    cue.compared(env[..., 0], "forward", responses, white)


def test_forward_form_identifies_a_response_in_steep_noise_where_the_raw_one_fails():
  """A source = the attended talker's envelope through a response (lag 3) plus
  strongly correlated AR(1) noise: with the true response, the forward form (whitened)
  picks the attended talker far more often than the raw correlation of the source
  with the envelopes (the backward form's comparison)."""
  rng = np.random.default_rng(2)
  n, frames = 400, 100
  env = _ar1(rng, 2 * n, frames, 0.5).reshape(n, 2, frames).transpose(0, 2, 1)  # two talkers
  response = np.zeros((2, cue.response_taps(0.02)))
  response[0, 3] = 1.0
  signal = np.asarray(cue.causal_fir(jnp.asarray(env[..., 0]), jnp.asarray(response[0])))
  source = jnp.asarray(0.6 * signal + _ar1(rng, n, frames, 0.98))
  white = cue.whitener(source)
  def identification(s, compared):
    s = np.asarray(s)
    r = [np.array([np.corrcoef(s[i], np.asarray(compared)[i, :, k])[0, 1] for i in range(n)])
         for k in (0, 1)]
    return float(np.mean(r[0] > r[1]))
  forward = identification(cue.source(source, "forward", white),
                           cue.compared(jnp.asarray(env), "forward", jnp.asarray(response), white))
  backward = identification(cue.source(source, "backward"),
                            cue.compared(jnp.asarray(env), "backward"))
  assert forward > 0.9 and forward > backward + 0.15, (forward, backward)
