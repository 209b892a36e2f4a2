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
  return {k: np.concatenate(v)[:n] for k, v in out.items()}


def fields(config) -> list[str]:
  """The split fields :func:`collect_streams` reads."""
  return steps.mix_fields(config) + ["eeg", "clean", "noisy", "unattended"]


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
  example = [jnp.asarray(streams[k][:1]) for k in SIGNALS]
  params = model.init(jax.random.PRNGKey(seed), *example)
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
