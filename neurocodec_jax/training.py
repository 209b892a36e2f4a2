"""``train_and_evaluate(config, workdir)``: the training run behind ``train.py``.

Sections: validation (the latent loss, identification and SI-SDR of the decoded
re-quantized prediction, by ``neurocodec_jax.metrics``), the train programs, the
loop (state fresh or resumed, jitted step, progress, logging, reduce-on-plateau,
checkpoints and the best one), non-finite steps, the workdir's config.

The codec, cached codes, sources, models, mesh and compiled programs come from
``neurocodec_jax.run``: data parallel over every device of every host (a
multi-host launch calls ``jax.distributed.initialize()`` first: pass
``--multihost`` to train.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm import tqdm

from neurocodec_jax.data import (DataError, atomic, check_subject_ids, eval_dataset,
                                 find_split_files, open_split, steps_per_epoch, train_dataset)
from neurocodec_jax.metrics import make_metrics
from neurocodec_jax import config_fields
from neurocodec_jax.run import Run, build_run, shard_batch
from neurocodec_jax.train import optim, steps
from neurocodec_jax.train.checkpoint import CheckpointError, Checkpoints, abstract
from neurocodec_jax.train.metrics_log import MetricsLog


# ------------------------------------------------------------- validation ----

# What validation logs (under the names on the left, in this order) of the metrics'
# keys (right).
VALIDATION = dict(envelope="envelope", id_latent="id_latent", latent="latent_loss",
                  si_sdr="si_sdr")


def make_validate(run: Run):
  """Returns ``validate(state, source) -> dict``: the means of :data:`VALIDATION`
  (identification when the source has the competing talker's codes) and ``loss``,
  the latent and envelope terms weighted as in training (the plateau's and the best
  checkpoint's measure)."""
  config = run.config
  metrics = make_metrics(run, target=config.model.target_latent)

  def validate(state, source) -> dict:
    sums, count = {}, 0
    for batch in eval_dataset(source, run.local_batch):
      out = metrics(state, batch)
      for name, key in VALIDATION.items():
        if key in out:
          sums[name] = sums.get(name, 0.0) + float(np.sum(out[key]))
      count += len(out["latent_loss"])
    means = {k: v / count for k, v in sums.items()}
    means["loss"] = config.lambda_recon * means["latent"] + config.lambda_env * means.get(
        "envelope", 0.0)
    return means

  return validate


def check_multi_device(config, mesh: Mesh):
  """Refuses waveform losses through the torch decoder in a multi-device CPU step
  (a known XLA CPU hang).

  With several (forced) CPU devices, a torch call inside a host callback of a
  program that also runs cross-device all-reduces intermittently deadlocks XLA's
  CPU collectives (reproduced with a plain torch conv in ``jax.pure_callback``;
  numpy callbacks are fine). Single-device runs, the latent/envelope objectives on
  any number of devices, and ``codec.backend=jax`` (no callback) are unaffected.
  """
  if (steps.uses_waveform(config) and mesh.devices.size > 1
      and jax.default_backend() == "cpu" and config.codec.backend == "torch"):
    raise ValueError(
        f"Waveform losses (lambda_mel/adv/feat/sisdr > 0) decode through a torch callback, "
        f"which can deadlock XLA's collectives across {mesh.devices.size} CPU devices. "
        f"Use codec.backend=jax, one CPU device, an accelerator, or set "
        f"lambda_mel=lambda_adv=lambda_feat=lambda_sisdr=0.")


# --------------------------------------------------------------- programs ----

def traced_length(config, run_length: int) -> int | None:
  """The run length the train step traces: the cosine schedule's horizon; None for
  the other schedules (a step compiled for one length serves every length)."""
  return int(run_length) if config.train.schedule == "cosine" else None


def compiled_train_step(run: Run, run_length: int):
  """``train_step(state, batch, step) -> (state, metrics)``, jitted over the run's mesh;
  compiled once per traced length for ``run`` and the runs that reuse it.

  ``run_length``: the run's resolved number of steps (:func:`total_steps`). The
  programs take the run's frozen codec arrays (``run.frozen``) as an argument, never
  donated (the state is).
  """
  config, models, mesh = run.config, run.models, run.mesh
  replicated, batched = run.replicated, run.batched

  def build():
    check_multi_device(config, mesh)
    jit = lambda fn: jax.jit(fn, donate_argnums=0,
                             in_shardings=(replicated, batched, replicated),
                             out_shardings=(replicated, replicated))
    full_step = jit(steps.make_train_step(config, models, total_steps=run_length))
    if config.train.waveform_start > 0 and steps.uses_waveform(config):
      # Curriculum: latent-space terms first, waveform terms from waveform_start.
      latent_step = jit(steps.make_train_step(config, models, total_steps=run_length,
                                              waveform=False))
      start = config.train.waveform_start
      return lambda state, batch, frozen, step: (full_step if step >= start
                                                 else latent_step)(state, batch, frozen)
    return lambda state, batch, frozen, step: full_step(state, batch, frozen)

  program = run.compiled(("train", traced_length(config, run_length)), build)
  return lambda state, batch, step: program(state, batch, run.frozen, step)


# ------------------------------------------------------------------ train ----

def total_steps(config, per_epoch: int) -> int:
  """The run's length: ``train.max_steps``, or ``epochs`` epochs when it is -1."""
  return config.train.max_steps if config.train.max_steps > 0 else config.epochs * per_epoch


def train_and_evaluate(config, workdir: str, *, reuse: Run | None = None,
                       stop_after: int | None = None) -> dict:
  """Trains per ``config`` in ``workdir``, resuming from its latest readable checkpoint.

  Args:
    config: a NeuroCodec config (neurocodec_jax/configs/neurocodec.py).
    workdir: run folder: config.json, metrics.jsonl, checkpoints/, best/.
    reuse: an earlier run of this process (a result's ``"run"``) whose codec, models
      and compiled programs to share where they fit (``run.build_run``).
    stop_after: stop (without a final checkpoint) after this global step — how
      tests simulate a run killed mid-epoch.

  Returns:
    The final state (host arrays), summary and run, as ``{"state", "step", "val", "run"}``.
  """
  changes = check_workdir_config(config, workdir)      # before anything is written
  with quiet_libraries(), tidy_on_failure(workdir):
    return _train(config, workdir, changes, reuse, stop_after)


def stage_start(config) -> int:
  """The step from which a waveform stage trains (0: none, or waveform terms throughout)."""
  return config.train.waveform_start if steps.uses_waveform(config) else 0


def is_new_best(loss: float, done: int, meta: dict, stage: int) -> bool:
  """Whether the validation after ``done`` steps makes the best checkpoint.

  Validation's ``loss`` measures the latent and envelope terms, which a waveform stage
  (from step ``stage`` > 0) trades for the decoded waveform's quality; it cannot rank
  the stage's checkpoints, so within the stage the latest is the best. Before it (and
  without a stage), the lowest loss. ``meta``: ``best_val`` of the best so far.
  """
  if 0 < stage < done:
    return True
  return loss < meta["best_val"]


def check_test_split(config) -> None:
  """Validates the test split's layout (shapes, channels, units, finiteness, rates;
  cached as train's and val's) before training, which opens only train and val: a
  bad test split must fail now, not after hours, at evaluation. A dataset without a
  test split is left alone."""
  test = config.data.test_split
  try:
    find_split_files(config.root, test)
  except DataError:
    logging.info("No %r split under %s: evaluation will need one.", test, config.root)
    return
  open_split(config, test)


def _train(config, workdir: str, changes: dict, reuse: Run | None,
           stop_after: int | None) -> dict:
  train_split, val_split = config.data.train_split, config.data.val_split
  check_test_split(config)
  if config.model.encoding_subjects > 0:
    check_subject_ids(config.root, train_split, config.model.encoding_subjects)
  # "index" names a faulty example in a non-finite step's message; not fed to the step.
  run = build_run(config, {
      train_split: steps.batch_fields(config) + ("index",),
      val_split: steps.val_fields(config, "unattended" in find_split_files(config.root,
                                                                           val_split))},
                  reuse=reuse)
  train_src, val_src = run.sources[train_split], run.sources[val_split]
  per_epoch = steps_per_epoch(len(train_src), run.local_batch)
  total = total_steps(config, per_epoch)
  train_step, validate = compiled_train_step(run, total), make_validate(run)
  eval_every = config.train.eval_every if config.train.eval_every > 0 else per_epoch
  data = train_dataset(train_src, run.local_batch, seed=config.seed,
                       num_workers=config.data.num_workers)
  data_iter = iter(data)

  state = run.init_state()
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpoints(workdir, keep=config.train.keep_checkpoints)
  log = bar = None
  try:
    state, meta = _resume(ckpt, state, run.replicated, data_iter)
    save_config(config, workdir, changes, int(state["step"]))   # the run is known valid
    n_params = sum(x.size for x in jax.tree.leaves(state["g"]["params"]))
    logging.info("Generator: %.2fM parameters; %d devices; %d steps/epoch; %d steps.",
                 n_params / 1e6, run.mesh.devices.size, per_epoch, total)
    start = int(state["step"])
    log = MetricsLog(workdir, config, start=start)
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    val = {}
    t0 = time.perf_counter()
    for step in range(start, total):
      host = next(data_iter)
      index = host.pop("index", None)
      batch = shard_batch(host, run.batched)
      state, metrics = train_step(state, batch, step)
      metrics = jax.device_get(metrics)
      code = int(metrics.pop("nonfinite", 0))
      if not metrics.pop("finite"):
        seen = jax.device_get(batch) if jax.process_count() == 1 else host
        msg = nonfinite_message(config, step, code, seen, index, ckpt)
        if config.train.nonfinite == "stop":
          raise FloatingPointError(msg + " Or set train.nonfinite='skip' to skip such steps.")
        logging.warning("%s Skipping the update (train.nonfinite='skip').", msg)
      done = step + 1
      if done % config.train.log_every == 0 or done == total:
        log.write(done, "train", metrics, seconds=time.perf_counter() - t0)
      bar.set_postfix({k.replace("loss_", ""): f"{float(v):.3g}" for k, v in metrics.items()
                       if k.startswith("loss_") or k == "d_loss"}, refresh=False)
      bar.update(1)
      if done % eval_every == 0 or done == total:
        val = validate(state, val_src)
        meta["epoch"] = done // per_epoch
        log.write(done, "val", val)
        plateau = optim.plateau_update(jax.device_get(state["plateau"]), val["loss"],
                                       factor=config.train.plateau_factor,
                                       patience=config.train.plateau_patience)
        state = dict(state, plateau=jax.device_put(plateau, run.replicated))
        if is_new_best(val["loss"], done, meta, stage_start(config)):
          meta["best_val"] = val["loss"]
          ckpt.save_best(done, state, meta)
        tqdm.write(f"[val step {done}] loss {val['loss']:.4f}"
                   + (f"  SI-SDR {val['si_sdr']:.2f} dB" if "si_sdr" in val else "")
                   + (f"  identification {100 * val['id_latent']:.1f}%"
                      if "id_latent" in val else ""))
      if stop_after is not None and done >= stop_after:
        break
      if done % config.train.checkpoint_every == 0 or done == total:
        ckpt.save(done, state, data_iter, meta, force=done == total)
  except BaseException:
    _close(bar, log)
    ckpt.close(failed=True)        # the error being raised is the one to report
    raise
  _close(bar, log)
  ckpt.close()                     # a failed final save raises here
  return dict(state=jax.device_get(state), step=int(state["step"]), val=val, run=run)


def _close(bar, log):
  if bar is not None:
    bar.close()
  if log is not None:
    log.close()


def _resume(ckpt: Checkpoints, state, sharding, data_iter) -> tuple[Any, dict]:
  """``(state, meta)``: the newest readable checkpoint's, or the fresh ``state``'s.

  On a resume the best checkpoint is read back too: an unreadable one is set aside
  and the next validation writes a new one.
  """
  meta = dict(epoch=0, best_val=math.inf)
  if ckpt.latest_step() is None:
    return state, meta
  target = abstract(state, sharding)
  state, meta = ckpt.restore(target, data_iter)
  logging.info("Resumed from %s at step %d.", ckpt.latest.directory, int(state["step"]))
  if ckpt.best.latest_step() is not None:
    try:
      ckpt.restore(target, best=True, template_trusted=True)
    except CheckpointError:        # each unreadable step was named and set aside
      logging.warning("%s has no readable checkpoint left. The next validation writes a "
                      "new best checkpoint.", ckpt.best.directory)
      meta = dict(meta, best_val=math.inf)
  return state, meta


# -------------------------------------------------------------- non-finite ----

# |x| beyond any EEG in microvolts, audio sample or codec latent: a data fault.
ABSURD = 1e6


def input_faults(batch: dict, index=None, limit: float = ABSURD) -> list[str]:
  """The batch's examples whose float inputs are non-finite or beyond ``limit``."""
  faults = []
  for field in sorted(batch):
    x = np.asarray(batch[field])
    if not np.issubdtype(x.dtype, np.floating):
      continue
    flat = x.reshape(len(x), -1)
    finite = np.isfinite(flat)
    peak = np.max(np.abs(np.where(finite, flat, 0)), axis=1)
    for i in np.flatnonzero(~finite.all(axis=1) | (peak > limit)):
      where = f"example {i} of the batch" + (
          f" (dataset index {int(index[i])})" if index is not None else "")
      what = (f"{int((~finite[i]).sum())} non-finite values" if not finite[i].all()
              else f"values up to |x| = {peak[i]:.3g}")
      faults.append(f"{where}: {field!r} has {what}")
  return faults


def nonfinite_message(config, step: int, code: int, batch: dict, index, ckpt) -> str:
  """Names the step, what was non-finite, the last good checkpoint and the cause:
  a data fault (the inputs) or divergence (finite inputs)."""
  parts = " and ".join(steps.nonfinite_parts(code)) or "values"
  last = ckpt.latest_step()
  where = f"step {last} in {ckpt.latest.directory}" if last is not None else "none"
  head = (f"Non-finite {parts} at step {step + 1}; the parameters were kept at step "
          f"{step}. Last good checkpoint: {where}.")
  faults = input_faults(batch, index)
  if faults:
    shown = "; ".join(faults[:4]) + (f"; and {len(faults) - 4} more" if len(faults) > 4 else "")
    return (f"{head} Data fault, not divergence: the {config.data.train_split} batch's "
            f"inputs are non-finite or absurdly large (|x| > {ABSURD:g}): {shown}. Fix or "
            f"remove those examples; lowering lr will not help.")
  return (f"{head} The batch's inputs are finite and in range, so the training diverged: "
          f"lower lr (now {config.lr:g}) or train.grad_clip (now {config.train.grad_clip:g}).")


# ---------------------------------------------------------------- workdir ----

class ConfigMismatch(ValueError):
  """A workdir's run cannot resume under the given config."""


_ABSENT = "<absent>"


def config_changes(old, new) -> dict[str, tuple]:
  """``{dotted key: (old value, new value)}`` of the leaves that differ (configs, or
  their JSON as dicts)."""
  as_dict = lambda c: c if isinstance(c, dict) else json.loads(c.to_json_best_effort())
  a, b = (_flatten(as_dict(c)) for c in (old, new))
  return {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
          if a.get(k, _ABSENT) != b.get(k, _ABSENT)}


def check_workdir_config(config, workdir: str) -> dict:
  """Compares ``config`` with the run saved in ``workdir`` before anything is written.

  Returns the accepted changes (warned about); raises :class:`ConfigMismatch`, with
  the refused changes as ``key: old -> new``, when ``workdir`` holds checkpoints the
  new config cannot resume. Without a checkpoint any change starts afresh.
  """
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    if _has_checkpoint(workdir):
      logging.warning("%s has checkpoints but no config.json: the config cannot be checked "
                      "against them.", workdir)
    return {}
  with open(path) as f:
    saved = json.load(f)
  changes = config_changes(saved, config)
  # A key the saved run lacks is an option added since (the run trained with its
  # default, which only the presets know): not compared, said.
  added = sorted(k for k, (old, _) in changes.items() if old == _ABSENT)
  if added:
    logging.warning("%s predates the options %s: they are not checked against it.",
                    path, ", ".join(added))
  changes = {k: v for k, v in changes.items() if k not in added}
  if not changes:
    return {}
  if not _has_checkpoint(workdir):
    logging.warning("%s has no checkpoint: starting afresh with the changed config:%s",
                    workdir, _diff(changes))
    return changes
  refused = {k: v for k, v in changes.items() if not config_fields.resumable(k, *v)}
  if refused:
    raise ConfigMismatch(
        f"{workdir} holds a run trained with another config; these changes alter its "
        f"model, optimizer state or data, so it cannot resume:{_diff(refused)}\n"
        f"Use a new --workdir, or the run's own values ({path}). A run resumes with "
        f"changes to its length and bookkeeping, lr, schedule, clipping, dropout and loss "
        f"weights that stay on.")
  logging.warning("Resuming %s with changed settings:%s", workdir, _diff(changes))
  return changes


def save_config(config, workdir: str, changes: dict, step: int):
  """Writes config.json atomically; accepted changes go to config_history.jsonl."""
  if changes:
    with open(os.path.join(workdir, "config_history.jsonl"), "a") as f:
      f.write(json.dumps(dict(step=step, changes={k: list(v) for k, v in changes.items()}))
              + "\n")
  atomic.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=2))


def _has_checkpoint(workdir: str) -> bool:
  folders = [os.path.join(workdir, name) for name in ("checkpoints", "best")]
  return any(name.isdigit() for d in folders if os.path.isdir(d) for name in os.listdir(d))


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


def _diff(changes: dict) -> str:
  return "".join(f"\n  {k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())


@contextlib.contextmanager
def tidy_on_failure(workdir: str):
  """A failed run leaves no workdir it created empty (its subfolders: Checkpoints)."""
  created = not os.path.exists(workdir)
  try:
    yield
  except BaseException:
    if created and jax.process_index() == 0 and os.path.isdir(workdir) \
        and not os.listdir(workdir):
      os.rmdir(workdir)
    raise


class _NoOrbaxTraceback(logging.Filter):
  """orbax logs a failed background save with a traceback from each of its threads;
  the loop raises one clear error for it (Checkpoints), so one line each is enough."""

  def filter(self, record):
    if "orbax" in record.pathname:
      record.exc_info = record.exc_text = None
    return True


@contextlib.contextmanager
def quiet_libraries(level: int = logging.WARNING):
  """orbax and grain log each save and restore at INFO (through absl): WARNING here."""
  logger, no_traceback = logging.getLogger("absl"), _NoOrbaxTraceback()
  previous = logger.level
  logger.setLevel(max(level, previous))
  logger.addFilter(no_traceback)
  try:
    yield
  finally:
    logger.removeFilter(no_traceback)
    logger.setLevel(previous)

