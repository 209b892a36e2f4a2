"""The in-model linear encoding model (neurocodec_jax/models/encoding.py) on known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurocodec_jax import linear_decoder
from neurocodec_jax.models import cue, encoding

RATE, FRAME_SECONDS, T, C = 128, 0.02, 256, 8
FRAMES = int(T / RATE / FRAME_SECONDS)


def _ar1(rng, shape, a):
  e = rng.standard_normal(shape)
  x = np.zeros_like(e)
  x[..., 0] = e[..., 0]
  for t in range(1, shape[-1]):
    x[..., t] = a * x[..., t - 1] + e[..., t]
  return x


def _trials(rng, n, snr=0.5, latency=0.1, map_seed=42):
  """Planted rank-one EEG ``[n, C, T]`` answering both talkers' envelopes ``[n, T, 2]``
  (the attended through a bump at ``latency`` (100 ms), the ignored one at a third of
  it, 50 ms later) in spatially mixed, steep (AR(1) 0.95) noise; ``map_seed`` draws the
  spatial map (a subject's)."""
  env = np.abs(_ar1(rng, (n, 2, T), 0.95)).transpose(0, 2, 1)                # [n, T, 2]
  lags = np.arange(encoding.EncodingModel(FRAME_SECONDS, RATE).eeg_taps()) / RATE
  bump = lambda at: np.exp(-0.5 * ((lags - at) / 0.03) ** 2)
  att, ign = bump(latency), bump(latency + 0.05) / 3
  fir = lambda e, h: np.stack([np.convolve(x, h)[:T] for x in e])
  z = lambda x: (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
  response = fir(z(env[..., 0]), att) + fir(z(env[..., 1]), ign)               # [n, T]
  spatial_map = np.random.default_rng(map_seed).standard_normal(C)
  mixing = np.random.default_rng(43).standard_normal((C, C))
  noise = np.einsum("cd,ndt->nct", mixing, _ar1(rng, (n, C, T), 0.95))
  eeg = snr * spatial_map[:, None] * z(response)[:, None] + noise / noise.std()
  return (jnp.asarray(eeg, jnp.float32), jnp.asarray(env, jnp.float32),
          np.concatenate([att, ign]))


def _train(model, batches):
  """Statistics after a training call on each of ``batches`` (``(eeg, env)`` or ``(eeg,
  env, subject)``), and each call's source."""
  variables = model.init(jax.random.PRNGKey(0), batches[0][0], None, FRAMES, train=False)
  step = jax.jit(lambda v, eeg, env, subject: model.apply(
      v, eeg, env, FRAMES, train=True, mutable=["batch_stats"], subject=subject))
  sources = []
  for eeg, env, *subject in batches:
    (source, _), upd = step(variables, eeg, env, subject[0] if subject else None)
    variables = dict(variables, batch_stats=upd["batch_stats"])
    sources.append(source)
  return variables, sources


def test_running_statistics_are_the_pooled_ones_and_a_batch_never_sees_its_own():
  rng = np.random.default_rng(0)
  eeg, env, _ = _trials(rng, 12)
  model = encoding.EncodingModel(FRAME_SECONDS, RATE)
  v3, sources = _train(model, [(eeg[i:i + 4], env[i:i + 4]) for i in (0, 4, 8)])
  v1, _ = _train(model, [(eeg, env)])
  assert float(v3["batch_stats"]["count"]) == 3.0
  for k in ("xtx", "xty", "lag_cov"):
    np.testing.assert_allclose(v3["batch_stats"][k], v1["batch_stats"][k], rtol=2e-5,
                               atol=1e-6)
  np.testing.assert_array_equal(sources[0], 0.0)                  # no statistics yet
  fresh = model.init(jax.random.PRNGKey(0), eeg, None, FRAMES, train=False)
  _, out = model.apply(fresh, eeg, None, FRAMES, train=False)
  np.testing.assert_array_equal(out["whitener"], [1.0, 0.0, 0.0, 0.0, 0.0])
  assert np.isfinite(np.asarray(out["response"])).all()
  # The second call's source is what the first batch's statistics give.
  v_first, _ = _train(model, [(eeg[:4], env[:4])])
  expect, _ = model.apply(v_first, eeg[4:8], None, FRAMES, train=False)
  np.testing.assert_allclose(sources[1], expect, rtol=1e-5, atol=1e-6)
  # Evaluation leaves the statistics as they are and needs no labels.
  _, upd = model.apply(v3, eeg, None, FRAMES, train=False, mutable=["batch_stats"])
  np.testing.assert_array_equal(upd["batch_stats"]["xty"], v3["batch_stats"]["xty"])
  with pytest.raises(ValueError, match=r"both talkers' envelopes \[4, 256, 2\]"):
    model.apply(v3, eeg[:4], None, FRAMES, train=True, mutable=["batch_stats"])


def test_fit_is_the_linear_forward_decoders_and_recovers_the_planted_response():
  """The in-model fit's responses are ``linear_decoder.ForwardDecoder``'s at the same
  ridge (the same regression, float32 beside float64), and both are the planted ones."""
  rng = np.random.default_rng(1)
  eeg, env, planted = _trials(rng, 64)
  model = encoding.EncodingModel(FRAME_SECONDS, RATE)
  v, _ = _train(model, [(eeg[i:i + 16], env[i:i + 16]) for i in range(0, 64, 16)])
  s = v["batch_stats"]
  _, response = encoding.fit(s["xtx"], s["xty"], s["lag_cov"][0])
  ref = linear_decoder.ForwardDecoder(RATE, max_lag_seconds=cue.RESPONSE_SECONDS).fit(
      np.asarray(eeg), np.asarray(env[..., 0]), np.asarray(env[..., 1]),
      ridges=(encoding.RIDGE,)).weights[encoding.RIDGE]
  theirs = np.concatenate([ref["attended"], ref["unattended"]])
  sign = np.sign(np.dot(response, theirs))
  np.testing.assert_allclose(sign * np.asarray(response), theirs, rtol=1e-3,
                             atol=1e-3 * np.abs(theirs).max())
  assert abs(np.corrcoef(response, planted)[0, 1]) > 0.95


def test_the_encoding_cue_identifies_the_attended_talker_where_raw_correlation_fails():
  """Trained on 128 planted trials, the whitened source against the responses predicted
  under each talker attended (``cue.compared``, as the selector compares them) picks the
  attended talker on new trials; the unwhitened source against the envelopes does not."""
  rng = np.random.default_rng(2)
  eeg, env, _ = _trials(rng, 192, snr=0.3)
  model = encoding.EncodingModel(FRAME_SECONDS, RATE)
  v, _ = _train(model, [(eeg[i:i + 16], env[i:i + 16]) for i in range(0, 128, 16)])
  source, out = model.apply(v, eeg[128:], None, FRAMES, train=False)
  interp = jnp.asarray(cue.frame_interpolation(FRAMES, T, FRAME_SECONDS, RATE))
  frames = jnp.einsum("btk,ft->bfk", env[128:], interp)                        # [64, F, 2]
  white = jnp.broadcast_to(out["whitener"], (64, out["whitener"].shape[0]))
  hyp = cue.compared(frames, "encoding", out["response"], white)
  src = cue.source(source, "encoding", white)
  r = lambda a, b: np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])
  ident = np.mean(r(src, hyp[..., 0]) > r(src, hyp[..., 1]))
  raw = np.mean(r(source, frames[..., 0]) > r(source, frames[..., 1]))
  assert ident > 0.9, ident
  assert raw < ident - 0.15, (raw, ident)
  # The fit was on z-scored envelopes: a talker's level does not change the prediction.
  louder = frames * jnp.array([4.0, 0.5])
  np.testing.assert_allclose(cue.compared(louder, "encoding", out["response"], white), hyp,
                             rtol=1e-4, atol=1e-5)


def test_yule_walker_of_an_acf_and_resampled_response_known_answers():
  rho = 0.8
  w = cue.yule_walker(jnp.asarray(rho ** np.arange(4), jnp.float32))
  # The 1e-3 diagonal loading that keeps the solve regular biases a_1 by 2.2e-3.
  np.testing.assert_allclose(w, [1.0, -rho, 0.0, 0.0], atol=4e-3)
  h = jnp.arange(52, dtype=jnp.float32)[None].repeat(2, 0) * jnp.array([[1.0], [2.0]])
  got = encoding.resample_response(h, RATE, FRAME_SECONDS, 21)
  # Frame lag 20 is 51.2 EEG samples, past the last tap (51): the last tap's value.
  lags = np.minimum(np.arange(21) * 2.56, 51.0)
  np.testing.assert_allclose(got, lags * np.array([[1.0], [2.0]]), rtol=1e-5)


def _two_subjects(rng, n, snr=0.3):
  """``n`` trials of each of two subjects with their own spatial maps and latencies,
  interleaved: ``(eeg, env, subject [2 n])``."""
  a, b = _trials(rng, n, snr, 0.08, 42), _trials(rng, n, snr, 0.2, 7)
  order = np.argsort(np.r_[np.arange(n), np.arange(n)], kind="stable")
  subject = np.r_[np.zeros(n, np.int32), np.ones(n, np.int32)][order]
  return (jnp.concatenate([a[0], b[0]])[order], jnp.concatenate([a[1], b[1]])[order],
          jnp.asarray(subject))


def test_per_subject_statistics_are_each_subjects_own_and_unseen_subjects_get_the_pooled_fit():
  rng = np.random.default_rng(3)
  eeg, env, subject = _two_subjects(rng, 24)
  # Subjects 1 and 2 in uneven shares per batch, four trials of unknown (-1) or
  # out-of-range (7) subjects that only the pooled statistics may take; 0 never seen.
  ids = np.asarray(subject) + 1
  ids[[5, 17]], ids[[30, 41]] = -1, 7
  order = rng.permutation(48)
  eeg, env, ids = eeg[order], env[order], jnp.asarray(ids[order])
  batches = [(eeg[i:i + 8], env[i:i + 8], ids[i:i + 8]) for i in range(0, 48, 8)]
  model = encoding.EncodingModel(FRAME_SECONDS, RATE, subjects=3)
  v, sources = _train(model, batches)
  stats = v["batch_stats"]
  # The second call's source is what the first batch's statistics give (never its own).
  v_first, _ = _train(model, batches[:1])
  expect, _ = model.apply(v_first, batches[1][0], None, FRAMES, train=False,
                          subject=batches[1][2])
  np.testing.assert_allclose(sources[1], expect, rtol=1e-5, atol=1e-6)
  pooled_model = encoding.EncodingModel(FRAME_SECONDS, RATE)
  pooled, _ = _train(pooled_model, [b[:2] for b in batches])
  alone = {s: _train(pooled_model, [(eeg[ids == s], env[ids == s])])[0]["batch_stats"]
           for s in (1, 2)}
  np.testing.assert_array_equal(stats["subject_count"],
                                [0.0, float((ids == 1).sum()), float((ids == 2).sum())])
  for k in encoding.STATISTICS:
    np.testing.assert_allclose(stats[k], pooled["batch_stats"][k], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(stats[f"subject_{k}"][0], 0.0)
    for s in (1, 2):
      np.testing.assert_allclose(stats[f"subject_{k}"][s], alone[s][k], rtol=2e-5, atol=1e-6)
  # A subject never trained on (0), unknown (-1), out of range (7) or no ids: the pooled fit.
  new, _ = _trials(rng, 4)[:2]
  want = pooled_model.apply(pooled, new, None, FRAMES, train=False)
  for unseen in (jnp.array([0, -1, 7, 0]), None):
    got = model.apply(v, new, None, FRAMES, train=False, subject=unseen)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    for key in ("response", "whitener"):
      np.testing.assert_allclose(got[1][key], jnp.broadcast_to(want[1][key], got[1][key].shape),
                                 rtol=1e-4, atol=1e-6)
  # A known subject's fit: its statistics shrunk toward the pooled ones by PRIOR_TRIALS.
  n = float((ids == 2).sum())
  w = n / (n + encoding.PRIOR_TRIALS)
  shrunk = {k: w * stats[f"subject_{k}"][2] + (1 - w) * stats[k] for k in encoding.STATISTICS}
  want = pooled_model.apply({"batch_stats": dict(shrunk, count=stats["count"])}, new, None,
                            FRAMES, train=False)
  got = model.apply(v, new, None, FRAMES, train=False, subject=jnp.full(4, 2))
  np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
  for key in ("response", "whitener"):
    assert got[1][key].shape == (4,) + want[1][key].shape
    np.testing.assert_allclose(got[1][key], jnp.broadcast_to(want[1][key], got[1][key].shape),
                               rtol=1e-4, atol=1e-6)
  # Before any training batch: no source, an identity whitener for every trial.
  fresh = model.init(jax.random.PRNGKey(0), new, None, FRAMES, train=False)
  source, out = model.apply(fresh, new, None, FRAMES, train=False, subject=jnp.full(4, 2))
  np.testing.assert_array_equal(source, 0.0)
  np.testing.assert_array_equal(out["whitener"], np.tile([1.0, 0.0, 0.0, 0.0, 0.0], (4, 1)))


def test_per_subject_fits_identify_subjects_a_pooled_fit_blurs():
  """Two subjects with different spatial maps and response latencies: each trial
  decoded with its subject's fit identifies the attended talker more often than with
  the pooled fit of both."""
  rng = np.random.default_rng(4)
  eeg, env, subject = _two_subjects(rng, 160, snr=0.2)
  train = [(eeg[i:i + 16], env[i:i + 16], subject[i:i + 16]) for i in range(0, 256, 16)]
  model = encoding.EncodingModel(FRAME_SECONDS, RATE, subjects=2)
  v, _ = _train(model, train)
  interp = jnp.asarray(cue.frame_interpolation(FRAMES, T, FRAME_SECONDS, RATE))
  frames = jnp.einsum("btk,ft->bfk", env[256:], interp)

  def identified(ids):
    source, out = model.apply(v, eeg[256:], None, FRAMES, train=False, subject=ids)
    white = jnp.broadcast_to(out["whitener"], (64, cue.WHITEN_ORDER + 1))
    hyp = cue.compared(frames, "encoding", out["response"], white)
    src = cue.source(source, "encoding", white)
    r = lambda a, b: np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])
    return np.mean(r(src, hyp[..., 0]) > r(src, hyp[..., 1]))

  own, pooled = identified(subject[256:]), identified(None)
  assert own > 0.85 and own > pooled + 0.1, (own, pooled)
