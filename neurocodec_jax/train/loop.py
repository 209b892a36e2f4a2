"""``train_and_evaluate(config, workdir)``: the training run behind ``train.py``.

Sections: setup (codec, cached codes, data, models, mesh), state (fresh or
resumed), the loop (jitted step, progress, logging, checkpoints), validation
(latent loss and SI-SDR of the decoded re-quantized prediction, reduce-on-
plateau, best checkpoint).

Data parallel: one mesh axis ``data`` over every device of every host; the
batch is sharded along it, parameters and optimizer states are replicated. A
multi-host launch calls ``jax.distributed.initialize()`` first (set
``NEUROCODEC_MULTIHOST=1`` or pass ``--multihost`` to train.py).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from neurocodec_jax import codec, losses
from neurocodec_jax.data import eval_dataset, open_split, steps_per_epoch, train_dataset
from neurocodec_jax.train import optim, steps
from neurocodec_jax.train.checkpoint import Checkpoints, abstract
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
      mix_input=config.model.mix_input)


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


def program_key(config) -> str:
  """Config JSON without host-only fields (max_steps kept for the cosine schedule)."""
  d = json.loads(config.to_json_best_effort())
  for k in HOST_ONLY:
    d.pop(k, None)
  for k in HOST_ONLY_TRAIN:
    if not (k == "max_steps" and d["train"]["schedule"] == "cosine"):
      d["train"].pop(k, None)
  d.pop("synthetic", None)
  return json.dumps(d, sort_keys=True) + repr([d.id for d in jax.devices()])


_PROGRAMS: dict = {}


def programs(config, dac_model=None):
  """``(dac_model, models, mesh, jitted train step, validate)``, built once per key.

  Building and compiling the step costs tens of seconds on a CPU; a second run in
  the same process (a resume, a test, a notebook) reuses them. ``dac_model``: the
  codec, when the caller has loaded it already.
  """
  import codec_bridge  # pylint: disable=g-import-not-at-top
  key = program_key(config)
  if key not in _PROGRAMS:
    if dac_model is None:
      dac_model = codec_bridge.load_dac_from_config(config.codec)
    models = build_models(config, dac_model, need_decoder=True)
    mesh = make_mesh()
    check_multi_device(config, mesh)
    replicated, batched = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    jit = lambda fn: jax.jit(fn, donate_argnums=0, in_shardings=(replicated, batched),
                             out_shardings=(replicated, replicated))
    full_step = jit(steps.make_train_step(config, models))
    if config.train.waveform_start > 0 and steps.uses_waveform(config):
      # Curriculum: latent-space terms first, waveform terms from waveform_start.
      latent_step = jit(steps.make_train_step(config, models, waveform=False))
      start = config.train.waveform_start
      train_step = lambda state, batch, step: (full_step if step >= start
                                               else latent_step)(state, batch)
    else:
      train_step = lambda state, batch, step: full_step(state, batch)
    _PROGRAMS.clear()                    # keep one set alive (they hold the codec)
    _PROGRAMS[key] = (dac_model, models, mesh, train_step,
                      make_validate(config, models, mesh))
  return _PROGRAMS[key]


# ------------------------------------------------------------------ train ----

def total_steps(config, per_epoch: int) -> int:
  """The run's length: ``train.max_steps``, or ``epochs`` epochs when it is -1."""
  return config.train.max_steps if config.train.max_steps > 0 else config.epochs * per_epoch


def with_schedule_length(config, total: int):
  """``config`` with ``train.max_steps`` = ``total`` when the schedule needs the length.

  The cosine schedule decays over ``train.max_steps`` inside the jitted step; with the
  default -1 (length from ``epochs``) it would decay over one step and train at
  learning rate 0. Other schedules get ``config`` itself (their programs are shared
  across run lengths).
  """
  if config.train.schedule != "cosine" or config.train.max_steps == total:
    return config
  resolved = ml_collections.ConfigDict(config.to_dict())
  resolved.train.max_steps = total
  resolved.lock()
  return resolved


def train_and_evaluate(config, workdir: str, *, stop_after: int | None = None) -> dict:
  """Trains per ``config`` in ``workdir``, resuming from its latest checkpoint.

  Args:
    config: a NeuroCodec config (configs/neurocodec.py).
    workdir: run folder: config.json, metrics.jsonl, checkpoints/, best/.
    stop_after: stop (without a final checkpoint) after this global step — how
      tests simulate a run killed mid-epoch.

  Returns:
    The final state (host arrays) and summary, as ``{"state", "step", "val"}``.
  """
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))

  import codec_bridge  # pylint: disable=g-import-not-at-top
  cached = _PROGRAMS.get(program_key(config))
  dac_model = cached[0] if cached else codec_bridge.load_dac_from_config(config.codec)
  sources = codes_and_sources(config, dac_model, {
      config.data.train_split: steps.batch_fields(config),
      config.data.val_split: tuple(steps.mix_fields(config)) + ("clean_codes", "eeg", "clean")})
  train_src, val_src = sources[config.data.train_split], sources[config.data.val_split]

  local_batch = config.batch_size // jax.process_count()
  per_epoch = steps_per_epoch(len(train_src), local_batch)
  total = total_steps(config, per_epoch)
  dac_model, models, mesh, train_step, validate = programs(
      with_schedule_length(config, total), dac_model)
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
  ckpt = Checkpoints(workdir, keep=config.train.keep_checkpoints)
  meta = dict(epoch=0, best_val=math.inf)
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(abstract(state, replicated), data_iter)
    logging.info("Resumed from %s at step %d.", ckpt.latest.directory, int(state["step"]))
  n_params = sum(x.size for x in jax.tree.leaves(state["g"]["params"]))
  logging.info("Generator: %.2fM parameters; %d devices; %d steps/epoch; %d steps.",
               n_params / 1e6, n_dev, per_epoch, total)

  log = MetricsLog(workdir, config)
  start = int(state["step"])
  bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
  val = {}
  t0 = time.perf_counter()
  try:
    for step in range(start, total):
      batch = shard_batch(next(data_iter), batched)
      state, metrics = train_step(state, batch, step)
      metrics = jax.device_get(metrics)
      if not metrics.pop("finite"):
        last = ckpt.latest_step()
        msg = (f"Non-finite loss or gradient at step {step + 1}; the parameters were "
               f"kept at step {step}. Last good checkpoint: "
               f"{'step %d in %s' % (last, ckpt.latest.directory) if last is not None else 'none'}.")
        if config.train.nonfinite == "stop":
          raise FloatingPointError(msg + " Lower lr or set train.nonfinite='skip'.")
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
                   + (f"  SI-SDR {val['si_sdr']:.2f} dB" if "si_sdr" in val else ""))
      if stop_after is not None and done >= stop_after:
        break
      if done % config.train.checkpoint_every == 0 or done == total:
        ckpt.save(done, state, data_iter, meta, force=done == total)
  finally:
    bar.close()
    ckpt.wait()
    ckpt.close()
    log.close()
  return dict(state=jax.device_get(state), step=int(state["step"]), val=val)


def _first_example(source) -> dict:
  """One example with a batch axis, for shapes at initialization."""
  return {k: np.asarray(v)[None] for k, v in source[0].items()}
