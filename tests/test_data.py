"""HDF5 layout, validation errors, EEG units and the grain pipeline."""

import os

import h5py
import numpy as np
import pytest
from absl import flags

from neurocodec_jax.data import (AADSource, DataError, eval_dataset, find_split_files, open_split,
                                 steps_per_epoch, train_dataset)
from neurocodec_jax.data.hdf5 import inspect_split_from_config
from tests.conftest import tiny_config

N, T, TE, C = 6, 16000, 128, 8     # tiny config: 1 s at 16 kHz (hop 320), 128 Hz EEG


def write_split(root, split="train", n=N, t=T, te=TE, c=C, flat=False, keys=None,
                eeg_scale=1e-5, skip=(), extra=None):
  """Writes a valid split (or a variant) and returns its folder."""
  folder = root if flat else os.path.join(root, split)
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  data = dict(noisy=rng.uniform(-.5, .5, (n, t, 1)), clean=rng.uniform(-.5, .5, (n, t, 1)),
              eegs=rng.standard_normal((n, te, c)) * eeg_scale,
              subjects=np.arange(n, dtype=np.int32) % 2)
  data.update(extra or {})
  for kind, x in data.items():
    if kind in skip:
      continue
    with h5py.File(os.path.join(folder, f"{kind}_{split}.h5"), "w") as f:
      key = (keys or {}).get(kind, f"{kind}_{split}=")
      f.create_dataset(key, data=np.asarray(x, np.int32 if kind == "subjects" else np.float32))
  return folder


def cfg(root, **kw):
  return tiny_config(str(root), **kw)


# ------------------------------------------------------------------ layout ----

def test_round_trip_generated_dataset(tiny_dataset):
  root, config = tiny_dataset
  source = open_split(config, "train", fields=("noisy", "clean", "unattended", "eeg",
                                               "subject", "index"))
  assert len(source) == config.synthetic.n_train
  ex = source[3]
  with h5py.File(f"{root}/train/noisy_train.h5") as f:
    np.testing.assert_array_equal(ex["noisy"][0], f["noisy_train="][3, :, 0])
  with h5py.File(f"{root}/train/eegs_train.h5") as f:
    np.testing.assert_allclose(ex["eeg"], f["eegs_train="][3].T * 1e6, rtol=1e-6)
  assert ex["noisy"].shape == ex["clean"].shape == ex["unattended"].shape == (1, 16000)
  assert ex["eeg"].shape == (8, 128) and ex["eeg"].dtype == np.float32
  assert 1 < np.std(ex["eeg"]) < 100          # microvolts after conversion
  assert ex["subject"] == 1 and ex["index"] == 3


def test_flat_layout_and_key_variants(tmp_path):
  write_split(tmp_path, flat=True, keys={"noisy": "noisy_train", "clean": "whatever"})
  files = find_split_files(str(tmp_path), "train")
  assert files["noisy"] == os.path.join(tmp_path, "noisy_train.h5")
  source = open_split(cfg(tmp_path), "train")
  assert source[0]["clean"].shape == (1, T)


def test_audio_without_channel_axis(tmp_path):
  rng = np.random.default_rng(1)
  write_split(tmp_path, extra=dict(noisy=rng.uniform(-1, 1, (N, T)),
                                   clean=rng.uniform(-1, 1, (N, T))))
  assert open_split(cfg(tmp_path), "train")[1]["noisy"].shape == (1, T)


def test_pickled_source_reopens_lazily(tiny_dataset):
  import pickle
  _, config = tiny_dataset
  source = open_split(config, "val")
  first = source[0]["noisy"]
  clone = pickle.loads(pickle.dumps(source))
  assert clone._handles is None
  np.testing.assert_array_equal(clone[0]["noisy"], first)


# -------------------------------------------------------------- validation ----

def test_error_missing_split(tmp_path):
  with pytest.raises(DataError, match=r"Split 'train' not found.*noisy_train\.h5"):
    open_split(cfg(tmp_path), "train")


def test_error_missing_file(tmp_path):
  write_split(tmp_path, skip=("eegs",))
  with pytest.raises(DataError, match=r"missing file.*eegs_train\.h5"):
    open_split(cfg(tmp_path), "train")


def test_error_missing_key(tmp_path):
  folder = write_split(tmp_path)
  with h5py.File(os.path.join(folder, "clean_train.h5"), "a") as f:
    f.create_dataset("other", data=np.zeros(3))
    f["clean"] = f["clean_train="]
    del f["clean_train="]
    f["x"] = f["clean"]
    del f["clean"]
  with pytest.raises(DataError, match=r"clean_train\.h5: expected a dataset named "
                     r"'clean_train=' or 'clean_train'.*\['other', 'x'\]"):
    open_split(cfg(tmp_path), "train")


def test_error_ambiguous_key(tmp_path):
  folder = write_split(tmp_path)
  with h5py.File(os.path.join(folder, "noisy_train.h5"), "a") as f:
    f["noisy_train"] = f["noisy_train="][:]
  with pytest.raises(DataError, match=r"noisy_train\.h5: ambiguous dataset key"):
    open_split(cfg(tmp_path), "train")


def test_error_counts_differ(tmp_path):
  write_split(tmp_path, extra=dict(clean=np.zeros((N - 1, T, 1))))
  with pytest.raises(DataError, match=r"example counts differ.*clean_train\.h5: 5"):
    open_split(cfg(tmp_path), "train")


def test_error_wrong_rank(tmp_path):
  write_split(tmp_path, extra=dict(eegs=np.zeros((N, TE))))
  with pytest.raises(DataError, match=r"eegs_train\.h5 \[eegs_train=\] with shape "
                     r"\(6, 128\): EEG must be \(N, T_eeg, channels\)"):
    open_split(cfg(tmp_path), "train")


def test_error_wrong_audio_rank(tmp_path):
  write_split(tmp_path, extra=dict(noisy=np.zeros((N, T, 2))))
  with pytest.raises(DataError, match=r"noisy_train\.h5.*audio must be \(N, T, 1\)"):
    open_split(cfg(tmp_path), "train")


def test_error_wrong_channel_count(tmp_path):
  write_split(tmp_path, c=64)
  with pytest.raises(DataError, match=r"64 EEG channels, but the config has "
                     r"eeg_channels=8"):
    open_split(cfg(tmp_path), "train")


def test_error_audio_length_vs_sample_rate(tmp_path):
  write_split(tmp_path, t=44100)
  with pytest.raises(DataError, match=r"audio length 44100 samples does not match "
                     r"1.0 s at 16000 Hz"):
    open_split(cfg(tmp_path), "train")


def test_error_audio_length_not_multiple_of_hop(tmp_path):
  write_split(tmp_path, t=T - 100)
  with pytest.raises(DataError, match=r"not a multiple of the codec hop length 320"):
    open_split(cfg(tmp_path), "train")


def test_error_eeg_length(tmp_path):
  write_split(tmp_path, te=100)
  with pytest.raises(DataError, match=r"EEG length 100 does not match 1.0 s at 128 Hz"):
    open_split(cfg(tmp_path), "train")


def test_error_non_finite_at_open_and_on_read(tmp_path):
  noisy = np.zeros((N, T, 1))
  noisy[4, 10, 0] = np.nan
  write_split(tmp_path, extra=dict(noisy=noisy))
  message = r"noisy_train\.h5 \[noisy_train=\] example 4: contains non-finite"
  with pytest.raises(DataError, match=message):
    open_split(cfg(tmp_path), "train")                 # before training starts
  # With the open-time check off, reading still refuses the example.
  source = AADSource(inspect_split_from_config(
      cfg(tmp_path, **{"data.check_finite": False}), "train"))
  source[3]
  with pytest.raises(DataError, match=message):
    source[4]


def test_error_empty_split(tmp_path):
  write_split(tmp_path, n=0)
  with pytest.raises(DataError, match=r"Split 'train'.*holds no examples"):
    open_split(cfg(tmp_path), "train")


def test_error_subjects_not_integer(tmp_path):
  folder = write_split(tmp_path, skip=("subjects",))
  with h5py.File(os.path.join(folder, "subjects_train.h5"), "w") as f:
    f["subjects_train="] = np.zeros(N, np.float32)
  with pytest.raises(DataError, match=r"subjects must be integers"):
    open_split(cfg(tmp_path), "train")


# --------------------------------------------------------------- EEG units ----

@pytest.mark.parametrize("scale,units,factor", [
    (1e-5, "auto", 1e6), (10.0, "auto", 1.0), (10.0, "volts", 1e6),
    (1e-5, "microvolts", 1.0)])
def test_eeg_units(tmp_path, scale, units, factor, caplog):
  folder = write_split(tmp_path, eeg_scale=scale)
  config = cfg(tmp_path, **{"data.eeg_units": units})
  caplog.set_level("INFO")
  source = open_split(config, "train")
  assert source.info.eeg_scale == factor
  assert ("volts -> microvolts" if factor != 1 else "microvolts (x1)") in caplog.text
  with h5py.File(os.path.join(folder, "eegs_train.h5")) as f:
    np.testing.assert_allclose(source[2]["eeg"], f["eegs_train="][2].T * factor, rtol=1e-6)


def test_eeg_units_invalid(tmp_path):
  write_split(tmp_path)
  with pytest.raises(ValueError, match="eeg_units"):
    inspect_split_from_config(cfg(tmp_path, **{"data.eeg_units": "mV"}), "train")


# ---------------------------------------------------------------- pipeline ----

def _indices(batches):
  return [b["index"].tolist() for b in batches]


def test_train_pipeline_deterministic_and_reshuffled(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "train", fields=("index",))
  a = list(train_dataset(source, 4, seed=7, num_epochs=2))
  b = list(train_dataset(source, 4, seed=7, num_epochs=2))
  c = list(train_dataset(source, 4, seed=8, num_epochs=2))
  assert _indices(a) == _indices(b) and _indices(a) != _indices(c)
  assert len(a) == 2 * steps_per_epoch(16, 4, shard_count=1) == 8
  epoch1, epoch2 = sum(_indices(a[:4]), []), sum(_indices(a[4:]), [])
  assert sorted(epoch1) == sorted(epoch2) == list(range(16))
  assert epoch1 != epoch2 and epoch1 != list(range(16))


def test_train_pipeline_drops_remainder_eval_keeps_it_in_order(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "train", fields=("index",))
  train = list(train_dataset(source, 5, seed=0, num_epochs=1))
  assert [len(b["index"]) for b in train] == [5, 5, 5]
  evals = list(eval_dataset(source, 5))
  assert _indices(evals) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14], [15]]


def test_iterator_state_resumes_exactly(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "train", fields=("index", "eeg"))
  full = _indices(train_dataset(source, 4, seed=3, num_epochs=3))
  it = iter(train_dataset(source, 4, seed=3, num_epochs=3))
  seen = [next(it)["index"].tolist() for _ in range(5)]     # kill mid-epoch 2
  state = it.get_state()
  resumed = iter(train_dataset(source, 4, seed=3, num_epochs=3))
  resumed.set_state(state)
  rest = [b["index"].tolist() for b in resumed]
  assert seen + rest == full


def test_host_sharding_is_disjoint_and_complete(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "train", fields=("index",))
  shards = [sum(_indices(eval_dataset(source, 3, shard=(i, 3))), []) for i in range(3)]
  assert sorted(sum(shards, [])) == list(range(16))
  assert all(set(a).isdisjoint(b) for i, a in enumerate(shards) for b in shards[i + 1:])
  trained = [sum(_indices(train_dataset(source, 2, seed=0, num_epochs=1, shard=(i, 2))), [])
             for i in range(2)]
  assert set(trained[0]).isdisjoint(trained[1])


@pytest.fixture
def absl_flags_parsed():
  """grain's worker processes read absl flags, which the process's entry point parses:
  here, for the test, at their defaults."""
  parsed = flags.FLAGS.is_parsed()
  if not parsed:
    flags.FLAGS(["pytest"])
  yield
  if not parsed:
    flags.FLAGS.unparse_flags()


def test_worker_processes_need_parsed_flags(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "val", fields=("index",))
  assert not flags.FLAGS.is_parsed()          # nothing in the library parses them
  with pytest.raises(RuntimeError, match="grain's worker processes read absl flags"):
    eval_dataset(source, 4, num_workers=2)


def test_worker_processes_match_in_process(tiny_dataset, absl_flags_parsed):
  _, config = tiny_dataset
  source = open_split(config, "val", fields=("index", "noisy"))
  inproc = list(eval_dataset(source, 4))
  workers = list(eval_dataset(source, 4, num_workers=2))
  assert _indices(inproc) == _indices(workers)
  np.testing.assert_array_equal(inproc[1]["noisy"], workers[1]["noisy"])


# ----------------------------------------------------------- subject split ----

def test_subject_split_holds_out_last_subjects(tmp_path):
  from neurocodec_jax.data import subject_split
  subjects = np.array([2, 0, 1, 3, 0, 2, 3, 1, 0], np.int32)      # 4 subjects, pooled
  write_split(tmp_path / "pool", "all", n=9, extra=dict(subjects=subjects))
  counts = subject_split.split_by_subject(str(tmp_path / "pool"), "all",
                                          str(tmp_path / "kul"), progress=False)
  # KUL protocol: last subject (3) = val, second-to-last (2) = test.
  assert counts == dict(train=5, val=2, test=2)
  with h5py.File(tmp_path / "pool/all/noisy_all.h5") as f:
    pooled = f["noisy_all="][...]
  for split, subs in (("train", (0, 1)), ("val", (3,)), ("test", (2,))):
    rows = np.flatnonzero(np.isin(subjects, subs))
    with h5py.File(tmp_path / f"kul/{split}/subjects_{split}.h5") as f:
      np.testing.assert_array_equal(f[f"subjects_{split}="][...], subjects[rows])
    with h5py.File(tmp_path / f"kul/{split}/noisy_{split}.h5") as f:
      np.testing.assert_array_equal(f[f"noisy_{split}="][...], pooled[rows])
    assert len(open_split(cfg(tmp_path / "kul"), split)) == len(rows)   # valid layout
  explicit = subject_split.assign(subjects, val_subjects=[0], test_subjects=[1, 2])
  assert sorted(explicit["train"].tolist()) == np.flatnonzero(subjects == 3).tolist()


def test_subject_split_errors_and_atomicity(tmp_path, monkeypatch):
  from neurocodec_jax.data import subject_split
  write_split(tmp_path / "nosub", "all", skip=("subjects",))
  with pytest.raises(DataError, match=r"no subjects_all\.h5"):
    subject_split.split_by_subject(str(tmp_path / "nosub"), "all", str(tmp_path / "o1"))
  write_split(tmp_path / "two", "all", n=4)                       # subjects 0, 1 only
  with pytest.raises(DataError, match="at least 3 subjects"):
    subject_split.split_by_subject(str(tmp_path / "two"), "all", str(tmp_path / "o2"))
  with pytest.raises(DataError, match="disjoint"):
    subject_split.assign(np.arange(4), val_subjects=[1], test_subjects=[1])
  write_split(tmp_path / "pool", "all", n=6, extra=dict(subjects=np.arange(6) % 3))
  calls = []
  real = subject_split.open_dataset
  def failing(path, *a):
    calls.append(path)
    if len(calls) == 3:
      raise OSError("disk full")
    return real(path, *a)
  monkeypatch.setattr(subject_split, "open_dataset", failing)
  with pytest.raises(OSError):
    subject_split.split_by_subject(str(tmp_path / "pool"), "all", str(tmp_path / "out"),
                                   progress=False)
  assert sorted(os.listdir(tmp_path)) == ["nosub", "pool", "two"]  # nothing half-written
  monkeypatch.setattr(subject_split, "open_dataset", real)
  subject_split.split_by_subject(str(tmp_path / "pool"), "all", str(tmp_path / "out"),
                                 progress=False)
  with pytest.raises(FileExistsError):
    subject_split.split_by_subject(str(tmp_path / "pool"), "all", str(tmp_path / "out"))


def test_per_subject_models_need_every_training_trials_subject_in_range(tmp_path):
  """``model.encoding_subjects``: training refuses, naming the file, a split whose ids
  fall outside ``[0, N)`` or that has no subjects file."""
  from neurocodec_jax.data import check_subject_ids  # pylint: disable=g-import-not-at-top
  write_split(str(tmp_path / "a"))                              # ids 0, 1
  check_subject_ids(str(tmp_path / "a"), "train", 2)
  with pytest.raises(DataError, match=r"subjects_train.h5: subject ids must lie in \[0, 1\) "
                                      r"\(model.encoding_subjects=1\); 3 trials have \[1\]"):
    check_subject_ids(str(tmp_path / "a"), "train", 1)
  write_split(str(tmp_path / "b"), extra=dict(subjects=np.array([0, -1, 1, 0])))
  with pytest.raises(DataError, match=r"1 trials have \[-1\]"):
    check_subject_ids(str(tmp_path / "b"), "train", 2)
  write_split(str(tmp_path / "c"), skip=("subjects",))
  with pytest.raises(DataError, match="no subjects_train.h5, but model.encoding_subjects=2"):
    check_subject_ids(str(tmp_path / "c"), "train", 2)
