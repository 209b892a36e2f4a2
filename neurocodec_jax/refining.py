"""Training the spectral mask refiner (models/refiner.py) behind a trained selector model.

The model stays frozen. Its two decoded streams are computed once for the training
trials (:func:`collect_streams`); the refiner then learns, from the mixture and both
streams, to output the talker its selected stream carries (:func:`carried_talker`:
the choice is held, so the refiner sharpens the separation and never the selection;
with the wrong talker selected it extracts the wrong talker, as the mask does).

Its loss is the output's negative SI-SDR plus ``lambda_spec`` times a compressed
spectral distance (``refiner.compressed_spectral_distance``). The train state is an
explicit pytree ``{"params", "opt_state", "step"}`` updated by one jitted step;
:func:`train` writes it every ``checkpoint_every`` steps (temporary file, then
rename) and resumes from it.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from tqdm import tqdm

from neurocodec_jax import codec, losses, mixture_mask
from neurocodec_jax.data import eval_dataset
from neurocodec_jax.models import refiner
from neurocodec_jax.train import steps
from neurocodec_jax.training import ConfigMismatch

SIGNALS = ("mixture", "selected", "competing")


def collect_streams(run, state: dict, split: str, n: int) -> dict[str, np.ndarray]:
  """The first ``n`` trials of ``split``: ``{"mixture", "clean", "unattended",
  "selected", "competing"}``, each ``[n, T]`` float32 (the streams decoded as
  evaluation decodes them), and ``"margin"`` ``[n]``, the selector's logit gap (how
  sure its choice was). ``run`` opens ``split`` with :func:`fields`."""
  config = run.config
  n_q = config.codec.n_quantizers_eval

  @jax.jit
  def streams(state, batch, frozen):
    z_pred, _, aux = steps.predict(run.models, state, batch, frozen, return_aux=True)
    q = lambda z: codec.output_latent(frozen["quantizer"], z, config.codec.requantize_output, n_q)
    dec = lambda z: run.models.decode(frozen["decoder"], q(z))[:, 0]
    return dec(z_pred), dec(aux["competing"]), mixture_mask.selector_margin(aux["logits"])

  host = ("noisy", "clean", "unattended")
  out = {k: [] for k in ("mixture", "clean", "unattended", "selected", "competing", "margin")}
  n = min(n, len(run.sources[split]))
  with tqdm(total=n, desc=f"streams ({split})", unit="trial") as bar:
    for batch in eval_dataset(run.sources[split], run.local_batch):
      device = {k: v for k, v in batch.items() if k not in host}
      sel, comp, margin = (np.asarray(w) for w in streams(state, device, run.frozen))
      for k, v in (("selected", sel), ("competing", comp), ("margin", margin),
                   ("mixture", batch["noisy"][:, 0]),
                   ("clean", batch["clean"][:, 0]), ("unattended", batch["unattended"][:, 0])):
        out[k].append(np.asarray(v, np.float32))
      bar.update(len(sel))
      if bar.n >= n:
        break
  # One signal's batches at a time: the peak stays near the result's size.
  return {k: np.concatenate(out.pop(k))[:n] for k in list(out)}


def fields(config) -> list[str]:
  """The split fields :func:`collect_streams` reads."""
  return (steps.mix_fields(config) + ["eeg", "clean", "noisy", "unattended"]
          + steps.subject_fields(config))


def carried_talker(streams: dict, sample_rate: int, chunk: int = 64) -> np.ndarray:
  """``[n, T]``: per trial the talker (attended or not) that the streams' plain ratio
  mask (power 0.5) brings out with the higher SI-SDR."""
  max_lag = losses.sisdr.max_lag_samples(sample_rate)
  sdr = jax.jit(lambda ref, est: losses.si_sdr(ref[:, None], est[:, None], max_lag=max_lag))
  mask = jax.jit(lambda m, s, c: mixture_mask.ratio_mask(m, s, c, 0.5))
  own, other = [], []
  for j in range(0, len(streams["mixture"]), chunk):
    part = {k: jnp.asarray(streams[k][j:j + chunk]) for k in SIGNALS + ("clean", "unattended")}
    est = mask(*(part[k] for k in SIGNALS))
    own.append(np.asarray(sdr(part["clean"], est)))
    other.append(np.asarray(sdr(part["unattended"], est)))
  attended = np.concatenate(own) >= np.concatenate(other)
  return np.where(attended[:, None], streams["clean"], streams["unattended"])


def make_step(model: refiner.MaskRefiner, tx: optax.GradientTransformation, sample_rate: int,
              lambda_spec: float):
  """``step(state, batch) -> (state, {"sisdr", "spec"})``, jitted; ``batch``:
  ``{"mixture", "selected", "competing", "target"}``, each ``[B, T]``."""
  max_lag = losses.sisdr.max_lag_samples(sample_rate)

  def loss_fn(params, batch):
    y = model.apply(params, *(batch[k] for k in SIGNALS))
    sdr = jnp.mean(losses.si_sdr(batch["target"][:, None], y[:, None], max_lag=max_lag))
    spec = refiner.compressed_spectral_distance(y, batch["target"])
    return -sdr + lambda_spec * spec, dict(sisdr=sdr, spec=spec)

  @jax.jit
  def step(state, batch):
    grads, aux = jax.grad(loss_fn, has_aux=True)(state["params"], batch)
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    return dict(params=optax.apply_updates(state["params"], updates), opt_state=opt_state,
                step=state["step"] + 1), aux
  return step


def optimizer(lr: float, total_steps: int) -> optax.GradientTransformation:
  """AdamW on a cosine decay to a tenth, the global norm clipped at 1."""
  return optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(optax.cosine_decay_schedule(lr, max(total_steps, 1),
                                                             alpha=0.1),
                                 weight_decay=1e-4))


def train(streams: dict, target: np.ndarray, model: refiner.MaskRefiner, *, steps_total: int,
          batch_size: int, lr: float, lambda_spec: float, sample_rate: int, seed: int = 0,
          state_path: str | None = None, checkpoint_every: int = 500,
          until: int | None = None) -> dict:
  """The refiner's parameters after ``steps_total`` steps on ``streams`` (each
  ``[n, T]``) toward ``target`` ``[n, T]``. With ``state_path``, the train state is
  saved there every ``checkpoint_every`` steps and a run resumes from it (the batches
  are drawn from ``seed`` and the step: a resumed run sees the same ones). ``until``:
  stop after that step (an interruption, for tests)."""
  tx = optimizer(lr, steps_total)
  params = refiner.init_params(model, seed)
  state = dict(params=params, opt_state=tx.init(params), step=jnp.asarray(0, jnp.int32))
  if state_path and os.path.isfile(state_path):
    with open(state_path, "rb") as f:
      state = serialization.from_bytes(state, f.read())
  step = make_step(model, tx, sample_rate, lambda_spec)
  n = len(target)
  start = int(state["step"])
  with tqdm(total=steps_total, initial=start, desc="refiner", unit="step") as bar:
    for i in range(start, steps_total if until is None else min(until, steps_total)):
      idx = np.random.default_rng([seed, i]).choice(n, batch_size, replace=False)
      batch = {k: jnp.asarray(streams[k][idx]) for k in SIGNALS}
      batch["target"] = jnp.asarray(target[idx])
      state, aux = step(state, batch)
      bar.update(1)
      if i % 10 == 0:
        bar.set_postfix(sisdr=f"{float(aux['sisdr']):.2f}", spec=f"{float(aux['spec']):.3f}")
      if state_path and ((i + 1) % checkpoint_every == 0 or i + 1 == steps_total):
        with open(state_path + ".tmp", "wb") as f:
          f.write(serialization.to_bytes(state))
        os.replace(state_path + ".tmp", state_path)
  return state["params"]


# The back-off's grid: thresholds at these quantiles of the val margins, these shares
# of the mixture (docs/research-log.md "Backing off where the choice is unsure").
BACK_OFF_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5)
BACK_OFF_MIXES = (0.25, 0.5, 0.75, 1.0)


def blend_scores(streams: dict, model: refiner.MaskRefiner, params, mixes, sample_rate: int,
                 chunk: int = 16) -> dict[str, np.ndarray]:
  """Per trial of ``streams`` (:func:`collect_streams`), the refined output blended
  with the mixture, ``a x mixture + (1 - a) x refined`` for ``a`` in ``(0,) + mixes``,
  scored against the attended talker: ``{"si_sdr", "stoi"}`` each ``[n, 1 + len(mixes)]``
  (column 0: the refined output alone)."""
  from pystoi import stoi  # pylint: disable=g-import-not-at-top
  max_lag = losses.sisdr.max_lag_samples(sample_rate)
  apply = jax.jit(lambda m, s, c: model.apply(params, m, s, c))
  sdr = jax.jit(lambda ref, est: losses.si_sdr(ref[:, None], est[:, None], max_lag=max_lag))
  shares = (0.0,) + tuple(mixes)
  out = {"si_sdr": [], "stoi": []}
  n = len(streams["mixture"])
  for j in tqdm(range(0, n, chunk), desc="back-off grid", unit="chunk"):
    part = {k: streams[k][j:j + chunk] for k in SIGNALS + ("clean",)}
    y = np.asarray(apply(*(jnp.asarray(part[k]) for k in SIGNALS)))
    blends = [a * part["mixture"] + (1 - a) * y for a in shares]
    out["si_sdr"].append(np.stack([np.asarray(sdr(jnp.asarray(part["clean"]), jnp.asarray(b)))
                                   for b in blends], axis=1))
    out["stoi"].append(np.array([[stoi(c, b[i], sample_rate) for b in blends]
                                 for i, c in enumerate(part["clean"])]))
  return {k: np.concatenate(v).astype(np.float64) for k, v in out.items()}


def choose_back_off(margin: np.ndarray, scores: dict[str, np.ndarray], mixes,
                    quantiles=BACK_OFF_QUANTILES) -> dict:
  """The back-off (``mixture_mask.back_off``) that gives the most mean STOI without
  lowering the mean SI-SDR below the refined output's own: thresholds at
  ``quantiles`` of ``margin`` ``[n]``, shares ``mixes``; ``scores`` from
  :func:`blend_scores` on the same trials. ``unsure_margin`` 0 (off) when no pair
  raises STOI. Returns ``{"unsure_margin", "unsure_mix", "stoi", "si_sdr",
  "stoi_refined", "si_sdr_refined", "n"}``."""
  sdr, sto = scores["si_sdr"], scores["stoi"]
  best = dict(unsure_margin=0.0, unsure_mix=float(mixes[0]), stoi=float(sto[:, 0].mean()),
              si_sdr=float(sdr[:, 0].mean()))
  for q in quantiles:
    tau = float(np.quantile(margin, q))
    unsure = margin < tau
    for i, a in enumerate(mixes, start=1):
      s = float(np.where(unsure, sto[:, i], sto[:, 0]).mean())
      d = float(np.where(unsure, sdr[:, i], sdr[:, 0]).mean())
      if s > best["stoi"] and d >= sdr[:, 0].mean():
        best = dict(unsure_margin=tau, unsure_mix=float(a), stoi=s, si_sdr=d)
  return dict(best, stoi_refined=float(sto[:, 0].mean()),
              si_sdr_refined=float(sdr[:, 0].mean()), n=int(len(margin)))


def finished_params(state_path: str, model: refiner.MaskRefiner, steps_total: int,
                    fingerprint: dict):
  """The parameters in the train state at ``state_path`` when it has run
  ``steps_total`` steps for ``fingerprint`` (what it was trained from and how, in
  ``state_path + '.json'``), else None when there is no state or it is unfinished.
  Raises ``training.ConfigMismatch`` when the state was trained for another
  fingerprint: resuming or reusing it would silently mix two refiners."""
  if not os.path.isfile(state_path):
    return None
  meta = state_path + ".json"
  recorded = json.load(open(meta)) if os.path.isfile(meta) else None
  if recorded != fingerprint:
    raise ConfigMismatch(f"{state_path}: a refiner's train state for {recorded} (from {meta}), "
                         f"not for {fingerprint}; delete it (and {meta}) to train anew.")
  with open(state_path, "rb") as f:
    raw = serialization.msgpack_restore(f.read())
  if int(raw["step"]) != steps_total:
    return None
  return serialization.from_state_dict(refiner.init_params(model), raw["params"])


def refine_run(run, state: dict, recipe, out: str, checkpoint: str) -> dict | None:
  """Trains a refiner behind the selector model ``state`` (read from ``checkpoint``;
  ``run`` opens the config's train and val splits with :func:`fields`) as ``recipe``
  says (a dataclass with the fields of ``configs.refine.Recipe``, which the entry
  points build from their flags), chooses its back-off on val and saves both at
  ``out`` (``refiner.save``); returns the back-off (None with ``recipe.back_off_trials``
  0). The train state at ``out + '.state'`` resumes an interrupted run; a finished one
  for the same checkpoint and recipe is not trained again (its training streams are
  not decoded again; the val ones are)."""
  config = run.config
  sr = config.codec.arch.sample_rate
  train_split, val_split = config.data.train_split, config.data.val_split
  model = refiner.MaskRefiner(width=recipe.width, layers=recipe.layers, kernel=recipe.kernel,
                              floor=config.model.mask_floor, power=config.model.mask_power)
  state_path = out + ".state"
  fingerprint = dict(checkpoint=os.path.abspath(checkpoint),
                     recipe={k: v for k, v in dataclasses.asdict(recipe).items()
                             if k != "back_off_trials"})
  params = finished_params(state_path, model, recipe.steps, fingerprint)
  if params is None:
    if not os.path.isfile(state_path):
      with open(state_path + ".json.tmp", "w") as f:
        json.dump(fingerprint, f)
      os.replace(state_path + ".json.tmp", state_path + ".json")
    streams = collect_streams(run, state, train_split, recipe.n_trials)
    target = carried_talker(streams, sr)
    params = train(streams, target, model, steps_total=recipe.steps,
                   batch_size=recipe.batch_size, lr=recipe.lr, lambda_spec=recipe.lambda_spec,
                   sample_rate=sr, seed=recipe.seed, state_path=state_path)
    del streams, target           # 5 GB at the default recipe, before val's
  back_off = None
  if recipe.back_off_trials:
    val = collect_streams(run, state, val_split, recipe.back_off_trials)
    scores = blend_scores(val, model, params, BACK_OFF_MIXES, sr)
    back_off = choose_back_off(val["margin"], scores, BACK_OFF_MIXES)
  refiner.save(out, params, model, back_off=back_off)
  return back_off
