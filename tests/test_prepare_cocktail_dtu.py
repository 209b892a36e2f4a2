"""Cocktail Party and DTU readers on small fixtures written in the published formats.

Each fixture encodes a known truth: the EEG carries the attended talker's envelope
(at a known lag of zero) on a smooth spatial pattern, plus a signal common to every
electrode and the mastoids (which the mastoid reference must remove), a bad channel,
and for DTU a DC offset, unlisted events and a single-talker trial.
"""

import csv
import json
import os
import re

import h5py
import numpy as np
import pytest
import scipy.io
import soundfile

from neurocodec_jax.data.prepare import DatasetError, cocktail, dtu
from neurocodec_jax.data.prepare.__main__ import main as cli
from tests import prepare_fixtures as fx

EEG_RATE, SR_OUT, WAV_RATE = 128, 16000, 44100
COMMON_HZ = 1.5  # the signal shared by all electrodes and the mastoids


# --------------------------------------------------------------- fixtures ----

def envelope(seconds, seed, rate=EEG_RATE):
  """A positive, speech-rate (2-8 Hz) envelope ``[seconds * rate]``."""
  rng = np.random.default_rng(seed)
  n = int(round(seconds * rate))
  spec = np.fft.rfft(rng.standard_normal(n))
  f = np.fft.rfftfreq(n, 1 / rate)
  spec[(f < 2) | (f > 8)] = 0
  e = np.fft.irfft(spec, n)
  return 1.0 + e / np.abs(e).max()


def talker(env, seed):
  """Noise-carrier audio at WAV_RATE, amplitude-modulated by ``env`` (EEG rate)."""
  t_audio = np.arange(int(len(env) / EEG_RATE * WAV_RATE)) / WAV_RATE
  env_up = np.interp(t_audio, np.arange(len(env)) / EEG_RATE, env)
  return 0.1 * env_up * np.random.default_rng(seed).standard_normal(len(t_audio))


def pattern(n_channels):
  """A smooth spatial pattern (microvolts per envelope unit)."""
  return 5.0 * (1.0 + np.sin(np.linspace(0, 3, n_channels)))


def brain(env, n_channels, rate, seed, seconds):
  """``[time, n_channels]`` EEG at ``rate``: pattern x envelope (demeaned) + noise."""
  n = int(round(seconds * rate))
  t = np.arange(n) / rate
  e = np.interp(t, np.arange(len(env)) / EEG_RATE, env - env.mean(), right=0)
  rng = np.random.default_rng(seed)
  return e[:, None] * pattern(n_channels) + rng.standard_normal((n, n_channels))


def common(n, rate):
  return 40.0 * np.sin(2 * np.pi * COMMON_HZ * np.arange(n) / rate)


# Cocktail: subject -> runs -> (EEG seconds, audio seconds, mat format); "v5T" is
# channels x time, as the Dryad README documents (the loaders read time x channels).
COCKTAIL = {1: {1: (4.0, 4.5, "v5"), 2: (5.0, 4.25, "v73")},
            18: {1: (4.0, 4.0, "v5"), 3: (4.5, 5.0, "v5T")}}


def story_env(story, run, seconds):
  return envelope(seconds, seed=100 * sum(map(ord, story)) + run)


def make_cocktail(root):
  """The published layout with COCKTAIL's runs; subject 1 attends "20000" and has
  its (listed) channel 48 noisy, subject 18 attends "Journey" with channel 10 flat."""
  runs = {r: max(a for _, a, _ in [v[r] for v in COCKTAIL.values() if r in v])
          for v in COCKTAIL.values() for r in v}
  for story in cocktail.STORIES:
    folder = os.path.join(root, "Stimuli", "Audio", story)
    os.makedirs(folder, exist_ok=True)
    for r, seconds in runs.items():
      audio = talker(story_env(story, r, seconds), seed=r + 7 * len(story))
      soundfile.write(os.path.join(folder, f"{story}_{r}.wav"), audio, WAV_RATE,
                      subtype="FLOAT")
  for s, subject_runs in COCKTAIL.items():
    folder = os.path.join(root, "EEG", f"Subject{s}")
    os.makedirs(folder, exist_ok=True)
    story = cocktail.original_attended(s)
    for r, (eeg_s, audio_s, fmt) in subject_runs.items():
      env = story_env(story, r, runs[r])
      x = brain(env, 130, EEG_RATE, seed=100 * s + r, seconds=eeg_s)
      x += common(len(x), EEG_RATE)[:, None]
      if s == 1:
        x[:, 47] += 300 * np.random.default_rng(r).standard_normal(len(x))
      else:
        x[:, 9] = 0.0
      variables = {"eegData": x[:, :128], "mastoids": x[:, 128:], "fs": 128.0}
      path = os.path.join(folder, f"Subject{s}_Run{r}.mat")
      if fmt == "v5T":
        variables.update(eegData=x[:, :128].T, mastoids=x[:, 128:].T)
      if fmt == "v73":
        fx.savemat73(path, variables)
      else:
        scipy.io.savemat(path, variables)
  return root


def _dataset_fixtures(name: str, make, reader):
  """Module fixtures ``<name>_src`` (the fixture dataset's folder) and ``<name>_recs``
  (its recordings as the reader yields them)."""
  @pytest.fixture(scope="module", name=f"{name}_src")
  def src(tmp_path_factory):
    return make(str(tmp_path_factory.mktemp(name)))

  @pytest.fixture(scope="module", name=f"{name}_recs")
  def recs(request):
    folder = request.getfixturevalue(f"{name}_src")
    return list(reader.iter_recordings(folder, sample_rate=SR_OUT, eeg_rate=EEG_RATE))
  return src, recs


_cocktail_src, _cocktail_recs = _dataset_fixtures("cocktail", make_cocktail, cocktail)


def audio_envelope(audio, sample_rate=SR_OUT):
  """``|audio|`` averaged over each EEG sample's span."""
  k = sample_rate // EEG_RATE
  n = len(audio) // k
  return np.abs(audio[:n * k]).reshape(n, k).mean(axis=1)


def corr(a, b):
  n = min(len(a), len(b))
  a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
  return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def best_lag(eeg_component, env, max_lag=16):
  lags = range(-max_lag, max_lag + 1)
  r = [corr(eeg_component[max(l, 0):], env[max(-l, 0):]) for l in lags]
  return list(lags)[int(np.argmax(r))]


def check_recording(rec, eeg_seconds, channels):
  n = int(eeg_seconds * EEG_RATE)
  assert rec.eeg.shape == (n, channels) and rec.eeg.dtype == np.float32
  for a in (rec.attended, rec.unattended, rec.noisy):
    assert a.shape == (n * SR_OUT // EEG_RATE,) and a.dtype == np.float32
    assert np.abs(a).max() <= 0.99
  np.testing.assert_allclose(rec.noisy, rec.attended + rec.unattended, atol=1e-6)
  assert 1 < np.median(rec.eeg.std(axis=0)) < 100          # microvolts
  # The mastoid reference removed what every electrode shared with the mastoids.
  ref = common(n, EEG_RATE)
  assert abs(corr(rec.eeg.mean(axis=1), ref)) < 0.2
  # Attended talker and alignment: the EEG tracks the attended envelope at lag 0.
  component = rec.eeg @ pattern(channels)
  r_att = corr(component, audio_envelope(rec.attended))
  r_unatt = corr(component, audio_envelope(rec.unattended))
  assert r_att > 0.5 and r_att > r_unatt + 0.3, (r_att, r_unatt)
  assert abs(best_lag(component, audio_envelope(rec.attended))) <= 1


# --------------------------------------------------------------- cocktail ----

def test_cocktail_recordings(cocktail_src, cocktail_recs):
  recs = cocktail_recs
  assert [(r.subject, r.trial) for r in recs] == [
      ("Subject1", "1"), ("Subject1", "2"), ("Subject18", "1"), ("Subject18", "3")]
  assert cocktail.list_subjects(cocktail_src) == ["Subject1", "Subject18"]
  for rec in recs:
    s, r = int(rec.subject[7:]), int(rec.trial)
    eeg_s, audio_s, _ = COCKTAIL[s][r]
    check_recording(rec, min(eeg_s, audio_s), 128)
    story = "20000" if s <= 17 else "Journey"
    other = "Journey" if story == "20000" else "20000"
    assert rec.stimuli == (f"{story}_{r}", f"{other}_{r}")
    assert rec.provenance["attended_story"] == story
    assert rec.provenance["attended_rule"] == "readme"
    assert rec.provenance["reference"] == "mastoids M1+M2"
    assert rec.provenance["eeg_layout"] == ("channels x time" if COCKTAIL[s][r][2] == "v5T"
                                            else "time x channels")
  # Bad channels: subject 1's listed channel 48, subject 18's flat channel 10 (auto).
  assert "B16 (48)" in recs[0].provenance["bad_channels"]
  assert "A10 (10)" in recs[2].provenance["bad_channels"]
  for rec, c in ((recs[0], 47), (recs[2], 9)):
    sd = rec.eeg.std(axis=0)
    assert 0.2 * np.median(sd) < sd[c] < 5 * np.median(sd)   # interpolated


def test_cocktail_options(cocktail_src, tmp_path):
  table = tmp_path / "attended.csv"
  table.write_text("subject,story\n1,Journey\n18,20000\n")
  recs = list(cocktail.iter_recordings(cocktail_src, sample_rate=SR_OUT, eeg_rate=EEG_RATE,
                                       subjects=["Subject1"], attended=str(table),
                                       bad_channels="none"))
  assert [r.subject for r in recs] == ["Subject1", "Subject1"]
  assert recs[0].stimuli == ("Journey_1", "20000_1")      # swapped by the table
  assert recs[0].provenance["bad_channels"] == []
  assert np.median(recs[0].eeg.std(axis=0)) * 10 < recs[0].eeg[:, 47].std()


def test_cocktail_attended_rules(cocktail_src):
  """The Dryad README's rule and the per-subject list published as its correction
  (cocktail.py's docstring) disagree for 16 subjects, 1 and 18 among them."""
  assert [cocktail.original_attended(s) for s in (1, 17, 18, 33)] == [
      "20000", "20000", "Journey", "Journey"]
  note = {s: cocktail.lalor_note_attended(s) for s in range(1, 34)}
  assert sorted(s for s, b in note.items() if b == "20000") == [
      3, 6, 7, 8, 9, 10, 13, 15, 17, 18, 19, 21, 24, 25, 27, 31, 32]
  assert sum(note[s] != cocktail.original_attended(s) for s in note) == 16
  with pytest.raises(DatasetError, match=r"'lalor-note' attended-story list covers"):
    cocktail.lalor_note_attended(34)
  recs = list(cocktail.iter_recordings(cocktail_src, sample_rate=SR_OUT, eeg_rate=EEG_RATE,
                                       attended="lalor-note", bad_channels="none"))
  assert [r.stimuli[0] for r in recs] == ["Journey_1", "Journey_2", "20000_1", "20000_3"]
  assert {r.provenance["attended_rule"] for r in recs} == {"lalor-note"}
  with pytest.raises(DatasetError, match=r"nope\.csv: attended-story table not found "
                                         r"\(expected one of \['lalor-note'"):
    list(cocktail.iter_recordings(cocktail_src, sample_rate=SR_OUT, eeg_rate=EEG_RATE,
                                  attended="nope.csv"))


def _broken_cocktail(tmp_path, edit):
  root = str(tmp_path / "src")
  os.makedirs(os.path.join(root, "EEG", "Subject2"))
  os.makedirs(os.path.join(root, "Stimuli"))
  for story in cocktail.STORIES:
    soundfile.write(os.path.join(root, "Stimuli", f"{story}_1.wav"),
                    talker(envelope(3, 1), 1), WAV_RATE)
  x = brain(envelope(3, 2), 130, EEG_RATE, 3, 3.0)
  variables = {"eegData": x[:, :128], "mastoids": x[:, 128:], "fs": 128.0}
  edit(root, variables)
  scipy.io.savemat(os.path.join(root, "EEG", "Subject2", "Subject2_Run1.mat"), variables)
  return root


@pytest.mark.parametrize("edit, message", [
    (lambda root, v: os.remove(os.path.join(root, "Stimuli", "Journey_1.wav")),
     r"Subject2_Run1\.mat: stimulus 'Journey_1\.wav' of run 1 not found"),
    (lambda root, v: v.update(fs=256.0),
     r"Subject2_Run1\.mat: field 'fs' is 256, expected 128"),
    (lambda root, v: v.pop("mastoids"),
     r"Subject2_Run1\.mat: missing field 'mastoids'"),
    (lambda root, v: v.update(eegData=v["eegData"][:, :64]),
     r"Subject2_Run1\.mat: field 'eegData' has 64 columns, expected 128"),
    (lambda root, v: v.update(mastoids=v["mastoids"][:100]),
     r"Subject2_Run1\.mat: field 'mastoids' has 100 samples, expected 384"),
])
def test_cocktail_malformed(tmp_path, edit, message):
  root = _broken_cocktail(tmp_path, edit)
  with pytest.raises(DatasetError, match=message):
    list(cocktail.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE))


# -------------------------------------------------------------------- DTU ----

RAW_RATE = 512
# Trials of a subject: (trigger, male wav, female wav, attend_mf, seconds)
DTU_TRIALS = [(11, "aske_story1_trial_1.wav", "marianne_story3_trial_1.wav", 1, 3.0),
              (12, "aske_story1_trial_2.wav", "", 1, 2.0),          # single talker
              (13, "aske_story2_trial_1.wav", "marianne_story4_trial_1.wav", 2, 3.5)]


def dtu_names():
  import mne  # pylint: disable=g-import-not-at-top
  names = mne.channels.make_standard_montage("biosemi64").ch_names
  return names + [f"EXG{i}" for i in range(1, 9)] + ["Status"]


def wav_env(name, seconds):
  return envelope(seconds + 0.5, seed=sum(map(ord, name)))


def write_preproc(root, s, values):
  """``DATA_preproc/S<s>_data_preproc.mat`` with only what the reader checks: one
  event per two-talker trial whose value is its attend_mf (preproc_data.m)."""
  os.makedirs(os.path.join(root, "DATA_preproc"), exist_ok=True)
  event = np.zeros((1, len(values)), dtype=[("sample", "O"), ("value", "O")])
  for k, v in enumerate(values):
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = float(v)
    event[0, k] = (float(k + 1), cell)
  scipy.io.savemat(os.path.join(root, "DATA_preproc", f"S{s}_data_preproc.mat"),
                   {"data": {"event": {"eeg": event}, "fsample": {"eeg": 64.0}}})


def make_dtu(root, sidecar_subjects=(2,), sidecar_name="S{s}_expinfo.csv",
             table_subjects=(), v73_subjects=(), fsample=None):
  """``EEG/S1.mat`` (expinfo a struct array) and ``EEG/S2.mat`` (no expinfo, a CSV
  sidecar), ``AUDIO/*.wav`` 0.5 s longer than their trials; subject 2's Fz is flat;
  ``DATA_preproc/S1_data_preproc.mat`` holds subject 1's attended talkers.

  ``table_subjects``: expinfo stored as published, a MATLAB table (an object no
  Python reader decodes); ``v73_subjects``: ``S<n>.mat`` in MATLAB v7.3 (HDF5), the
  same contents; ``fsample``: ``{subject: data.fsample.eeg}`` instead of 512."""
  os.makedirs(os.path.join(root, "EEG"))
  os.makedirs(os.path.join(root, "AUDIO"))
  for _, male, female, _, seconds in DTU_TRIALS:
    for name in (male, female):
      if name:
        audio = talker(wav_env(name, seconds), seed=len(name))
        soundfile.write(os.path.join(root, "AUDIO", name), audio, WAV_RATE)
  for s in (1, 2):
    gap, pieces, events = 1.0, [], [(0.2, 200.0)]        # an unlisted event first
    t = gap
    for trigger, male, female, attend, seconds in DTU_TRIALS:
      att = male if attend == 1 else female
      env = wav_env(att or male, seconds)
      pieces.append((t, brain(env, 64, RAW_RATE, seed=10 * s + trigger, seconds=seconds)))
      events += [(t, float(trigger)), (t + seconds, 99.0)]
      t += seconds + gap
    n = int(t * RAW_RATE)
    x = np.random.default_rng(s).standard_normal((n, 73))
    for start, piece in pieces:
      i = int(round(start * RAW_RATE))
      x[i:i + len(piece), :64] += piece
    x[:, :66] += common(n, RAW_RATE)[:, None] + 500.0      # shared signal, DC offset
    if s == 2:
      x[:, 37] = 0.0                                       # Fz flat
    event = np.zeros((1, len(events)), dtype=[("sample", "O"), ("value", "O")])
    for k, (sec, value) in enumerate(events):
      event[0, k] = (float(round(sec * RAW_RATE) + 1), value)   # 1-based samples
    eeg_cell = np.empty((1, 1), dtype=object)
    eeg_cell[0, 0] = x
    names = np.empty((1, 73), dtype=object)
    names[0, :] = dtu_names()
    rate = float((fsample or {}).get(s, RAW_RATE))
    variables = {"data": {"eeg": eeg_cell, "fsample": {"eeg": rate},
                          "dim": {"chan": {"eeg": names}}, "event": {"eeg": event}}}
    if s in v73_subjects:   # the same contents in v7.3's types
      variables = {"data": {
          "eeg": [x], "fsample": {"eeg": rate}, "dim": {"chan": {"eeg": dtu_names()}},
          "event": {"eeg": fx.StructArray(
              {"sample": float(round(sec * RAW_RATE) + 1), "value": value}
              for sec, value in events)}}}
    header = ["trigger", "n_speakers", "wavfile_male", "wavfile_female", "attend_mf",
              "attend_lr", "acoustic_condition"]
    rows = [(trig, 2 if female else 1, male, female, attend, 1 + k % 2, 1 + k % 3)
            for k, (trig, male, female, attend, _) in enumerate(DTU_TRIALS)]
    if s in sidecar_subjects:
      with open(os.path.join(root, "EEG", sidecar_name.format(s=s)), "w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    if s in table_subjects and s in v73_subjects:
      variables["expinfo"] = fx.MatlabObject("table")
    elif s in v73_subjects and s not in sidecar_subjects:   # table2struct's struct array
      variables["expinfo"] = fx.StructArray(
          {h: float(v) if not isinstance(v, str) else v for h, v in zip(header, row)}
          for row in rows)
    elif s not in sidecar_subjects and s not in table_subjects:
      info = np.zeros((len(rows), 1), dtype=[(h, "O") for h in header])
      for k, row in enumerate(rows):
        info[k, 0] = tuple(float(v) if not isinstance(v, str) else v for v in row)
      variables["expinfo"] = info
    path = os.path.join(root, "EEG", f"S{s}.mat")
    if s in v73_subjects:
      fx.savemat73(path, variables)
    else:
      scipy.io.savemat(path, variables)
      if s in table_subjects:
        fx.append_matlab_object_v5(path, "expinfo", "table")
  write_preproc(root, 1, [a for _, _, female, a, _ in DTU_TRIALS if female])
  return root


_dtu_src, _dtu_recs = _dataset_fixtures("dtu", make_dtu, dtu)


def test_dtu_recordings(dtu_src, dtu_recs):
  recs = dtu_recs
  assert [(r.subject, r.trial) for r in recs] == [("S1", "1"), ("S1", "3"),
                                                  ("S2", "1"), ("S2", "3")]
  assert dtu.list_subjects(dtu_src) == ["S1", "S2"]
  for rec in recs:
    trigger, male, female, attend, seconds = DTU_TRIALS[int(rec.trial) - 1]
    check_recording(rec, seconds, 64)
    att, unatt = (male, female) if attend == 1 else (female, male)
    assert rec.stimuli == (att[:-4], unatt[:-4])
    assert rec.provenance["attended_talker"] == ("male" if attend == 1 else "female")
    assert rec.provenance["reference"] == "mastoids EXG1+EXG2"
    assert rec.provenance["onset_s"] == pytest.approx(
        1.0 + sum(t[4] + 1.0 for t in DTU_TRIALS[:int(rec.trial) - 1]), abs=1e-2)
  assert recs[2].provenance["bad_channels"] == ["Fz"]
  assert recs[2].provenance["expinfo"] == os.path.join("EEG", "S2_expinfo.csv")
  assert recs[0].provenance["expinfo"] == os.path.join("EEG", "S1.mat")
  assert recs[0].provenance["attend_mf_checked_against"] == os.path.join(
      "DATA_preproc", "S1_data_preproc.mat")
  assert "attend_mf_checked_against" not in recs[2].provenance


def test_dtu_preproc_check_skips_what_it_cannot_read(tmp_path):
  """DATA_preproc's layout is inferred from preproc_data.m: events that are not one
  value per two-talker row skip the check (noted) instead of blocking the data."""
  root = make_dtu(str(tmp_path / "src"))
  write_preproc(root, 1, [1, 2, 2])
  recs = list(dtu.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE,
                                  subjects=["S1"], bad_z=0))
  assert recs[0].provenance["attend_mf_checked_against"] == os.path.join(
      "DATA_preproc", "S1_data_preproc.mat") + ": not checked (3 event values for 2 " \
      "two-talker rows)"


@pytest.mark.parametrize("name", ["S{s}.csv", "s{s}_expinfo.txt"])
def test_dtu_expinfo_exports(tmp_path, name):
  """TorchEEG's writetable name ``S<n>.csv``; a public TFDS builder's
  space-separated ``s<n>_expinfo.txt``."""
  root = make_dtu(str(tmp_path / "src"), sidecar_subjects=(1, 2), sidecar_name=name)
  if name.endswith(".txt"):
    for s in (1, 2):
      path = os.path.join(root, "EEG", name.format(s=s))
      with open(path, newline="") as f:
        rows = list(csv.reader(f))
      with open(path, "w") as f:   # MATLAB's writetable(..., 'Delimiter', ' ')
        f.write("\n".join(" ".join(r) for r in rows) + "\n")
  recs = list(dtu.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE,
                                  subjects=["S1"], bad_z=0))
  assert [r.trial for r in recs] == ["1", "3"]
  assert recs[0].provenance["expinfo"] == os.path.join("EEG", name.format(s=1))
  assert [r.provenance["attended_talker"] for r in recs] == ["male", "female"]


def test_dtu_expinfo_via_matio(tmp_path, monkeypatch):
  """Without a struct or a sidecar, the published MATLAB table is read through mat-io
  when it is installed (stand-in: a module returning a DataFrame-like object)."""
  import sys  # pylint: disable=g-import-not-at-top
  import types  # pylint: disable=g-import-not-at-top
  root = make_dtu(str(tmp_path / "src"), sidecar_subjects=(), table_subjects=(1,))
  os.remove(os.path.join(root, "EEG", "S2.mat"))
  header = ["trigger", "wavfile_male", "wavfile_female", "attend_mf"]

  class Frame:
    columns = header
    def __getitem__(self, c):
      return [row[header.index(c)] for row in DTU_TRIALS]

  asked = []
  def load_from_mat(path, variable_names=None):
    asked.append((os.path.basename(path), variable_names))
    return {"expinfo": Frame()}
  monkeypatch.setitem(sys.modules, "matio", types.SimpleNamespace(load_from_mat=load_from_mat))
  recs = list(dtu.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE, bad_z=0))
  assert asked == [("S1.mat", ["expinfo"])]
  assert [r.provenance["attended_talker"] for r in recs] == ["male", "female"]
  assert recs[0].provenance["expinfo"] == os.path.join("EEG", "S1.mat")


def _broken_dtu(tmp_path, edit):
  root = make_dtu(str(tmp_path / "src"), sidecar_subjects=(1, 2))
  os.remove(os.path.join(root, "EEG", "S2.mat"))
  edit(root)
  return root


def _rewrite_csv(root, fn):
  path = os.path.join(root, "EEG", "S1_expinfo.csv")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  fn(rows)
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows(rows)


def _set_mat(root, fn):
  path = os.path.join(root, "EEG", "S1.mat")
  m = scipy.io.loadmat(path)
  variables = {k: v for k, v in m.items() if not k.startswith("__")}
  fn(variables)
  scipy.io.savemat(path, variables)


@pytest.mark.parametrize("edit, message", [
    (lambda root: os.remove(os.path.join(root, "AUDIO", "marianne_story4_trial_1.wav")),
     r"S1_expinfo\.csv: row 3 names stimulus 'marianne_story4_trial_1\.wav', not found"),
    (lambda root: _rewrite_csv(root, lambda rows: rows[1].__setitem__(4, "3")),
     r"S1_expinfo\.csv: row 1 'attend_mf' is '3', expected 1 \(male\) or 2 \(female\)"),
    (lambda root: _rewrite_csv(root, lambda rows: rows[3].__setitem__(0, "77")),
     r"S1\.mat: no event in 'data\.event\.eeg\.value' matches .*S1_expinfo\.csv row 3 "
     r"trigger 77"),
    (lambda root: os.remove(os.path.join(root, "EEG", "S1_expinfo.csv")),
     r"S1\.mat: missing variable 'expinfo' and no sidecar"),
    (lambda root: _set_mat(root, lambda v: v.update(data={
        k: v["data"][0, 0][k] for k in ("eeg", "dim", "event")})),
     r"S1\.mat: missing field 'data\.fsample'"),
    (lambda root: write_preproc(root, 1, [2, 2]),
     r"S1_data_preproc\.mat: field 'data\.event\.eeg\.value' \(the attended talker of "
     r"each two-talker trial, 1 male, 2 female\) is \[2, 2\], but .*S1_expinfo\.csv "
     r"gives attend_mf \[1, 2\]"),
])
def test_dtu_malformed(tmp_path, edit, message):
  root = _broken_dtu(tmp_path, edit)
  with pytest.raises(DatasetError, match=message):
    list(dtu.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE))


@pytest.mark.parametrize("form, what", [
    ("v5 table", "a MATLAB table object"),       # scipy: a MatlabOpaque under 'None'
    ("v7.3 table", "a MATLAB table object"),     # pymatreader: the uint32 reference
    ("not a struct", r"not readable as a struct \(ndarray\)"),
])
def test_dtu_expinfo_table_explains_export(tmp_path, form, what):
  """The published expinfo is a MATLAB table, stored as MATLAB stores objects (no
  Python reader here decodes it): without an exported copy the error names the
  file and variable and says how to export it (the README's recipe)."""
  root = str(tmp_path / "src")
  if form == "not a struct":
    make_dtu(root, sidecar_subjects=(1, 2))
    os.remove(os.path.join(root, "EEG", "S1_expinfo.csv"))
    _set_mat(root, lambda v: v.update(expinfo=np.arange(3.0)))
  else:
    make_dtu(root, sidecar_subjects=(2,), table_subjects=(1,),
             v73_subjects=(1,) if form == "v7.3 table" else ())
  with pytest.raises(DatasetError, match=(
      rf"S1\.mat: variable 'expinfo' is {what}: the published expinfo is a MATLAB table"
      r".*S1_expinfo\.csv or S1\.csv.*README, Data: DTU.*load\('S1\.mat','expinfo'\); "
      r"writetable\(expinfo,'S1_expinfo\.csv'\)")):
    list(dtu.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE, subjects=["S1"]))


def test_dtu_v73_reads_as_v5(tmp_path, dtu_recs):
  """The same subjects saved as MATLAB v7.3 (HDF5: cells and struct arrays as
  references, S2's expinfo the published table beside its CSV export) give the
  recordings of the v5 fixture."""
  root = make_dtu(str(tmp_path / "src"), v73_subjects=(1, 2), table_subjects=(2,))
  with h5py.File(os.path.join(root, "EEG", "S1.mat")) as f:       # really v7.3
    assert f["data/event/eeg/sample"].dtype == h5py.ref_dtype
  recs = list(dtu.iter_recordings(root, sample_rate=SR_OUT, eeg_rate=EEG_RATE))
  assert [(r.subject, r.trial) for r in recs] == [(r.subject, r.trial) for r in dtu_recs]
  for a, b in zip(recs, dtu_recs):
    np.testing.assert_allclose(a.eeg, b.eeg, rtol=1e-6, atol=1e-6)
    for k in ("attended", "unattended", "noisy"):
      np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.stimuli == b.stimuli and a.provenance == b.provenance


# ------------------------------------------------- through prepare to the layout ----

# The two run the same prepare -> layout -> train path; the cocktail reader's own cases
# are above, so its end-to-end run is in the slow tier (make test's 15-minute budget).
@pytest.mark.parametrize("dataset, option", [
    pytest.param("cocktail", ["--cocktail_bad_channels", "auto"], marks=pytest.mark.slow),
    ("dtu", ["--dtu_bad_z", "6"])])
def test_prepare_layout_opens_and_trains(dataset, option, cocktail_src, dtu_src, tmp_path):
  from neurocodec_jax.data import open_split  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data.prepare import build  # pylint: disable=g-import-not-at-top
  from tests.conftest import tiny_config  # pylint: disable=g-import-not-at-top
  src, channels = (cocktail_src, 128) if dataset == "cocktail" else (dtu_src, 64)
  module = cocktail if dataset == "cocktail" else dtu
  out = str(tmp_path / dataset)
  # Two trials per subject: within-trial is the protocol that fills all three splits.
  assert cli([dataset, "--src", src, "--out", out, "--segment_seconds", "1",
              "--sample_rate", str(SR_OUT), "--protocol", "within-trial",
              "--val_fraction", "0.25", "--test_fraction", "0.25", "--quiet"]
             + option) == 0
  with open(os.path.join(out, "manifest.json")) as f:
    manifest = json.load(f)
  for key in ("doi", "record", "version"):
    assert manifest["source"][key] == module.SOURCE[key]
  assert manifest["code"] == build.code_version()
  config = tiny_config(out, eeg_channels=channels)
  for split in ("train", "val", "test"):
    source = open_split(config, split, fields=("noisy", "clean", "eeg", "subject"))
    assert len(source) > 0
    ex = source[0]
    assert ex["noisy"].shape == ex["clean"].shape == (1, SR_OUT)
    assert ex["eeg"].shape == (channels, EEG_RATE)
    assert 1 < np.std(ex["eeg"]) < 100                   # microvolts
  fx.train_two_steps(out, str(tmp_path / "run"), channels)


def test_cocktail_default_rate_is_what_the_cocktail_preset_reads(cocktail_src, tmp_path):
  """``prepare cocktail`` without --sample_rate writes data/cocktail as the cocktail
  preset (root data/cocktail, 44.1 kHz DAC) checks it; the old 16 kHz default did not."""
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import hdf5  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("cocktail")
  assert config.root == "data/cocktail"
  outs = {}
  for name, rate in (("default", []), ("16k", ["--sample_rate", "16000"])):
    outs[name] = str(tmp_path / name)
    assert cli(["cocktail", "--src", cocktail_src, "--out", outs[name], "--quiet",
                "--segment_seconds", "1", "--protocol", "within-trial",
                "--cocktail_bad_channels", "none"] + rate) == 0
  config.root, config.data.segment_seconds = outs["default"], 1.0
  info = hdf5.inspect_split_from_config(config, "train")
  assert info.audio_length == 44100 // 512 * 512 and info.eeg_channels == 128
  config.root = outs["16k"]
  with pytest.raises(hdf5.DataError, match="does not match 1.0 s at 44100 Hz"):
    hdf5.inspect_split_from_config(config, "train")


def _break_cocktail_run(root):
  """Subject 18's run 3 without its 'mastoids' (subject 1 reads first, and fine)."""
  path = os.path.join(root, "EEG", "Subject18", "Subject18_Run3.mat")
  m = scipy.io.loadmat(path)
  scipy.io.savemat(path, {k: v for k, v in m.items()
                          if not k.startswith("__") and k != "mastoids"})


@pytest.mark.parametrize("dataset, make, message", [
    ("cocktail", lambda root: _break_cocktail_run(make_cocktail(root)),
     r"Subject18_Run3\.mat: missing field 'mastoids'"),
    ("dtu", lambda root: make_dtu(root, fsample={2: 256}),
     r"S2\.mat: field 'data\.fsample\.eeg' is 256, expected 512 \(the DTU release's raw "
     r"EEG rate"),
    ("dtu", lambda root: make_dtu(root, sidecar_subjects=(), table_subjects=(2,)),
     r"S2\.mat: variable 'expinfo' is a MATLAB table object.*writetable"),
])
def test_prepare_malformed_names_file_and_field_and_leaves_nothing(
    tmp_path, capsys, monkeypatch, dataset, make, message):
  """Through the command line: the first subject is read (and cached) before the
  second's file fails; the error names file and field, and neither the layout nor
  its per-subject cache (``out.partial``) is left."""
  from neurocodec_jax.data.prepare import build  # pylint: disable=g-import-not-at-top
  cached = []
  finish = build.SubjectWriter.finish
  def spy(writer):
    cached.append(os.path.basename(writer.final))
    finish(writer)
  monkeypatch.setattr(build.SubjectWriter, "finish", spy)
  root = str(tmp_path / "src")
  make(root)
  out = tmp_path / "out"
  assert cli([dataset, "--src", root, "--out", str(out), "--segment_seconds", "1",
              "--sample_rate", str(SR_OUT), "--protocol", "within-trial", "--quiet"]) == 2
  err = capsys.readouterr().err
  assert re.search(message, err), err
  assert cached == [("Subject1" if dataset == "cocktail" else "S1")]   # was on disk
  assert not os.path.exists(out) and not os.path.exists(f"{out}.partial")
  assert fx.nothing_left(out)
