"""``train_and_evaluate(config, workdir)``: the training run behind ``train.py``.

Sections: setup (codec, cached codes, data, models, mesh), state (fresh or
resumed), the loop (jitted step, progress, logging, checkpoints), validation
(latent loss and SI-SDR of the decoded re-quantized prediction, reduce-on-
plateau, best checkpoint).

Data parallel: one mesh axis ``data`` over every device of every host; the
batch is sharded along it, parameters and optimizer states are replicated. A
multi-host launch calls ``jax.distributed.initialize()`` first (pass
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
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from neurocodec_jax import codec, losses
from neurocodec_jax.data import (atomic, eval_dataset, find_split_files, open_split,
                                 steps_per_epoch, train_dataset)
from neurocodec_jax.train import optim, steps
from neurocodec_jax.train.checkpoint import CheckpointError, Checkpoints, abstract
from neurocodec_jax.train.metrics_log import MetricsLog


# ------------------------------------------------------------------ setup ----

def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def build_models(config, dac_model, *, need_decoder: bool) -> steps.Models:
  """Generator, discriminator (when a GAN term is on), frozen codec pieces, optimizers."""
  import codec_bridge  # torch lives behind the bridge  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import discriminators, generator  # pylint: disable=g-import-not-at-top
  disc = None
  if steps.uses_gan(config):
    disc = discriminators.Discriminator.from_config(config)
  decode = codec_bridge.make_decoder(dac_model) if need_decoder else None
  return steps.Models(
      generator=generator.NeuroCodec.from_config(config),
      discriminator=disc, decode=decode,
      qparams=codec_bridge.quantizer_params(dac_model),
      g_tx=optim.generator_optimizer(config),
      d_tx=optim.discriminator_optimizer(config) if disc is not None else None,
      mix_input=config.model.mix_input, target=config.model.target_latent)


def codes_and_sources(config, dac_model, splits, extra_fields=()):
  """Precomputes codes when missing or stale; returns ``{split: AADSource}``."""
  from codec_bridge import precompute  # pylint: disable=g-import-not-at-top
  sources = {}
  for split, fields in splits.items():
    codes_path = precompute.ensure_codes(config, split, dac_model=dac_model)
    sources[split] = open_split(config, split, fields=tuple(fields) + tuple(extra_fields),
                                codes_path=codes_path)
  return sources


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  """Host-local numpy batch -> global jax arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def pad_batch(batch: dict, size: int) -> tuple[dict, np.ndarray]:
  """Pads the batch axis to ``size`` by repeating the last example; returns a mask."""
  n = len(next(iter(batch.values())))
  mask = np.arange(size) < n
  if n == size:
    return batch, mask
  idx = np.minimum(np.arange(size), n - 1)
  return {k: np.asarray(v)[idx] for k, v in batch.items()}, mask


# ------------------------------------------------------------- validation ----

def make_validate(config, models: steps.Models, mesh: Mesh):
  """Returns ``validate(state, source) -> dict`` of mean latent loss and SI-SDR.

  The latent part runs sharded; the re-quantized latents are then decoded by a
  single-device program, so the torch callback never runs inside a program with
  cross-device collectives (see ``check_multi_device``).
  """
  eval_step = steps.make_eval_step(config, models)
  n_q = config.codec.n_quantizers_eval
  batched = NamedSharding(mesh, P("data"))

  @jax.jit
  def latent_metrics(state, batch):
    out = eval_step(state, batch)
    out["z_q"] = codec.requantize(models.qparams, out.pop("z_pred"), n_q)
    return out

  @jax.jit
  def decoded_si_sdr(z_q, clean):
    return losses.si_sdr(clean, models.decode(z_q), align=True)

  def validate(state, source) -> dict:
    sums, count = {}, 0
    local = config.batch_size // jax.process_count()
    for batch in eval_dataset(source, local):
      batch, mask = pad_batch(batch, local)
      out = jax.device_get(latent_metrics(state, shard_batch(batch, batched)))
      z_q = out.pop("z_q")
      if models.decode is not None:
        out["si_sdr"] = np.asarray(decoded_si_sdr(z_q, np.asarray(batch["clean"])))
      for k, v in out.items():
        sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v)[mask]))
      count += int(mask.sum())
    means = {k: v / count for k, v in sums.items()}
    means["loss"] = config.lambda_recon * means["latent"] + config.lambda_env * means.get(
        "envelope", 0.0)
    return means

  return validate


def check_multi_device(config, mesh: Mesh):
  """Refuses waveform losses in a multi-device CPU step (a known XLA CPU hang).

  With several (forced) CPU devices, a torch call inside a host callback of a
  program that also runs cross-device all-reduces intermittently deadlocks XLA's
  CPU collectives (reproduced with a plain torch conv in ``jax.pure_callback``;
  numpy callbacks are fine). Single-device runs, and the latent/envelope
  objectives on any number of devices, are unaffected.
  """
  if (steps.uses_waveform(config) and mesh.devices.size > 1
      and jax.default_backend() == "cpu"):
    raise ValueError(
        f"Waveform losses (lambda_mel/adv/feat > 0) decode through a torch callback, "
        f"which can deadlock XLA's collectives across {mesh.devices.size} CPU devices. "
        f"Use one CPU device, an accelerator, or set lambda_mel=lambda_adv=lambda_feat=0.")


# --------------------------------------------------------------- programs ----

# Fields that only steer the host loop; runs differing only in these share programs.
HOST_ONLY = ("epochs", "checkpoint_dir", "root", "noise_cue")
HOST_ONLY_TRAIN = ("max_steps", "log_every", "checkpoint_every", "eval_every",
                   "keep_checkpoints", "nonfinite", "tensorboard", "wandb")


def program_key(config, run_length: int) -> str:
  """Config JSON without host-only fields, plus the run length when the schedule
  traces it (cosine)."""
  d = json.loads(config.to_json_best_effort())
  for k in HOST_ONLY:
    d.pop(k, None)
  for k in HOST_ONLY_TRAIN:
    d["train"].pop(k, None)
  d.pop("synthetic", None)
  if config.train.schedule == "cosine":
    d["run_length"] = int(run_length)
  return json.dumps(d, sort_keys=True) + repr([d.id for d in jax.devices()])


_PROGRAMS: dict = {}


def programs(config, run_length: int, dac_model=None):
  """``(dac_model, models, mesh, jitted train step, validate)``, built once per key.

  Building and compiling the step costs tens of seconds on a CPU; a second run in
  the same process (a resume, a test, a notebook) reuses them. ``run_length``: the
  run's resolved number of steps (:func:`total_steps`); ``dac_model``: the codec, when the
  caller has loaded it already.
  """
  import codec_bridge  # pylint: disable=g-import-not-at-top
  key = program_key(config, run_length)
  if key not in _PROGRAMS:
    if dac_model is None:
      dac_model = codec_bridge.load_dac_from_config(config.codec)
    models = build_models(config, dac_model, need_decoder=True)
    mesh = make_mesh()
    check_multi_device(config, mesh)
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    jit = lambda fn: jax.jit(fn, donate_argnums=0, in_shardings=(replicated, batched),
                             out_shardings=(replicated, replicated))
    full_step = jit(steps.make_train_step(config, models, total_steps=run_length))
    if config.train.waveform_start > 0 and steps.uses_waveform(config):
      # Curriculum: latent-space terms first, waveform terms from waveform_start.
      latent_step = jit(steps.make_train_step(config, models, total_steps=run_length,
                                              waveform=False))
      start = config.train.waveform_start
      train_step = lambda state, batch, step: (full_step if step >= start
                                               else latent_step)(state, batch)
    else:
      train_step = lambda state, batch, step: full_step(state, batch)
    _PROGRAMS.clear()                    # keep one set alive (they hold the codec)
    _PROGRAMS[key] = (_codec_key(config), (dac_model, models, mesh, train_step,
                                           make_validate(config, models, mesh)))
  return _PROGRAMS[key][1]


def _codec_key(config) -> str:
  return config.codec.to_json_best_effort(sort_keys=True)


def cached_codec(config):
  """The codec the cached programs hold when ``config`` uses the same one, else None."""
  for codec_key, built in _PROGRAMS.values():
    if codec_key == _codec_key(config):
      return built[0]
  return None


# ------------------------------------------------------------------ train ----

def total_steps(config, per_epoch: int) -> int:
  """The run's length: ``train.max_steps``, or ``epochs`` epochs when it is -1."""
  return config.train.max_steps if config.train.max_steps > 0 else config.epochs * per_epoch


def train_and_evaluate(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Trains per ``config`` in ``workdir``, resuming from its latest readable checkpoint.

  Args:
    config: a NeuroCodec config (configs/neurocodec.py).
    workdir: run folder: config.json, metrics.jsonl, checkpoints/, best/.
    stop_after: stop (without a final checkpoint) after this global step — how
      tests simulate a run killed mid-epoch.

  Returns:
    The final state (host arrays) and summary, as ``{"state", "step", "val"}``.
  """
  changes = check_workdir_config(config, workdir)      # before anything is written
  with quiet_libraries(), tidy_on_failure(workdir):
    return _train(config, workdir, changes, stop_after)


def _train(config, workdir: str, changes: dict, stop_after: int | None) -> dict:
  import codec_bridge  # pylint: disable=g-import-not-at-top
  dac_model = cached_codec(config) or codec_bridge.load_dac_from_config(config.codec)
  # "index" names a faulty example in a non-finite step's message; not fed to the step.
  sources = codes_and_sources(config, dac_model, {
      config.data.train_split: steps.batch_fields(config) + ("index",),
      config.data.val_split: steps.val_fields(
          config, "unattended" in find_split_files(config.root, config.data.val_split))})
  train_src, val_src = sources[config.data.train_split], sources[config.data.val_split]

  local_batch = config.batch_size // jax.process_count()
  per_epoch = steps_per_epoch(len(train_src), local_batch)
  total = total_steps(config, per_epoch)
  dac_model, models, mesh, train_step, validate = programs(config, total, dac_model)
  n_dev = mesh.devices.size
  if config.batch_size % n_dev:
    raise ValueError(f"batch_size={config.batch_size} must be a multiple of the "
                     f"{n_dev} devices.")
  replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  eval_every = config.train.eval_every if config.train.eval_every > 0 else per_epoch
  data = train_dataset(train_src, local_batch, seed=config.seed,
                       num_workers=config.data.num_workers)
  data_iter = iter(data)

  example = _first_example(train_src)
  state = jax.device_put(steps.init_state(config, models, example, config.seed), replicated)
  os.makedirs(workdir, exist_ok=True)
  ckpt = Checkpoints(workdir, keep=config.train.keep_checkpoints)
  log = bar = None
  try:
    state, meta = _resume(ckpt, state, replicated, data_iter)
    save_config(config, workdir, changes, int(state["step"]))   # the run is known valid
    n_params = sum(x.size for x in jax.tree.leaves(state["g"]["params"]))
    logging.info("Generator: %.2fM parameters; %d devices; %d steps/epoch; %d steps.",
                 n_params / 1e6, n_dev, per_epoch, total)

    start = int(state["step"])
    log = MetricsLog(workdir, config, start=start)
    bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    val = {}
    t0 = time.perf_counter()
    for step in range(start, total):
      host = next(data_iter)
      index = host.pop("index", None)
      batch = shard_batch(host, batched)
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
        state = dict(state, plateau=jax.device_put(plateau, replicated))
        if val["loss"] < meta["best_val"]:
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
  return dict(state=jax.device_get(state), step=int(state["step"]), val=val)


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


# Config changes a workdir's run resumes with (logged as a warning): its length
# and bookkeeping, the generator's rate, schedule and clipping, dropout,
# evaluation-only settings, the data's location, the mel loss's settings and loss
# weights that stay on (or off). Any other change may alter the parameter or
# optimizer-state tree, the data's shapes or what the saved data position
# indexes, or would not apply (train.weight_decay and disc.lr are read from the
# restored optimizer state): it is refused.
RESUMABLE = HOST_ONLY + tuple(f"train.{k}" for k in HOST_ONLY_TRAIN) + (
    "lr", "train.schedule", "train.warmup_steps", "train.plateau_factor",
    "train.plateau_patience", "train.waveform_start", "train.grad_clip", "disc.grad_clip",
    "model.dropout", "model.select_decision", "data.num_workers", "data.check_finite",
    "codec.cache_dir", "codec.n_quantizers_eval")
RESUMABLE_PREFIXES = ("mel.", "synthetic.")
_ABSENT = "<absent>"


def config_changes(old, new) -> dict[str, tuple]:
  """``{dotted key: (old value, new value)}`` of the leaves that differ."""
  a, b = (_flatten(json.loads(c.to_json_best_effort())) for c in (old, new))
  return {k: (a.get(k, _ABSENT), b.get(k, _ABSENT)) for k in sorted(set(a) | set(b))
          if a.get(k, _ABSENT) != b.get(k, _ABSENT)}


def resumable(key: str, old, new) -> bool:
  """Whether a run resumes with ``key`` changed from ``old`` to ``new``."""
  if key.startswith("lambda_"):
    # A weight may change; a term switching on or off changes the models and inputs.
    numbers = all(isinstance(v, (int, float)) for v in (old, new))
    return numbers and (old > 0) == (new > 0)
  return key in RESUMABLE or key.startswith(RESUMABLE_PREFIXES)


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
  from neurocodec_jax import evaluation  # pylint: disable=g-import-not-at-top
  changes = config_changes(evaluation.load_run_config(workdir), config)
  if not changes:
    return {}
  if not _has_checkpoint(workdir):
    logging.warning("%s has no checkpoint: starting afresh with the changed config:%s",
                    workdir, _diff(changes))
    return changes
  refused = {k: v for k, v in changes.items() if not resumable(k, *v)}
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


def _first_example(source) -> dict:
  """One example with a batch axis, for shapes at initialization."""
  return {k: np.asarray(v)[None] for k, v in source[0].items()}
