"""Nothing lost, nothing silent: the codes cache and the data check.

Codes cache: unreadable caches and partials are moved aside and recomputed, one
process computes a split at a time. Data: integer PCM is scaled, the EEG units are
decided once per dataset from robust statistics, non-finite values are reported
when a split is opened, and dataset folders respect the umask.
"""

import json
import os
import re
import socket
import stat
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from codec_bridge import precompute
from neurocodec_jax.data import DataError, open_split, synthetic
from neurocodec_jax.data import hdf5
from tests.test_data import C, N, TE, cfg, write_split
from tests.test_precompute import dataset  # pylint: disable=unused-import


def _codes(path):
  with h5py.File(path, "r") as f:
    return {k: f[k][:] for k in f.keys()}


def _clean_codes(config, dac_model, split):
  """A clean computation of ``split``'s codes, the cache then removed."""
  path = precompute.ensure_codes(config, split, dac_model, progress=False)
  codes = _codes(path)
  os.remove(path)
  return codes


def _assert_same(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def _rewrite(folder, kind, split, data):
  with h5py.File(os.path.join(folder, f"{kind}_{split}.h5"), "w") as f:
    f.create_dataset(f"{kind}_{split}=", data=data)


def _eeg(scale, seed=0):
  return np.random.default_rng(seed).standard_normal((N, TE, C)) * scale


# ------------------------------------------------------------ codes cache ----

def test_truncated_cache_is_moved_aside_and_recomputed(dataset, caplog):
  config, dac_model = dataset
  clean = _clean_codes(config, dac_model, "val")
  path = precompute.ensure_codes(config, "val", dac_model, progress=False)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)
  assert precompute.ensure_codes(config, "val", dac_model, progress=False) == path
  assert re.search(re.escape(path) + r": not a readable HDF5 file \(.*truncated file.*\)\. "
                   r"Moved it aside to " + re.escape(path) + r"\.corrupt-\d{8}-\d{6}; "
                   r"recomputing\.", caplog.text)
  aside = [n for n in os.listdir(os.path.dirname(path)) if ".corrupt-" in n]
  assert len(aside) == 1 and aside[0].startswith("dac_codes_val.h5.corrupt-")
  assert os.path.getsize(os.path.join(os.path.dirname(path), aside[0])) == size // 2  # kept
  _assert_same(_codes(path), clean)


@pytest.mark.parametrize("damage,message", [
    ("not_hdf5", r"not a readable HDF5 file \(.*file signature not found\)"),
    ("no_attrs", r"lacks readable cache attributes codec, sources and done")])
def test_unreadable_partial_is_moved_aside_and_recomputed(dataset, caplog, damage, message):
  config, dac_model = dataset
  clean = _clean_codes(config, dac_model, "val")
  partial = precompute.cache_path(config, "val") + ".partial"
  if damage == "not_hdf5":
    with open(partial, "w") as f:
      f.write("interrupted while the disk was full")
  else:
    with h5py.File(partial, "w") as f:
      f.create_dataset("noisy_codes", data=np.zeros((8, 4, 50), np.int16))
  path = precompute.ensure_codes(config, "val", dac_model, progress=False)
  assert re.search(re.escape(partial) + ": " + message + r".*\. Moved it aside to "
                   + re.escape(partial) + r"\.corrupt-", caplog.text)
  assert any(n.startswith("dac_codes_val.h5.partial.corrupt-")
             for n in os.listdir(os.path.dirname(path)))
  assert not os.path.exists(partial)
  _assert_same(_codes(path), clean)


def test_concurrent_precompute_is_refused(dataset):
  config, dac_model = dataset
  path = precompute.cache_path(config, "val")
  with precompute.codes_lock(path) as lock:          # another process computing
    holder = json.load(open(lock))
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    expected = (re.escape(path) + rf": another process \(pid {os.getpid()} on "
                + re.escape(socket.gethostname()) + r", since \d{4}-\d\d-\d\d "
                r"\d\d:\d\d:\d\d\) is computing this codes cache; refusing to compute "
                r"it twice\. Wait for it to finish \(the cache is then reused\), or, if "
                r"that process is gone, delete " + re.escape(lock) + r"\.")
    with pytest.raises(precompute.CacheBusy, match=expected):
      precompute.ensure_codes(config, "val", dac_model, progress=False)
    with pytest.raises(precompute.CacheBusy, match=expected):
      precompute.precompute_split(config, "val", dac_model, progress=False)
    assert os.path.exists(lock)                      # the holder's lock is left alone
    assert not os.path.exists(path) and not os.path.exists(path + ".partial")
  assert not os.path.exists(lock)                    # released


def test_stale_lock_is_taken_over(dataset, caplog):
  config, dac_model = dataset
  clean = _clean_codes(config, dac_model, "val")
  path = precompute.cache_path(config, "val")
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  with open(path + ".lock", "w") as f:
    json.dump(dict(pid=dead.pid, host=socket.gethostname(), since=time.time() - 3600), f)
  assert precompute.ensure_codes(config, "val", dac_model, progress=False) == path
  assert (f"Taking over the stale lock {path}.lock (its process, pid {dead.pid}, is no "
          f"longer running)") in caplog.text
  assert not os.path.exists(path + ".lock")
  _assert_same(_codes(path), clean)
  # A lock left empty (killed between creating and writing it) is stale after a minute.
  os.remove(path)
  open(path + ".lock", "w").close()
  with pytest.raises(precompute.CacheBusy, match="its lock is still being written"):
    precompute.ensure_codes(config, "val", dac_model, progress=False)
  old = time.time() - 2 * precompute.LOCK_GRACE_SECONDS
  os.utime(path + ".lock", (old, old))
  precompute.ensure_codes(config, "val", dac_model, progress=False)
  assert re.search(r"Taking over the stale lock .*\(unreadable lock, \d+ s old\)", caplog.text)


# ------------------------------------------------------------ audio dtype ----

def test_integer_pcm_audio_is_scaled(tmp_path):
  folder = write_split(tmp_path)
  rng = np.random.default_rng(3)
  q16 = rng.integers(-32768, 32768, (N, 16000, 1)).astype(np.int16)
  q32 = rng.integers(-2 ** 31, 2 ** 31, (N, 16000)).astype(np.int32)
  _rewrite(folder, "noisy", "train", q16)
  _rewrite(folder, "clean", "train", q32)
  source = open_split(cfg(tmp_path), "train")
  assert source.info.audio_scale == dict(noisy=2.0 ** -15, clean=2.0 ** -31)
  ex = source[2]
  np.testing.assert_array_equal(ex["noisy"][0], q16[2, :, 0].astype(np.float32) / 32768)
  np.testing.assert_array_equal(ex["clean"][0], q32[2].astype(np.float32) / 2 ** 31)
  assert ex["noisy"].dtype == np.float32 and np.abs(ex["noisy"]).max() <= 1


def test_precompute_encodes_integer_pcm_scaled(tmp_path):
  import codec_bridge  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(4)
  q = (rng.uniform(-0.5, 0.5, (N, 16000, 1)) * 32768).astype(np.int16)
  codes = {}
  for name, audio in (("pcm", q), ("float", q.astype(np.float32) / 32768)):
    folder = write_split(tmp_path / name)
    _rewrite(folder, "noisy", "train", audio)
    config = cfg(tmp_path / name)
    dac_model = codec_bridge.load_dac_from_config(config.codec)
    codes[name] = _codes(precompute.precompute_split(config, "train", dac_model,
                                                     progress=False))
  _assert_same(codes["pcm"], codes["float"])
  with h5py.File(tmp_path / "pcm/train/dac_codes_train.h5") as f:
    assert json.loads(f.attrs["sources"])["noisy"]["pcm_scale"] == 2.0 ** -15


def test_audio_dtype_and_range_refused(tmp_path):
  folder = write_split(tmp_path)
  _rewrite(folder, "noisy", "train", np.zeros((N, 16000, 1), np.uint8))
  with pytest.raises(DataError, match=r"noisy_train\.h5 \[noisy_train=\] with shape "
                     r"\(6, 16000, 1\): audio dtype uint8 is not supported; expected float "
                     r"audio in \[-1, 1\] or signed integer PCM \(int8, int16, int32: "
                     r"scaled by its range, int16 / 32768\)\."):
    open_split(cfg(tmp_path), "train")
  pcm_as_float = np.zeros((N, 16000, 1), np.float32)
  pcm_as_float[5, 100] = 29500.0
  _rewrite(folder, "noisy", "train", pcm_as_float)
  with pytest.raises(DataError, match=r"noisy_train\.h5 \[noisy_train=\] example 5: audio "
                     r"peaks at 2\.95e\+04; expected float audio in \[-1, 1\] \(integer PCM "
                     r"stored as floats\? divide it by 32768 for 16-bit\)\."):
    open_split(cfg(tmp_path), "train")


# -------------------------------------------------------------- EEG units ----

def test_microvolts_with_flat_channels_and_zero_trials(tmp_path, caplog):
  eeg = _eeg(10.0)                    # microvolts
  eeg[:3] = 0.0                       # all-zero trials
  eeg[:, :, :4] = 0.0                 # flat channels
  eeg[:, :, 4] = 250.0                # a constant (DC) channel
  assert np.median(np.abs(eeg[:8])) == 0.0     # what fooled the old detector
  write_split(tmp_path, extra=dict(eegs=eeg))
  caplog.set_level("INFO")
  source = open_split(cfg(tmp_path), "train")
  assert source.info.eeg_units == "microvolts" and source.info.eeg_scale == 1.0
  assert 8 < source.info.eeg_std < 12
  np.testing.assert_array_equal(source[4]["eeg"], eeg[4].T.astype(np.float32))
  assert "EEG units microvolts (x1), detected for the dataset: median per-channel std" \
      in caplog.text


@pytest.mark.parametrize("scale,unit,factor", [
    (1e-5, "volts", 1e6), (1e-2, "millivolts", 1e3), (10.0, "microvolts", 1.0),
    (1.0, "microvolts", 1.0)])        # z-scored EEG stays as it is
def test_units_detected(tmp_path, caplog, scale, unit, factor):
  eeg = _eeg(scale)
  write_split(tmp_path, extra=dict(eegs=eeg))
  caplog.set_level("INFO")
  source = open_split(cfg(tmp_path), "train")
  assert (source.info.eeg_units, source.info.eeg_scale) == (unit, factor)
  np.testing.assert_allclose(source[1]["eeg"], eeg[1].T * factor, rtol=1e-6)
  prefix = {"volts": "volts -> microvolts (x1e6)", "millivolts":
            "millivolts -> microvolts (x1e3)", "microvolts": "microvolts (x1)"}[unit]
  assert (f"EEG units {prefix}, detected for the dataset: median per-channel std "
          f"{source.info.eeg_std:.3g} over splits train (data.eeg_units=auto)") in caplog.text


def test_explicit_units_including_millivolts(tmp_path, caplog):
  write_split(tmp_path, extra=dict(eegs=_eeg(1e-2)))
  source = open_split(cfg(tmp_path, **{"data.eeg_units": "millivolts"}), "train")
  assert source.info.eeg_scale == 1e3 and source.info.eeg_units_from == ()
  source = open_split(cfg(tmp_path, **{"data.eeg_units": "volts"}), "train")
  assert source.info.eeg_scale == 1e6                # the override wins, with a warning
  assert re.search(r"data\.eeg_units=volts, but the EEG's median per-channel std "
                   r"0\.0\d+ \(.*eegs_train\.h5\) looks like millivolts", caplog.text)


def test_train_and_val_get_the_same_decision(tmp_path, caplog):
  write_split(tmp_path, "train", extra=dict(eegs=_eeg(1e-5)))
  val = _eeg(1e-5, seed=1)
  val[:, :, :6] = 0.0                 # val alone is mostly flat
  val[:4] = 0.0
  write_split(tmp_path, "val", extra=dict(eegs=val))
  caplog.set_level("INFO")
  config = cfg(tmp_path)
  infos = [open_split(config, split).info for split in ("train", "val")]
  assert [i.eeg_units for i in infos] == ["volts", "volts"]
  assert infos[0].eeg_std == infos[1].eeg_std
  assert [i.eeg_units_from for i in infos] == [("train", "val")] * 2
  # A split that is entirely flat cannot decide alone; it gets the dataset's unit.
  write_split(tmp_path, "test", extra=dict(eegs=np.zeros((N, TE, C))))
  assert open_split(config, "test").info.eeg_units == "volts"


def test_splits_in_different_units_are_refused(tmp_path):
  write_split(tmp_path, "train", extra=dict(eegs=_eeg(1e-5)))
  write_split(tmp_path, "val", extra=dict(eegs=_eeg(10.0)))
  with pytest.raises(DataError, match=r"EEG units differ across splits: .*train/eegs_train"
                     r"\.h5: median per-channel std \d\.\d+e-06 \(volts\); .*val/eegs_val\.h5: "
                     r"median per-channel std \d+\.?\d* \(microvolts\)\. Expected one unit "
                     r"for the dataset: convert the odd split\(s\)\."):
    open_split(cfg(tmp_path), "val")


def test_undecidable_units_are_refused(tmp_path):
  write_split(tmp_path, extra=dict(eegs=np.zeros((N, TE, C))))
  with pytest.raises(DataError, match=r"Cannot tell the EEG units: every channel of every "
                     r"trial in .*eegs_train\.h5 is flat or non-finite\. Set data\.eeg_units "
                     r"\(volts, millivolts or microvolts\)\."):
    open_split(cfg(tmp_path), "train")
  write_split(tmp_path, extra=dict(eegs=_eeg(1e-10)))
  with pytest.raises(DataError, match=r"Cannot tell the EEG units of .*eegs_train\.h5: the "
                     r"median per-channel std is \d\.\d+e-11, not typical of volts \(~1e-5\), "
                     r"millivolts \(~1e-2\) or microvolts \(~1\.\.100\)\. Set data\.eeg_units"):
    open_split(cfg(tmp_path), "train")
  assert open_split(cfg(tmp_path, **{"data.eeg_units": "volts"}), "train").info.eeg_scale == 1e6


# ------------------------------------------------------------ non-finite ----

def test_nan_eeg_is_reported_before_training(tmp_path):
  eeg = _eeg(1e-5)
  eeg[3, 5, 2] = np.nan
  eeg[5, 0, 0] = np.inf
  write_split(tmp_path, extra=dict(eegs=eeg))
  message = (r"eegs_train\.h5 \[eegs_train=\] example 3: contains non-finite values "
             r"\(NaN or inf\) in the EEG; 2 of 6 examples affected \(rows \[3, 5\]\)\. "
             r"Expected finite values: fix or drop these examples \(data\.check_finite="
             r"False skips this check\)\.")
  with pytest.raises(DataError, match=message):
    open_split(cfg(tmp_path), "train")
  # Precompute checks the EEG too, before encoding anything (no codec needed to fail).
  with pytest.raises(DataError, match=message):
    precompute.ensure_codes(cfg(tmp_path), "train", dac_model=object())


def test_nan_audio_is_reported_before_training(tmp_path):
  clean = np.random.default_rng(2).uniform(-.5, .5, (N, 16000, 1))
  clean[1, 7] = np.nan
  write_split(tmp_path, extra=dict(clean=clean))
  with pytest.raises(DataError, match=r"clean_train\.h5 \[clean_train=\] example 1: contains "
                     r"non-finite values \(NaN or inf\) in the clean audio; 1 of 6"):
    open_split(cfg(tmp_path), "train")


def test_data_check_runs_once_per_file_version(tmp_path, monkeypatch):
  folder = write_split(tmp_path)
  scanned = []
  real = hdf5._scan_file
  monkeypatch.setattr(hdf5, "_scan_file", lambda p, k: scanned.append(k) or real(p, k))
  config = cfg(tmp_path)
  open_split(config, "train")
  assert sorted(scanned) == ["clean", "eegs", "noisy"]
  open_split(config, "train")
  assert len(scanned) == 3                           # cached
  assert os.path.exists(os.path.join(folder, "data_check_train.json"))
  time.sleep(0.01)
  write_split(tmp_path, skip=("noisy", "clean", "subjects"), eeg_scale=2e-5)
  open_split(config, "train")
  assert scanned[3:] == ["eegs"]                     # only the changed file
  config.codec.cache_dir = str(tmp_path / "codes")   # next to the codes cache when set
  open_split(config, "train")
  assert os.path.exists(tmp_path / "codes" / "data_check_train.json")


# ------------------------------------------------------------ permissions ----

def test_synthetic_folder_is_group_readable(tmp_path):
  spec = synthetic.SyntheticSpec(n_train=1, n_val=1, n_test=1, eeg_channels=4, subjects=1,
                                 seconds=0.5)
  old = os.umask(0o022)
  try:
    out = synthetic.generate(str(tmp_path / "synthetic"), spec, progress=False)
  finally:
    os.umask(old)
  for folder in (out, os.path.join(out, "train")):
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    assert mode == 0o755, oct(mode)
  mode = stat.S_IMODE(os.stat(os.path.join(out, "train", "noisy_train.h5")).st_mode)
  assert mode & stat.S_IRGRP
