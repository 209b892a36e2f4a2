"""Nothing lost, nothing silent, in the training loop.

Corrupt checkpoints fall back to the newest readable step (kept aside, named in a
warning); no non-finite state is ever checkpointed and a non-finite step names its
cause (data fault or divergence); a workdir refuses a config its checkpoints
cannot resume; failures leave no empty folders; metrics rows stay unique.
"""

import glob
import json
import logging
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from neurocodec_jax.run import build_run
from neurocodec_jax import training as loop
from neurocodec_jax.train import checkpoint
from neurocodec_jax.train.checkpoint import CheckpointError
from tests.test_train import train_config


def config_for(root, **overrides):
  """Latent and envelope losses only (fast), 6 steps, checkpoints at 3 and 6."""
  base = {"lambda_mel": 0.0, "lambda_adv": 0.0, "lambda_feat": 0.0}
  base.update(overrides)
  return train_config(root, **base)


def _params(result):
  return jax.tree.leaves(result["state"]["g"])


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _keys(rows):
  return [(r["step"], r["split"]) for r in rows]


def _copy(src, tmp_path, name="copy"):
  dest = str(tmp_path / name)
  shutil.copytree(src, dest)
  return dest


@pytest.fixture(scope="module")
def reference(tiny_dataset, tmp_path_factory):
  """``(workdir, result)``; the other runs here reuse ``result["run"]``'s programs."""
  root, _ = tiny_dataset
  workdir = str(tmp_path_factory.mktemp("rel") / "reference")
  return workdir, loop.train_and_evaluate(config_for(root), workdir)


def train(config, workdir, reference, **kwargs):
  return loop.train_and_evaluate(config, workdir, reuse=reference[1]["run"], **kwargs)


# ------------------------------------------------------------ checkpoints ----

def _truncate_data_file(step_dir):
  # Each data file cut in half (an OCDBT file can hold superseded values: cutting
  # only one might spare every value read).
  for path in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _drop_metadata(step_dir):
  os.remove(os.path.join(step_dir, "state", "_METADATA"))


@pytest.mark.parametrize("corrupt, fault", [(_truncate_data_file, "OUT_OF_RANGE: "),
                                            (_drop_metadata, "state/_METADATA is missing")])
def test_corrupt_latest_checkpoint_falls_back_to_previous_step(
    reference, tiny_dataset, tmp_path, caplog, corrupt, fault):
  root, _ = tiny_dataset
  ref_dir, ref = reference
  workdir = _copy(ref_dir, tmp_path)
  corrupt(os.path.join(workdir, "checkpoints", "6"))
  with caplog.at_level(logging.WARNING):
    resumed = train(config_for(root), workdir, reference)
  aside = os.path.join(workdir, "checkpoints.corrupt", "6")
  assert (f"Checkpoint {workdir}/checkpoints/6 is unreadable ({fault}" in caplog.text
          and f"moved to {aside}; using step 3 instead." in caplog.text), caplog.text
  assert os.path.isdir(aside)                                  # kept, not deleted
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert resumed["step"] == 6
  for a, b in zip(_params(ref), _params(resumed)):
    np.testing.assert_array_equal(a, b)
  # Steps 4-6 were redone: their rows are not repeated.
  assert _keys(_rows(workdir)) == _keys(_rows(ref_dir))


def test_no_readable_checkpoint_is_a_clear_error(reference, tiny_dataset, tmp_path):
  root, _ = tiny_dataset
  workdir = _copy(reference[0], tmp_path)
  _drop_metadata(os.path.join(workdir, "checkpoints", "6"))
  _truncate_data_file(os.path.join(workdir, "checkpoints", "3"))
  saved = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(CheckpointError, match=(
      rf"No readable checkpoint in {workdir}/checkpoints \(step 6: state/_METADATA is missing"
      rf".*; step 3: OUT_OF_RANGE.*\)\. If the config changed.*move {workdir}/checkpoints "
      rf"away to start afresh")):
    train(config_for(root), workdir, reference)
  # Nothing set aside (the template may be what is wrong), nothing rewritten.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert not os.path.exists(os.path.join(workdir, "checkpoints.corrupt"))
  assert open(os.path.join(workdir, "config.json")).read() == saved


def test_corrupt_best_checkpoint_is_set_aside_and_rewritten(reference, tiny_dataset, tmp_path,
                                                            caplog):
  root, _ = tiny_dataset
  workdir = _copy(reference[0], tmp_path)
  (best,) = os.listdir(os.path.join(workdir, "best"))
  _drop_metadata(os.path.join(workdir, "best", best))
  with caplog.at_level(logging.WARNING):
    result = train(config_for(root, **{"train.max_steps": 8}), workdir, reference)
  assert (f"Checkpoint {workdir}/best/{best} is unreadable (state/_METADATA is missing)"
          in caplog.text)
  assert "The next validation writes a new best checkpoint." in caplog.text
  assert os.path.isdir(os.path.join(workdir, "best.corrupt", best))
  assert result["step"] == 8 and os.listdir(os.path.join(workdir, "best")) == ["8"]


def test_evaluation_falls_back_without_moving(reference, tiny_dataset, tmp_path, caplog):
  root, _ = tiny_dataset
  workdir = _copy(reference[0], tmp_path)
  _drop_metadata(os.path.join(workdir, "checkpoints", "6"))
  run = build_run(config_for(root), {"test": ["noisy_codes", "eeg"]}, reuse=reference[1]["run"])
  with caplog.at_level(logging.WARNING):
    _, path = run.restore_generator(workdir=workdir, which="latest")
  assert path == os.path.join(workdir, "checkpoints", "3")
  assert f"{workdir}/checkpoints/6 is unreadable" in caplog.text
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]  # a reader


# ------------------------------------------------------------- non-finite ----

def _state_leaves(step_dir):
  restored = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
  return [np.asarray(x) for x in jax.tree.leaves(restored)]


def test_overflowing_lr_is_divergence_and_never_checkpointed(reference, tiny_dataset, tmp_path,
                                                            caplog):
  root, _ = tiny_dataset
  workdir = str(tmp_path / "lr")
  steps = {"train.checkpoint_every": 1, "train.eval_every": 100}
  train(config_for(root, **steps, **{"train.max_steps": 2}), workdir, reference)
  huge = config_for(root, lr=1e39, **steps, **{"train.max_steps": 4})
  # A harmless change: allowed, named, recorded.
  with caplog.at_level(logging.WARNING), pytest.raises(FloatingPointError, match=(
      r"Non-finite updated parameters or optimizer state at step 3; the parameters were "
      r"kept at step 2\. Last good checkpoint: step 2 in .*The batch's inputs are finite and "
      r"in range, so the training diverged: lower lr \(now 1e\+39\) or train.grad_clip")):
    train(huge, workdir, reference)
  assert "lr: 0.001 -> 1e+39" in caplog.text and "train.max_steps: 2 -> 4" in caplog.text
  assert json.load(open(os.path.join(workdir, "config.json")))["lr"] == 1e39
  history = [json.loads(l) for l in open(os.path.join(workdir, "config_history.jsonl"))]
  assert history[-1]["step"] == 2 and history[-1]["changes"]["lr"] == [0.001, 1e39]
  # "skip": no update is applied, and every checkpoint written stays finite.
  huge.train.nonfinite = "skip"
  skipped = train(huge, workdir, reference)
  assert skipped["step"] == 4
  kept = _state_leaves(os.path.join(workdir, "checkpoints", "4"))
  for a, b in zip(_state_leaves(os.path.join(workdir, "checkpoints", "3")), kept):
    if a.dtype.kind == "f":
      np.testing.assert_array_equal(a, b)
  for step in os.listdir(os.path.join(workdir, "checkpoints")):
    assert all(np.all(np.isfinite(x)) for x in _state_leaves(
        os.path.join(workdir, "checkpoints", step)) if x.dtype.kind == "f"), step


def _poison(monkeypatch, call, example, value):
  """Sets one EEG value of ``example`` in the ``call``-th training batch."""
  original, calls = loop.shard_batch, []

  def poisoned(batch, sharding):
    calls.append(1)
    if len(calls) == call:
      eeg = np.array(batch["eeg"])
      eeg[example, 0, 5] = value
      batch["eeg"] = eeg                  # in place: the batch the loop diagnoses
    return original(batch, sharding)

  monkeypatch.setattr(loop, "shard_batch", poisoned)


@pytest.mark.parametrize("value, what", [(1e30, r"values up to \|x\| = 1e\+30"),
                                         (np.nan, "1 non-finite values")])
def test_data_fault_names_the_example_and_leaves_no_empty_folders(
    reference, tiny_dataset, tmp_path, monkeypatch, value, what):
  root, _ = tiny_dataset
  workdir = str(tmp_path / "data_fault")
  _poison(monkeypatch, 2, 1, value)
  with pytest.raises(FloatingPointError, match=(
      rf"Non-finite .* at step 2; the parameters were kept at step 1\. Last good checkpoint: "
      rf"none\. Data fault, not divergence: the train batch's inputs are non-finite or "
      rf"absurdly large \(\|x\| > 1e\+06\): example 1 of the batch \(dataset index \d+\): "
      rf"'eeg' has {what}\. Fix or remove those examples; lowering lr will not help\.")):
    train(config_for(root, **{"train.eval_every": 100}), workdir, reference)
  # Failed before its first checkpoint: no empty checkpoints/ or best/, no leftovers.
  assert sorted(os.listdir(workdir)) == ["config.json", "metrics.jsonl"]
  assert _keys(_rows(workdir)) == [(1, "train")]


def test_failure_before_anything_leaves_no_workdir(tiny_dataset, tmp_path):
  workdir = str(tmp_path / "never")
  with pytest.raises(Exception):
    loop.train_and_evaluate(config_for(str(tmp_path / "no_data")), workdir)
  assert not os.path.exists(workdir)


def test_full_disk_is_one_clear_error(reference, tiny_dataset, tmp_path, monkeypatch):
  root, _ = tiny_dataset
  workdir = str(tmp_path / "full")
  monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                      lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
  with pytest.raises(OSError, match=(
      rf"Not enough disk space for checkpoint step 3 in {workdir}/checkpoints: it needs "
      rf"about [\d.]+ MB, 0\.0 MB are free\. Free space and re-run: training starts afresh "
      rf"\(no checkpoint yet\)\.")):
    train(config_for(root, **{"train.eval_every": 100}), workdir, reference)
  assert sorted(os.listdir(workdir)) == ["config.json", "metrics.jsonl"]


# ---------------------------------------------------------------- workdir ----

def test_shape_changing_config_is_refused_and_config_json_kept(reference, tiny_dataset,
                                                               tmp_path):
  root, _ = tiny_dataset
  workdir = _copy(reference[0], tmp_path)
  before = {name: open(os.path.join(workdir, name), "rb").read()
            for name in ("config.json", "metrics.jsonl")}
  listing = sorted(os.listdir(workdir))
  with pytest.raises(loop.ConfigMismatch, match=(
      r"holds a run trained with another config; these changes alter its model, optimizer "
      r"state or data, so it cannot resume:\n  batch_size: 4 -> 8\n  hidden_dim: 16 -> 32\n"
      r"Use a new --workdir")):
    train(config_for(root, hidden_dim=32, batch_size=8), workdir, reference)
  assert sorted(os.listdir(workdir)) == listing
  for name, data in before.items():
    assert open(os.path.join(workdir, name), "rb").read() == data, name


def test_harmless_config_change_is_allowed_with_a_warning(reference, tiny_dataset, tmp_path,
                                                          caplog):
  root, _ = tiny_dataset
  workdir = _copy(reference[0], tmp_path)
  config = config_for(root, **{"train.log_every": 2, "train.keep_checkpoints": 3})
  with caplog.at_level(logging.WARNING):
    result = train(config, workdir, reference)
  assert result["step"] == 6
  assert (f"Resuming {workdir} with changed settings:\n  train.keep_checkpoints: 2 -> 3\n"
          f"  train.log_every: 1 -> 2") in caplog.text
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["log_every"] == 2


def test_switching_a_loss_term_on_is_refused(reference, tiny_dataset, tmp_path):
  root, _ = tiny_dataset
  workdir = _copy(reference[0], tmp_path)
  with pytest.raises(loop.ConfigMismatch, match=r"lambda_adv: 0\.0 -> 1\.0"):
    train(config_for(root, lambda_adv=1.0), workdir, reference)


def test_metrics_rows_unique_after_kill_and_resume(reference, tiny_dataset, tmp_path):
  root, _ = tiny_dataset
  workdir = str(tmp_path / "killed")
  train(config_for(root), workdir, reference, stop_after=5)   # rows 1-5, val 4
  train(config_for(root), workdir, reference)                 # resumes from 3
  assert _keys(_rows(workdir)) == _keys(_rows(reference[0]))


def test_a_bad_test_split_fails_before_training(tiny_dataset, tmp_path):
  """Training opens train and val only; the test split is validated first, so EEG with
  the wrong channel count there fails at once, naming the file, not at evaluation."""
  import h5py  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import DataError  # pylint: disable=g-import-not-at-top
  root = str(tmp_path / "data")
  shutil.copytree(tiny_dataset[0], root)
  path = glob.glob(os.path.join(root, "**", "eegs_test.h5"), recursive=True)[0]
  with h5py.File(path, "r+") as f:
    key = next(iter(f.keys()))
    data = f[key][:]
    del f[key]
    f.create_dataset(key, data=data[..., :5])          # 5 EEG channels, not 8
  workdir = str(tmp_path / "run")
  with pytest.raises(DataError, match=r"eegs_test\.h5"):
    loop.train_and_evaluate(train_config(root), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
