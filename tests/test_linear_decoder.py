"""The linear backward decoder on cases whose answer is known."""

import numpy as np
import pytest

from neurocodec_jax import linear_decoder

RATE = 64


def _trials(rng, n, channels=6, t=256, snr=1.0, delay=8):
  """EEG carrying the attended envelope ``delay`` samples late on random channels."""
  env_a = np.abs(rng.standard_normal((n, t + delay))).cumsum(-1)
  env_a = np.diff(env_a, axis=-1, prepend=0)                 # positive, wideband
  env_u = np.abs(rng.standard_normal((n, t + delay)))
  mix = rng.standard_normal(channels)
  response = env_a[:, :t]                                   # eeg[t + delay] ~ env[t]
  eeg = snr * mix[None, :, None] * np.pad(response, ((0, 0), (delay, 0)))[:, None, :t]
  eeg = eeg + rng.standard_normal((n, channels, t))
  return eeg, env_a[:, :t], env_u[:, :t]


def test_lagged_design_rows_hold_the_following_eeg():
  eeg = np.arange(2 * 3 * 10, dtype=float).reshape(2, 3, 10)
  x = linear_decoder.lagged(eeg, 4)
  assert x.shape == (2, 7, 12)
  z = (eeg - eeg.mean(-1, keepdims=True)) / eeg.std(-1, keepdims=True)
  np.testing.assert_allclose(x[1, 2].reshape(3, 4), z[1, :, 2:6])


def test_identifies_the_attended_talker_when_the_eeg_carries_it():
  rng = np.random.default_rng(0)
  model = linear_decoder.LinearDecoder(RATE, max_lag_seconds=0.2)
  train, val, test = (_trials(rng, 96) for _ in range(3))
  model.fit(train[0], train[1])
  model.choose(*val)
  out = model.score(*test)
  assert out["identification"] > 0.95 and out["r_attended"] > 0.3, out


def test_chance_when_the_eeg_is_noise():
  rng = np.random.default_rng(1)
  model = linear_decoder.LinearDecoder(RATE, max_lag_seconds=0.2)
  train, val, test = (_trials(rng, 200, snr=0.0) for _ in range(3))
  model.fit(train[0], train[1])
  model.choose(*val)
  out = model.score(*test)
  assert abs(out["identification"] - 0.5) < 4 * out["identification_se"] + 0.02, out


def test_cross_fit_scores_each_fold_with_the_ridge_chosen_on_the_others():
  """On the trials the ridge is chosen on (the val split), every trial is scored by a
  ridge chosen without it: interleaved folds, each with the others' choice."""
  rng = np.random.default_rng(2)
  model = linear_decoder.LinearDecoder(RATE, max_lag_seconds=0.2)
  train, val = _trials(rng, 96, snr=0.3), _trials(rng, 40, snr=0.3)
  model.fit(train[0], train[1])
  out = model.cross_fit_score(*val)
  expected = np.zeros(40)
  for f in range(2):
    held = np.arange(40) % 2 == f
    model.choose(*(a[~held] for a in val))
    assert model.ridge == out["ridge"][f]
    ra, ru = model.correlations(*(a[held] for a in val))
    expected[held] = ra > ru
  np.testing.assert_array_equal(out["per_trial"], expected)
  assert out["identification"] == expected.mean() and out["n"] == 40
  noise = _trials(rng, 200, snr=0.0)
  model.fit(*_trials(rng, 200, snr=0.0)[:2])
  chance = model.cross_fit_score(*noise)
  assert abs(chance["identification"] - 0.5) < 4 * chance["identification_se"] + 0.02, chance


def test_compare_decoders_pairs_the_trials_and_counts_the_discordant_ones(tmp_path):
  """Known answer: 10 trials, the model right on 0-7, the linear decoder on 2-9 and on
  trial 0: discordant 1 (model only: trial 1) and 2 (linear only: 8, 9); McNemar's
  exact p for 1 of 3 is 1.0; rows out of order are matched by index."""
  from neurocodec_jax import evaluation  # pylint: disable=g-import-not-at-top
  model = [1] * 8 + [0] * 2
  linear = dict(per_trial=[1, 0] + [1] * 8)
  path = tmp_path / "per_example.csv"
  rows = [f"{i},{model[i]}" for i in reversed(range(10))]
  path.write_text("index,id_cue_true_envelopes\n" + "\n".join(rows) + "\n")
  c = evaluation.compare_decoders(str(path), linear)
  assert (c["model"], c["linear"], c["n"]) == (0.8, 0.9, 10)
  assert (c["model_only"], c["linear_only"]) == (1, 2)
  d = np.asarray(model) - np.asarray(linear["per_trial"])
  assert c["difference"] == pytest.approx(-0.1)
  assert c["difference_se"] == pytest.approx(d.std(ddof=1) / np.sqrt(10))
  assert c["mcnemar_p"] == 1.0
  # All 12 discordant trials one way: p = 2 / 2**12.
  path.write_text("index,id_cue_true_envelopes\n" + "\n".join(f"{i},1" for i in range(12)))
  c = evaluation.compare_decoders(str(path), dict(per_trial=[0] * 12))
  assert c["mcnemar_p"] == pytest.approx(2 / 2 ** 12) and c["difference"] == 1.0
  with pytest.raises(ValueError, match="are not the linear baseline's"):
    evaluation.compare_decoders(str(path), dict(per_trial=[0] * 13))
  from neurocodec_jax.cli import demo  # pylint: disable=g-import-not-at-top
  line = demo.decoder_comparison(dict(id_cue_true_envelopes=0.8),
                                 dict(identification=0.9, identification_se=0.09, ridge=1.0), c)
  assert "model - linear +100.0 ± 0.0 points" in line and "McNemar p = 0.00049" in line
  line = demo.decoder_comparison(dict(id_cue_true_envelopes=0.8), dict(
      identification=0.9, identification_se=0.09, ridge=1.0,
      forward=dict(identification=0.95, identification_se=0.05)))
  assert "the linear forward decoder's 95.0% (± 5.0)" in line
  assert "model - forward +100.0" in evaluation.format_decoder_pairing(c, "forward")


def _forward_trials(rng, n, channels=8, t=256, snr=0.3, brown=False):
  """EEG = map x (h * env_a + 0.3 h_early * env_u) + noise (white, or brown: a
  random walk, the steep spectrum that whitening is for)."""
  k = np.arange(20)
  h = np.exp(-0.5 * ((k - 8) / 2.0) ** 2) - 0.6 * np.exp(-0.5 * ((k - 14) / 3.0) ** 2)
  h_early = np.where(k < 10, h, 0.0)
  spatial_map = np.linspace(-1, 1, channels) ** 2 - 0.3
  env_a, env_u = (np.abs(rng.standard_normal((n, t))).cumsum(-1) for _ in range(2))
  env_a, env_u = (np.diff(e, axis=-1, prepend=0) for e in (env_a, env_u))
  drive = np.stack([np.convolve(a, h)[:t] + 0.3 * np.convolve(u, h_early)[:t]
                    for a, u in zip(env_a, env_u)])
  noise = rng.standard_normal((n, channels, t))
  if brown:
    noise = noise.cumsum(-1)
  noise /= noise.std(-1, keepdims=True)
  eeg = snr * spatial_map[None, :, None] * (drive / drive.std())[:, None] + noise
  return (eeg, env_a, env_u), spatial_map, h


def test_forward_decoder_recovers_the_map_and_response_and_identifies():
  rng = np.random.default_rng(2)
  (train, spatial_map, h), (val, _, _), (test, _, _) = (_forward_trials(rng, 96)
                                                       for _ in range(3))
  model = linear_decoder.ForwardDecoder(RATE, max_lag_seconds=19 / RATE).fit(*train)
  model.choose(*val)
  w = model.weights[model.ridge]
  fitted_map = w["spatial"] @ linear_decoder.covariance(
      linear_decoder._zscore(train[0]))                     # Sigma Sigma^-1 map = map
  assert abs(np.corrcoef(fitted_map, spatial_map)[0, 1]) > 0.95
  assert abs(np.corrcoef(w["attended"], h)[0, 1]) > 0.9
  assert model.score(*test)["identification"] > 0.95
  swapped = model.score(test[0], test[2], test[1])["identification"]
  assert swapped < 0.05


def test_forward_decoder_at_chance_without_a_response_and_whitening_helps_in_brown_noise():
  rng = np.random.default_rng(3)
  trials = lambda **kw: [_forward_trials(rng, 160, **kw)[0] for _ in range(3)]
  train, val, test = trials(snr=0.0)
  model = linear_decoder.ForwardDecoder(RATE, max_lag_seconds=19 / RATE).fit(*train)
  model.choose(*val)
  out = model.score(*test)
  assert abs(out["identification"] - 0.5) < 4 * out["identification_se"] + 0.02, out
  # Brown noise at an SNR where the unwhitened decision errs on ~1 trial in 7: whitening
  # removes most of those errors (measured: 0.84 -> 0.94 at snr 0.1; 0.73 -> 0.88 at 0.08).
  train, val, test = trials(snr=0.1, brown=True)
  score = {}
  for order in (0, 8):
    m = linear_decoder.ForwardDecoder(RATE, max_lag_seconds=19 / RATE, ar_order=order)
    m.fit(*train).choose(*val)
    score[order] = m.score(*test)["identification"]
  assert score[8] > score[0] + 0.05, score                 # 160 trials: s.e. ~0.03
