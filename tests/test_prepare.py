"""python -m neurocodec_jax.data.prepare: fixture datasets in the published formats,
through the readers and protocols, to a layout that opens and trains."""

import json
import logging
import math
import os
import re
import subprocess
import sys
import types

import h5py
import numpy as np
import pytest

from neurocodec_jax import evaluation
from neurocodec_jax.data import open_split
from neurocodec_jax.data.prepare import (DatasetError, build, cocktail, dtu, files, kul,
                                         kulmix, protocols, signals)
from neurocodec_jax.data.prepare.__main__ import main as cli
from tests import prepare_fixtures as fx
from tests.conftest import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = build.Settings(segment_seconds=1.0)      # tiny_config's windows
WINDOW_FIELDS = ("noisy", "clean", "unattended", "eeg", "subject")


@pytest.fixture(scope="module")
def kul_src(tmp_path_factory):
  return fx.write_kul(str(tmp_path_factory.mktemp("kul") / "src"))


@pytest.fixture(scope="module")
def kulmix_src(tmp_path_factory):
  return fx.write_kulmix(str(tmp_path_factory.mktemp("kulmix") / "src"), trials=3)


def prepare(dataset, src, out, protocol="trial-held-out", options=None, **protocol_args):
  return build.prepare(dataset, src, str(out), settings=SETTINGS,
                       protocol=protocols.Protocol(name=protocol, **protocol_args),
                       options=options, progress=False)


def windows(manifest, split):
  w = manifest["windows"][split]
  return list(zip(w["subject"], w["trial"], w["onset"]))


def units(manifest, split):
  """``{(subject, trial unit)}`` of a split's windows (the unit trial-held-out keeps)."""
  unit = {(r["subject"], r["trial"]): r["unit"] for r in manifest["recordings"]}
  return {(s, unit[s, t]) for s, t, _ in windows(manifest, split)}


nothing_left = fx.nothing_left


# ------------------------------------------------------------------ KU Leuven ----

@pytest.fixture(scope="module")
def kul_trained(tmp_path_factory):
  """KUL prepared and trained two steps: ``(out, manifest, workdir, config, result)``;
  the KUL-mix test trains on the same shapes, reusing ``result["run"]``'s programs."""
  # 3 subjects x 4 main trials of 3 s (the shorter story runs 3.5 s): 3 windows each;
  # one trial per subject validates, one tests.
  tmp = tmp_path_factory.mktemp("kul_trained")
  src = fx.write_kul(str(tmp / "src"), seconds=3.0, story_seconds=(4.0, 3.5),
                     repetition=False)
  out = tmp / "kul"
  manifest = prepare("kul", src, out)
  workdir = str(tmp / "run")
  config, result = fx.train_two_steps(str(out), workdir, eeg_channels=64)
  return out, manifest, workdir, config, result


def test_kul_opens_trains_and_evaluates_with_its_protocol(kul_trained):
  out, manifest, workdir, config, _ = kul_trained
  assert manifest["dataset"] == "kul" and manifest["source"]["doi"] == "10.5281/zenodo.4004271"
  assert manifest["preprocessing"]["eeg"].startswith("the reader's recipe")
  assert "1-32 Hz" in manifest["preprocessing"]["reader"]
  assert manifest["source"]["version"] == "2.0"
  assert manifest["code"] == build.code_version()
  assert manifest["protocol"]["counts"] == {"train": 18, "val": 9, "test": 9}
  assert len(manifest["recordings"]) == 12
  for split, n in manifest["protocol"]["counts"].items():
    source = open_split(tiny_config(str(out), eeg_channels=64), split, fields=WINDOW_FIELDS)
    assert len(source) == n and source.info.eeg_units == "microvolts"
    item = source[n - 1]
    assert item["noisy"].shape == (1, 16000) and item["eeg"].shape == (64, 128)
    np.testing.assert_allclose(item["noisy"], item["clean"] + item["unattended"], atol=1e-6)
    subject = windows(manifest, split)[n - 1][0]
    assert item["subject"] == manifest["subjects"][subject]
  # Trained two steps by the fixture (fx.train_two_steps); evaluated here.
  evaluated = evaluation.evaluate(config, workdir=workdir, split="test", perceptual=False)
  assert evaluated["protocol"]["name"] == "trial-held-out"
  assert evaluated["protocol"]["dataset"] == "kul"
  saved = json.load(open(os.path.join(evaluated["out_dir"], "metrics.json")))
  assert saved["protocol"]["counts"]["test"] == 9


def test_protocols_keep_their_promises(kul_src, tmp_path, caplog):
  held = prepare("kul", kul_src, tmp_path / "trial", seed=3)
  subjects = {"S1", "S2", "S3"}
  for split in protocols.SPLITS:
    assert {s for s, _ in units(held, split)} == subjects      # every subject everywhere
  train, val, test = (units(held, s) for s in protocols.SPLITS)
  assert not (train & val or train & test or val & test)       # no trial in two splits

  by_subject = prepare("kul", kul_src, tmp_path / "subject", protocol="subject-held-out")
  seen = {s: {w[0] for w in windows(by_subject, s)} for s in protocols.SPLITS}
  assert seen == {"train": {"S1"}, "val": {"S3"}, "test": {"S2"}}   # the original's choice
  explicit = prepare("kul", kul_src, tmp_path / "explicit", protocol="subject-held-out",
                     val_subjects=("S1",), test_subjects=("S2",))
  assert {w[0] for w in windows(explicit, "train")} == {"S3"}

  with caplog.at_level(logging.WARNING):
    within = prepare("kul", kul_src, tmp_path / "within", protocol="within-trial",
                     val_fraction=0.2, test_fraction=0.2)
  assert "Rotaru et al. 2024, J. Neural Eng. 21:016017" in caplog.text
  # Every trial in every split, split by time: train first, then val, then test.
  assert units(within, "train") == units(within, "test") == units(within, "val")
  last = {}
  for split in protocols.SPLITS:
    for s, t, onset in windows(within, split):
      assert onset >= last.get((s, t), 0)
      last[s, t] = onset


def test_kul_reads_the_release_fields(kul_src):
  recs = list(kul.iter_recordings(kul_src, sample_rate=16000, eeg_rate=128,
                                  subjects=["S2"], trials="all"))
  assert [r.trial for r in recs] == ["1", "2", "3", "4", "9"]
  for r in recs:
    r.validate(sample_rate=16000, eeg_rate=128)
    assert r.eeg.shape == (768, 64)
    track = r.provenance["attended_track"]
    assert r.stimuli[0].endswith(f"track{track}") and r.provenance["dry"][0].endswith("_dry.wav")
    left, right = r.provenance["presented"]
    assert (left if r.provenance["attended_ear"] == "L" else right).startswith(
        r.provenance["dry"][0][:-len("dry.wav")])
    # Average reference: the channels sum to zero at every sample.
    assert np.abs(r.eeg.sum(1)).max() < 1e-3 * np.abs(r.eeg).max()
  # The repetition replays part 1 (stimulus ids without rep_), read from rep_ files.
  assert recs[-1].stimuli == ("part1_track1", "part1_track2")
  assert recs[-1].provenance["dry"][0] == "rep_part1_track1_dry.wav"
  main = list(kul.iter_recordings(kul_src, sample_rate=16000, eeg_rate=64, subjects=["S1"],
                                  eeg=signals.EEGSettings(1.0, 20.0, "Cz")))
  assert len(main) == 4 and main[0].eeg.shape == (384, 64)
  assert np.abs(main[0].eeg[:, kul.channel_names().index("Cz")]).max() < 1e-9


@pytest.mark.parametrize("break_it, names", [
    ("missing stimulus", ["S2.mat: trials{3}.stimuli", "part7_track2_dry.wav", "not found"]),
    ("wrong sampling rate", ["S2.mat: trials{2}", "'FileHeader.SampleRate' is 256",
                             "expected 128"]),
    ("missing field", ["S2.mat: trials{2}", "missing field 'attended_ear'"]),
    ("attended track", ["S2.mat: trials{1}", "'attended_track' is 2", "track 2"]),
])
def test_kul_malformed_inputs_name_file_and_field_and_leave_nothing(tmp_path, break_it, names):
  def edit(subject, i, trial):
    if subject != 2:
      return
    if break_it == "wrong sampling rate" and i == 1:
      trial["FileHeader"]["SampleRate"] = 256.0
    if break_it == "missing field" and i == 1:
      del trial["attended_ear"]
    if break_it == "attended track" and i == 0:
      trial["attended_track"] = 2.0
    if break_it == "missing stimulus" and i == 2:       # names a part not in stimuli/
      trial["stimuli"][0, 0] = trial["stimuli"][1, 0] = "part7_track2_hrtf.wav"
  src = fx.write_kul(str(tmp_path / "src"), subjects=2, seconds=3.0,
                     story_seconds=(4.0, 3.5), edit=edit)
  out = tmp_path / "out"
  with pytest.raises(DatasetError) as e:
    prepare("kul", src, out)
  for name in names:
    assert name in str(e.value), (name, str(e.value))
  assert nothing_left(out)          # neither the layout nor the per-subject cache


def test_interrupted_run_resumes_with_the_next_subject(kul_src, tmp_path, monkeypatch):
  asked = []

  def reader(fail_on):
    """The KUL reader, interrupted (as by Ctrl-C) when it reaches subject ``fail_on``."""
    def iter_recordings(src, *, subjects=None, **kwargs):
      asked.append(list(subjects))
      for r in kul.iter_recordings(src, subjects=subjects, **kwargs):
        if r.subject == fail_on:
          raise KeyboardInterrupt
        yield r
    return types.SimpleNamespace(iter_recordings=iter_recordings,
                                 list_subjects=kul.list_subjects)

  monkeypatch.setitem(build.READERS, "kul-flaky", reader("S2"))
  out = tmp_path / "out"
  with pytest.raises(KeyboardInterrupt):
    prepare("kul-flaky", kul_src, out)
  assert not os.path.exists(out)
  assert sorted(os.listdir(f"{out}.partial")) == ["S1", "cache_key.json"]
  monkeypatch.setitem(build.READERS, "kul-flaky", reader(None))
  resumed = prepare("kul-flaky", kul_src, out)
  assert asked == [["S1"], ["S2"], ["S2"], ["S3"]]   # one call per subject; S1 kept
  assert not os.path.exists(f"{out}.partial")
  fresh = prepare("kul", kul_src, tmp_path / "fresh")
  assert resumed["windows"] == fresh["windows"]
  for split in protocols.SPLITS:
    for kind in ("noisy", "eegs", "subjects"):
      name = f"{split}/{kind}_{split}.h5"
      with h5py.File(out / name) as a, h5py.File(tmp_path / "fresh" / name) as b:
        np.testing.assert_array_equal(a[f"{kind}_{split}="][...], b[f"{kind}_{split}="][...])


def test_exclude_repeated_drops_windows_heard_in_held_out_splits(kul_src, tmp_path):
  w = lambda i, unit, stim: protocols.Window(i, "S1", unit, unit, 0.0, 0, 0, stim)
  ws = [w(0, "1", ("a", "b")), w(1, "2", ("c", "d")), w(2, "3", ("a", "e")),
        w(3, "4", ("f", "g")), w(4, "5", ("c", "h"))]
  splits, details = protocols.exclude_repeated(ws, ["test", "val", "train", "train", "val"])
  # Test keeps everything; val shares nothing with test; train loses (a, e), heard in
  # test, and keeps (f, g).
  assert splits == ["test", "val", None, "train", "val"]
  assert details["dropped_windows"] == {"train": 1, "val": 0, "test": 0}
  # The KUL fixture reuses two story parts across trials and subjects: holding any
  # trial out empties training, which is an error, not an empty split. The layout is
  # not written; the preprocessed recordings stay for a rerun with other settings.
  out = tmp_path / "out"
  with pytest.raises(ValueError, match=r"leaves split\(s\) \[.*'train'.*exclude_repeated"):
    prepare("kul", kul_src, out, exclude_repeated=True)
  assert not os.path.exists(out) and os.path.isdir(f"{out}.partial")
  assert prepare("kul", kul_src, out)["protocol"]["counts"]["train"] == 36


# ------------------------------------------------------------------- KUL-mix ----

def test_kulmix_recipe_split_mixtures_and_training(kulmix_src, kul_trained, tmp_path, caplog):
  out = tmp_path / "mix"
  with caplog.at_level(logging.WARNING):
    manifest = prepare("kulmix", kulmix_src, out, protocol="recipe")
  assert "Rotaru" in caplog.text          # the recipe splits each trial by time
  # Rows per trial: train 4 s, val 2 s, test 2 s; 3 subjects x 3 trials.
  assert manifest["protocol"]["counts"] == {"train": 36, "val": 18, "test": 18}
  config = tiny_config(str(out), eeg_channels=64)
  val = open_split(config, "val", fields=WINDOW_FIELDS)
  rows = [r for r in manifest["recordings"] if r["split"] == "val"]
  assert all(r["provenance"]["snr_db"] == 3 for r in rows)
  # A val row is two windows: over the row the interferer is 3 dB above the target.
  first = [val[i] for i in range(2)]
  target = np.concatenate([x["clean"][0] for x in first])
  other = np.concatenate([x["unattended"][0] for x in first])
  assert abs(10 * np.log10(np.mean(other ** 2) / np.mean(target ** 2)) - 3) < 0.01
  for x in first:
    np.testing.assert_allclose(x["noisy"], x["clean"] + x["unattended"], atol=1e-6)
  # The EEG is the trial's, from the target start (4 s), as published.
  s, t = rows[0]["subject"], rows[0]["provenance"]["eeg_file"]
  eeg = np.load(os.path.join(kulmix_src, "eeg", t))
  np.testing.assert_allclose(first[0]["eeg"].T, eeg[4 * 128:5 * 128], rtol=1e-6)
  assert manifest["subjects"][s] == first[0]["subject"]
  fx.train_two_steps(str(out), str(tmp_path / "run"), eeg_channels=64,
                     reuse=kul_trained[4]["run"])


def test_kulmix_trial_held_out_keeps_a_trials_rows_together(kulmix_src, tmp_path):
  manifest = prepare("kulmix", kulmix_src, tmp_path / "mix", val_count=1, test_count=1)
  train, val, test = (units(manifest, s) for s in protocols.SPLITS)
  assert not (train & val or train & test or val & test)
  assert {u for _, u in train | val | test} == {"1", "2", "3"}   # KUL trials, not rows


def test_recipe_mix_follows_the_recipe():
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal(800) * 0.1, rng.standard_normal(800) * 0.3
  power = lambda x: np.mean(x ** 2)
  mix, t, i = kulmix.recipe_mix(a, b, 0.0)
  np.testing.assert_array_equal(t, a)          # SNR 0: added as stored
  np.testing.assert_array_equal(i, b)
  _, t, i = kulmix.recipe_mix(a, b, 0.0, "neurocodec")
  assert math.isclose(power(t), power(i))
  for snr in (-5.0, 4.0):
    mix, t, i = kulmix.recipe_mix(a, b, snr)
    assert math.isclose(10 * np.log10(power(i) / power(t)), snr, abs_tol=1e-9)
    np.testing.assert_allclose(mix, t + i)
    # Neither source is amplified: the louder is divided by the gain.
    assert math.isclose(power(t if snr < 0 else i), power(a), rel_tol=1e-9)
  mix, t, i = kulmix.recipe_mix(a * 20, b * 20, 6.0)
  assert math.isclose(np.abs(mix).max(), 1.0)                   # peak-normalized


@pytest.mark.parametrize("break_it, names", [
    ("missing wav", ["line 1 column 4 (target wav)", "part1_track1_dry.wav", "not found"]),
    ("missing eeg", ["S3Tra2.npy", "EEG file not found"]),
    ("bad column", ["mixture_data_list_2mix.csv line 3", "column 9 (SNR)", "'loud'"]),
    ("short eeg", ["S1Tra1.npy has 8.000 s of EEG", "columns 5 and 10"]),
])
def test_kulmix_malformed_inputs(tmp_path, break_it, names):
  src = fx.write_kulmix(str(tmp_path / "src"), trials=2, rows=(
      ("train", 0, 0, 4), ("val", 4, 3, 2), ("test", 6, -3, 2)))
  csv_path = os.path.join(src, "mixture_data_list_2mix.csv")
  lines = open(csv_path).read().splitlines()
  if break_it == "missing wav":          # S1's first row targets part1_track1
    os.remove(os.path.join(src, "audio", "part1_track1_dry.wav"))
  elif break_it == "missing eeg":
    os.remove(os.path.join(src, "eeg", "S3Tra2.npy"))
  elif break_it == "bad column":
    parts = lines[2].split(",")
    parts[8] = "loud"
    lines[2] = ",".join(parts)
  elif break_it == "short eeg":          # S1 trial 1's first row: 9 s of 8
    lines[0] = lines[0].rsplit(",", 1)[0] + ",9"
  open(csv_path, "w").write("\n".join(lines) + "\n")
  out = tmp_path / "out"
  with pytest.raises(DatasetError) as e:
    prepare("kulmix", src, out, protocol="recipe")
  for name in names:
    assert name in str(e.value), (name, str(e.value))
  assert nothing_left(out)


def test_kulmix_finds_the_recipes_audio_8k_folder(tmp_path):
  """ClearerVoice-Studio's config reads the wavs from ``KUL_eeg/audio_8k/``."""
  src = fx.write_kulmix(str(tmp_path / "src"), subjects=1, trials=1, audio_dir="audio_8k")
  recs = list(kulmix.iter_recordings(src, sample_rate=16000, eeg_rate=128))
  assert len(recs) == 3 and all(r.noisy.shape == (int(r.eeg.shape[0] * 125),) for r in recs)
  os.remove(os.path.join(src, "mixture_data_list_2mix.csv"))
  with pytest.raises(DatasetError, match=r"mixture list not found .*pass it with --kulmix_list"):
    list(kulmix.iter_recordings(src, sample_rate=16000, eeg_rate=128))


def test_kulmix_reads_channel_major_eeg(tmp_path):
  src = fx.write_kulmix(str(tmp_path / "src"), subjects=1, trials=1, eeg_time_major=False)
  (r, *_) = kulmix.iter_recordings(src, sample_rate=16000, eeg_rate=128)
  assert r.eeg.shape == (512, 64) and r.group == "1" and r.split == "train"


# ------------------------------------------------------------ the manifest ----

def _git_head(tree):
  """HEAD of ``tree`` when ``tree`` is a git checkout's top level, else None."""
  try:
    top = subprocess.run(["git", "-C", tree, "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True, check=True).stdout.strip()
    if os.path.realpath(top) != os.path.realpath(tree):
      return None
    return subprocess.run(["git", "-C", tree, "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return None


def test_manifest_records_dataset_and_code_versions(tmp_path, monkeypatch):
  # Every reader names its record and version ("unversioned" where none is published).
  assert {m.__name__.rsplit(".", 1)[1]: (m.SOURCE["record"], m.SOURCE["version"])
          for m in (kul, kulmix, cocktail, dtu)} == {
      "kul": ("Zenodo 4004271", "2.0"),
      "kulmix": ("huggingface.co/datasets/alibabasglab/KUL-mix", "unversioned"),
      "cocktail": ("Dryad doi:10.5061/dryad.070jc", "unversioned"),
      "dtu": ("Zenodo 1199011", "Zenodo record 1199011 (as published)")}
  # The code: setup.py's version and, in a checkout, its commit.
  with open(os.path.join(ROOT, "setup.py")) as f:
    setup_version = re.search(r'version="([^"]+)"', f.read()).group(1)
  code = build.code_version()
  assert code["package"] == "neurocodec-jax" and code["version"] == setup_version
  assert code["git_commit"] == _git_head(ROOT)
  assert (code["git_dirty"] is None) == (code["git_commit"] is None)
  manifest = prepare("kulmix", fx.write_kulmix(str(tmp_path / "src"), subjects=1, trials=1),
                     tmp_path / "mix", protocol="recipe")
  assert manifest["code"] == code and manifest["source"]["version"] == "unversioned"
  # Without git, or from a tree that is not a checkout: no commit, and no failure.
  def no_git(*args, **kwargs):
    raise FileNotFoundError("git")
  monkeypatch.setattr(build.subprocess, "run", no_git)
  assert build.code_version() == dict(code, git_commit=None, git_dirty=None)
  monkeypatch.undo()
  monkeypatch.setattr(build, "_SOURCE_TREE", str(tmp_path))   # no setup.py, no .git
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  try:
    installed = metadata.version("neurocodec-jax")
  except metadata.PackageNotFoundError:
    installed = None
  assert build.code_version() == dict(code, version=installed, git_commit=None,
                                      git_dirty=None)


# -------------------------------------------------------------- the rest ----

def test_cli_and_module_entry_point(kul_src, tmp_path, capsys):
  out = str(tmp_path / "kul")
  code = cli(["kul", "--src", kul_src, "--out", out, "--segment_seconds", "1",
              "--protocol", "subject-held-out", "--kul_trials", "all", "--quiet"])
  assert code == 0 and "train 30 windows" in capsys.readouterr().out
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["preprocessing"]["options"]["trials"] == "all"
  assert cli(["kul", "--src", kul_src, "--out", out, "--quiet"]) == 2
  assert "exists; pass --overwrite" in capsys.readouterr().err
  # The module runs as documented (a subprocess: the real entry point).
  run = subprocess.run([sys.executable, "-m", "neurocodec_jax.data.prepare", "kul", "--src",
                        str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert run.returncode == 2 and "source folder not found" in run.stderr


def test_read_mat_errors_name_the_file_and_variable(tmp_path):
  path = str(tmp_path / "x.mat")
  import scipy.io  # pylint: disable=g-import-not-at-top
  scipy.io.savemat(path, {"other": np.zeros(3)})
  with pytest.raises(DatasetError, match=r"x\.mat: no variable 'trials'"):
    files.read_mat(path, ["trials"])
  with pytest.raises(DatasetError, match="file not found"):
    files.read_mat(str(tmp_path / "y.mat"))
  with pytest.raises(DatasetError, match=r"missing field 'a\.b' \(a has \['c'\]\)"):
    files.field({"a": {"c": 1}}, "a.b", "here")


def test_dac_hops_match_the_config_architectures():
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  assert signals.DAC_HOP_LENGTHS == {16000: 320, 24000: 320, 44100: 512}   # DAC's models
  assert neurocodec.get_config("kul").root == "data/kul"     # the CLI's default --out
  assert neurocodec.get_config("cocktail").root == "data/cocktail"


def test_default_sample_rate_is_the_presets_codec_rate(tmp_path, monkeypatch):
  """Without --sample_rate, each dataset is written at the codec rate of the preset
  that trains on it: cocktail at the cocktail preset's 44.1 kHz, the others at kul's."""
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data.prepare import __main__ as entry  # pylint: disable=g-import-not-at-top
  rate = lambda preset: neurocodec.get_config(preset).codec.arch.sample_rate
  assert {d: entry.default_sample_rate(d) for d in build.READERS} == {
      "cocktail": rate("cocktail"), "kul": rate("kul"), "kulmix": rate("kul"),
      "dtu": rate("kul")} == {"cocktail": 44100, "kul": 16000, "kulmix": 16000, "dtu": 16000}
  seen = {}

  def fake_prepare(dataset, src, out, *, settings, **kwargs):
    seen[dataset] = (settings.sample_rate, out)
    return {"protocol": {"counts": {"train": 1}}}
  monkeypatch.setattr(build, "prepare", fake_prepare)
  for dataset in build.READERS:
    assert cli([dataset, "--src", str(tmp_path), "--quiet"]) == 0
    assert seen[dataset] == (entry.default_sample_rate(dataset), f"data/{dataset}")
  assert cli(["cocktail", "--src", str(tmp_path), "--sample_rate", "16000", "--quiet"]) == 0
  assert seen["cocktail"][0] == 16000                # given, it wins


def test_dataset_protocol_of_a_root(tmp_path):
  assert evaluation.dataset_protocol(str(tmp_path)) is None
  (tmp_path / "manifest.json").write_text(json.dumps({"generator": "synthetic"}))
  assert evaluation.dataset_protocol(str(tmp_path)) is None
  (tmp_path / "manifest.json").write_text(json.dumps(
      {"dataset": "kul", "protocol": {"name": "subject-held-out"}}))
  assert evaluation.dataset_protocol(str(tmp_path)) == {"name": "subject-held-out",
                                                        "dataset": "kul"}


@pytest.mark.parametrize("settings, message", [
    (dict(name="leave-one-out"), "Unknown protocol"),
    (dict(name="within-trial", test_count=1), "need --protocol trial-held-out"),
    (dict(test_count=-1), ">= 0"),
    (dict(val_fraction=0.5, test_fraction=0.5), "below 1"),
    (dict(name="trial-held-out", val_subjects=("S1",)), "need --protocol subject-held-out"),
])
def test_protocol_settings_are_checked_before_any_work(settings, message, tmp_path):
  with pytest.raises(ValueError, match=message):
    build.prepare("kul", str(tmp_path), str(tmp_path / "out"),
                  protocol=protocols.Protocol(**settings), progress=False)
  assert not os.path.exists(tmp_path / "out.partial")
