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
