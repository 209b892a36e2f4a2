"""The generator's forward model as a decoder (neurocodec_jax.data.eeg_oracle): it
decodes the files the generator wrote, with the generator's own subjects."""

import dataclasses

import h5py
import numpy as np
import pytest
from scipy import signal

from neurocodec_jax import linear_decoder
from neurocodec_jax.data import eeg_oracle, synthetic

SPEC = synthetic.SyntheticSpec(n_train=4, n_val=2, n_test=48, eeg_channels=16, subjects=4,
                               seconds=2.0)


def _read(root, split, kind):
  with h5py.File(f"{root}/{split}/{kind}_{split}.h5") as f:
    return f[f"{kind}_{split}="][:]


def _identify(root, spec, swap=False):
  subjects = synthetic.make_subjects(spec)
  eeg = _read(root, "test", "eegs").transpose(0, 2, 1)
  att, un = (_read(root, "test", k)[..., 0].astype(np.float64) for k in ("clean", "unattended"))
  sid = _read(root, "test", "subjects")
  oracles = {s: eeg_oracle.ForwardOracle.of_subject(subjects[s], spec) for s in set(sid.tolist())}
  stimuli = [tuple(eeg_oracle.stimulus(spec, x) for x in ((u, a) if swap else (a, u)))
             for a, u in zip(att, un)]
  return eeg_oracle.identify(oracles, eeg, stimuli, sid)


@pytest.mark.parametrize("model,snr_db", [("family", -5.0), ("classic", -10.0)])
def test_the_oracle_finds_the_attended_talker_and_not_the_other(tmp_path, model, snr_db):
  spec = dataclasses.replace(SPEC, eeg_model=model, eeg_snr_db=snr_db)
  root = synthetic.generate(str(tmp_path / model), spec, progress=False, workers=1)
  assert _identify(root, spec).mean() >= 0.95
  assert _identify(root, spec, swap=True).mean() <= 0.05


def test_without_a_response_the_oracle_is_at_chance(tmp_path):
  spec = dataclasses.replace(SPEC, eeg_model="family", eeg_snr_db=-80.0, n_test=64)
  root = synthetic.generate(str(tmp_path / "noise"), spec, progress=False, workers=1)
  assert 0.3 <= _identify(root, spec).mean() <= 0.7       # 64 coin flips: +-3.2 s.e.


def test_make_subjects_are_the_subjects_generate_used(tmp_path):
  """The oracle rebuilds the subjects from the spec: the EEG they and the stored audio
  give is the stored EEG, trial by trial."""
  spec = dataclasses.replace(SPEC, eeg_model="family", n_test=3)
  root = synthetic.generate(str(tmp_path / "d"), spec, progress=False, workers=1)
  subjects = synthetic.make_subjects(spec)
  for i in range(3):
    rng = np.random.default_rng([spec.seed, 2, i])
    s = int(_read(root, "test", "subjects")[i])
    _, _, _, eeg = synthetic.make_trial(rng, spec, subjects[s], "test")
    np.testing.assert_array_equal(eeg, _read(root, "test", "eegs")[i])


def test_whitener_recovers_an_ar_process_and_population_averages_the_models():
  rng = np.random.default_rng(0)
  x = signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal((64, 512)), axis=-1)
  h = linear_decoder.whitener(x, order=2)
  np.testing.assert_allclose(h, [1.0, -0.9, 0.0], atol=0.03)
  white = signal.lfilter(h, [1.0], x, axis=-1)[:, 2:]
  lag1 = np.mean([np.corrcoef(w[:-1], w[1:])[0, 1] for w in white])
  assert abs(lag1) < 0.03
  subjects = [synthetic.make_family_subject(rng, 16, 128, -10.0, 15.0) for _ in range(3)]
  mean = eeg_oracle.population(subjects)
  np.testing.assert_allclose(mean.trf, np.mean([s.trf for s in subjects], 0))
  np.testing.assert_allclose(mean.feature_weights.sum(), 1.0)


def test_the_adaptive_decoder_needs_no_labels(tmp_path):
  """The training subjects' mean model, the spatial filter from the training EEG and
  the whitener from each test subject's own unlabeled EEG: still finds the attended
  talker at a high SNR on subjects it never saw."""
  spec = dataclasses.replace(SPEC, eeg_model="family", eeg_snr_db=-5.0, subjects=8,
                             subject_split="held_out", n_train=32)
  root = synthetic.generate(str(tmp_path / "d"), spec, progress=False, workers=1)
  subjects = synthetic.make_subjects(spec)
  pools = synthetic.subject_pools(spec)
  model = eeg_oracle.population([subjects[s] for s in pools["train"]])
  cov = linear_decoder.covariance(_read(root, "train", "eegs").transpose(0, 2, 1).astype(np.float64))
  eeg = _read(root, "test", "eegs").transpose(0, 2, 1).astype(np.float64)
  sid = _read(root, "test", "subjects")
  oracles = {s: eeg_oracle.ForwardOracle.with_noise(model, spec, eeg[sid == s], cov=cov)
             for s in set(sid.tolist())}
  att, un = (_read(root, "test", k)[..., 0].astype(np.float64) for k in ("clean", "unattended"))
  stimuli = [(eeg_oracle.stimulus(spec, a), eeg_oracle.stimulus(spec, u)) for a, u in zip(att, un)]
  assert eeg_oracle.identify(oracles, eeg, stimuli, sid).mean() >= 0.85
