"""The synthetic AAD dataset: layout, determinism, atomicity, and its science.

The attended talker must be indistinguishable from the unattended one by its
statistics, and the EEG must carry the attended envelope more than the
unattended one — measured with the classic AAD backward model (ridge
regression from time-lagged EEG to the envelope, trained on train, scored on test).
"""

import dataclasses
import os

import h5py
import numpy as np
import pytest
from scipy import signal, stats

from neurocodec_jax.data import open_split, synthetic
from tests.conftest import tiny_config

SPEC = synthetic.SyntheticSpec(n_train=96, n_val=2, n_test=64, eeg_channels=16,
                               subjects=2, seconds=2.0)


def _read(root, split, kind):
  with h5py.File(f"{root}/{split}/{kind}_{split}.h5") as f:
    return f[f"{kind}_{split}="][:]


@pytest.fixture(scope="module")
def aad_dataset(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("aad") / "data")
  synthetic.generate(root, SPEC, progress=False)
  return root


def _envelopes(audio, n):
  return np.stack([synthetic.envelope_at(x, SPEC.sample_rate, SPEC.eeg_rate, n)
                   for x in audio[..., 0]])


def _lagged(eeg, lags=32):
  n, t, c = eeg.shape
  x = np.zeros((n, t, c * lags))
  for lag in range(lags):                      # EEG follows the stimulus
    x[:, :t - lag, lag * c:(lag + 1) * c] = eeg[:, lag:, :]
  return x


def backward_model_scores(root):
  """Test-split correlations of a ridge envelope decoder with both talkers."""
  eeg = _read(root, "train", "eegs") * 1e6
  x = _lagged(eeg).reshape(-1, eeg.shape[2] * 32)
  y = _envelopes(_read(root, "train", "clean"), eeg.shape[1]).reshape(-1)
  w = np.linalg.solve(x.T @ x + 1e3 * np.eye(x.shape[1]), x.T @ y)
  eeg = _read(root, "test", "eegs") * 1e6
  rec = _lagged(eeg) @ w
  att = _envelopes(_read(root, "test", "clean"), eeg.shape[1])
  unatt = _envelopes(_read(root, "test", "unattended"), eeg.shape[1])
  r = lambda a, b: np.array([np.corrcoef(p, q)[0, 1] for p, q in zip(a, b)])
  return r(rec, att), r(rec, unatt)


def test_eeg_tracks_attended_talker(aad_dataset):
  r_att, r_unatt = backward_model_scores(aad_dataset)
  accuracy = np.mean(r_att > r_unatt)
  print(f"AAD backward model at {SPEC.eeg_snr_db} dB: r_att={r_att.mean():.3f} "
        f"r_unatt={r_unatt.mean():.3f} accuracy={accuracy:.3f}")
  assert r_att.mean() - r_unatt.mean() > 0.2
  assert accuracy > 0.85


def test_no_eeg_signal_gives_chance(tmp_path):
  """Negative control: at -60 dB the same measurement falls to chance."""
  root = str(tmp_path / "noise")
  synthetic.generate(root, dataclasses.replace(SPEC, eeg_snr_db=-60.0), progress=False)
  r_att, r_unatt = backward_model_scores(root)
  assert abs(r_att.mean() - r_unatt.mean()) < 0.1
  assert 0.25 < np.mean(r_att > r_unatt) < 0.75


def _features(audio):
  x = audio[..., 0]
  rms = np.sqrt(np.mean(x ** 2, axis=1))
  f, p = signal.welch(x, fs=SPEC.sample_rate, nperseg=1024, axis=1)
  centroid = (p * f).sum(1) / p.sum(1)
  env = np.abs(signal.hilbert(x, axis=1))
  env = signal.resample_poly(env, 1, 160, axis=1)            # 100 Hz
  fm, pm = signal.welch(env - env.mean(1, keepdims=True), fs=100, nperseg=128, axis=1)
  band = (fm > 0.5) & (fm < 20)
  mod_peak = fm[band][np.argmax(pm[:, band], axis=1)]
  return dict(rms=rms, centroid=centroid, modulation=mod_peak)


def test_attended_and_unattended_have_matching_statistics(aad_dataset):
  att = _features(_read(aad_dataset, "train", "clean"))
  unatt = _features(_read(aad_dataset, "train", "unattended"))
  for name in att:
    p = stats.ks_2samp(att[name], unatt[name]).pvalue
    print(f"{name}: attended {np.mean(att[name]):.4g} unattended "
          f"{np.mean(unatt[name]):.4g} KS p={p:.3f}")
    assert p > 0.01, name
  assert 2 <= np.median(att["modulation"]) <= 8           # syllabic rate
  louder = np.mean(att["rms"] > unatt["rms"])
  assert 0.3 < louder < 0.7                              # level says nothing


def test_mixture_is_sum_of_talkers_and_in_range(aad_dataset):
  noisy, clean = _read(aad_dataset, "test", "noisy"), _read(aad_dataset, "test", "clean")
  unatt = _read(aad_dataset, "test", "unattended")
  np.testing.assert_allclose(noisy, clean + unatt, atol=1e-6)
  assert np.abs(noisy).max() <= 0.9 + 1e-6


def test_eeg_in_volts_at_realistic_scale(aad_dataset):
  eeg = _read(aad_dataset, "test", "eegs")
  assert eeg.shape == (64, 256, 16)
  assert 3e-6 < eeg.std() < 3e-5
  subjects = _read(aad_dataset, "test", "subjects")
  assert set(subjects.tolist()) == {0, 1}


def test_deterministic_per_seed(tmp_path):
  spec = synthetic.PRESETS["tiny"]
  a = synthetic.generate(str(tmp_path / "a"), spec, progress=False)
  b = synthetic.generate(str(tmp_path / "b"), spec, progress=False)
  c = synthetic.generate(str(tmp_path / "c"), dataclasses.replace(spec, seed=5),
                         progress=False)
  for kind in ("noisy", "eegs"):
    np.testing.assert_array_equal(_read(a, "val", kind), _read(b, "val", kind))
    assert not np.array_equal(_read(a, "val", kind), _read(c, "val", kind))


def test_parallel_generation_writes_the_same_files(tmp_path):
  # Chunks of 2 in spawned processes vs one chunk in this process: every trial
  # depends only on its ids, not on its chunk or worker.
  spec = synthetic.PRESETS["tiny"]
  subjects = [synthetic.make_subject(np.random.default_rng(i), spec.eeg_channels,
                                     spec.eeg_rate) for i in range(spec.subjects)]
  for out, workers, chunk in (("serial", 1, 128), ("parallel", 2, 2)):
    synthetic.write_split(str(tmp_path / out), "train", 7, spec, subjects, 0,
                          progress=False, workers=workers, chunk=chunk)
  for kind in ("noisy", "clean", "unattended", "eegs", "subjects"):
    a = _read(tmp_path / "serial", "train", kind)
    assert a.shape[0] == 7
    np.testing.assert_array_equal(a, _read(tmp_path / "parallel", "train", kind))


def test_atomic_write(tmp_path, monkeypatch):
  out = tmp_path / "ds"
  calls = []

  def failing(*args, **kwargs):
    calls.append(args[1])
    if len(calls) == 2:
      raise KeyboardInterrupt
    return original(*args, **kwargs)

  original = synthetic.write_split
  monkeypatch.setattr(synthetic, "write_split", failing)
  with pytest.raises(KeyboardInterrupt):
    synthetic.generate(str(out), synthetic.PRESETS["tiny"], progress=False)
  assert os.listdir(tmp_path) == []                     # nothing half-written
  monkeypatch.setattr(synthetic, "write_split", original)
  synthetic.generate(str(out), synthetic.PRESETS["tiny"], progress=False)
  with pytest.raises(FileExistsError, match="--overwrite"):
    synthetic.generate(str(out), synthetic.PRESETS["tiny"], progress=False)


def test_cli_writes_layout_and_manifest(tmp_path, capsys):
  out = str(tmp_path / "cli")
  synthetic.main(["--out", out, "--preset", "tiny", "--n_train", "4", "--n_val", "2",
                  "--n_test", "2", "--eeg_snr_db", "-10"])
  assert "train: clean_train.h5" in capsys.readouterr().out
  import json
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["n_train"] == 4 and manifest["eeg_snr_db"] == -10.0
  # The loader accepts what the generator wrote, with the matching config.
  config = tiny_config(out)
  source = open_split(config, "train", fields=("noisy", "eeg", "subject"))
  assert len(source) == 4 and source.info.eeg_scale == 1e6


def test_mismatch_names_the_stale_field(tmp_path):
  # The demo refuses a dataset written for other settings instead of reusing it.
  spec = synthetic.PRESETS["tiny"]
  root = synthetic.generate(str(tmp_path / "ds"), spec, progress=False)
  assert synthetic.mismatch(root, spec) is None
  assert synthetic.mismatch(root, dataclasses.replace(spec, n_train=32)) == (
      "field 'n_train' is 16, expected 32")
  assert "no manifest.json" in synthetic.mismatch(str(tmp_path), spec)


def test_family_subjects_differ_in_every_part_of_the_forward_model():
  rng = np.random.default_rng(0)
  subjects = [synthetic.make_family_subject(rng, 16, 128, -10.0, 15.0) for _ in range(12)]
  assert len({s.noise for s in subjects}) >= 3
  assert len({round(s.snr_db, 3) for s in subjects}) == 12
  assert all(-25.0 <= s.snr_db <= -10.0 for s in subjects)
  weights = np.stack([s.feature_weights for s in subjects])
  np.testing.assert_allclose(weights.sum(1), 1.0)
  assert weights.std(0).min() > 0.05                       # features mixed differently
  trfs = np.stack([s.trf for s in subjects])
  assert np.corrcoef(trfs)[np.triu_indices(12, 1)].mean() < 0.8     # varied, not one TRF
  for s in subjects:                                       # the ignored talker: early part only
    assert np.sum(s.trf_unattended ** 2) < np.sum(s.trf ** 2)


def test_family_held_out_subjects_and_the_linear_decoder(tmp_path):
  """On the family model with subject-held-out splits, the classic linear decoder still
  finds the attended talker at a high SNR, on test subjects it never saw."""
  import json  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import linear_decoder  # pylint: disable=g-import-not-at-top
  spec = dataclasses.replace(SPEC, eeg_model="family", subject_split="held_out", subjects=8,
                             eeg_snr_db=0.0, n_train=96, n_val=32, n_test=48)
  root = str(tmp_path / "family")
  synthetic.generate(root, spec, progress=False, workers=1)
  pools = json.load(open(os.path.join(root, "manifest.json")))["protocol"]["subjects"]
  assert not set(pools["test"]) & set(pools["train"]) and not set(pools["val"]) & set(pools["train"])
  for split in ("train", "val", "test"):
    assert set(_read(root, split, "subjects").tolist()) == set(pools[split])

  def arrays(split):
    eeg = _read(root, split, "eegs").transpose(0, 2, 1)
    env = lambda kind: linear_decoder.envelopes(_read(root, split, kind)[..., 0],
                                                spec.sample_rate, spec.eeg_rate, eeg.shape[-1])
    return eeg, env("clean"), env("unattended")

  model = linear_decoder.LinearDecoder(spec.eeg_rate).fit(*arrays("train")[:2])
  model.choose(*arrays("val"))
  assert model.score(*arrays("test"))["identification"] > 0.75
