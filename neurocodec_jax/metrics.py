"""Per-example metrics of the generator's prediction: one function for validation
and evaluation.

``make_metrics(run, target)(state, batch)`` returns numpy arrays ``[n]`` per example
of a host batch of ``n <= run.local_batch`` examples; which ones depends on the
batch's fields:

  latent_loss     the training latent loss against the ``target`` latent
                  (``steps.target_latent``; evaluation: "quantized")
  cos_attended    mean frame cosine of the prediction with the attended talker's
                  quantized z
  envelope        the envelope loss (when ``lambda_env > 0``)
  si_sdr          dB, the output waveform (``model.output_waveform``: the decoded
                  prediction, re-quantized unless ``codec.requantize_output`` is
                  False, or the mixture masked by both decoded streams) vs
                  ``clean``, aligned within ``losses.sisdr.ALIGN_MAX_LAG_SECONDS``
                  by |cross-correlation|; ``wave [n, T]`` that waveform
  si_sdr_mixture  the floor: the unprocessed mixture (``noisy``) vs ``clean``
  si_sdr_oracle   the ceiling: the attended talker's codes, re-quantized with
                  ``n_quantizers_eval`` and decoded, vs ``clean`` (the best any
                  generator in this latent space can decode); ``oracle_wave [n, T]``
  with ``unattended_codes``: cos_unattended, id_latent (1 when the prediction is
                  closer to the attended talker), cos_mix_attended,
                  cos_mix_unattended (the mixture's own quantized z)
  with the ``unattended`` audio: si_sdr_unattended, and with ``model.selector``
                  the :func:`selector_diagnostics`

Two programs, each compiled once per batch structure, both taking the run's frozen
codec arrays (``run.frozen``) as an argument: the latent part runs sharded over the
run's mesh on the batch padded to the run's per-host batch size (so the last,
smaller batch compiles nothing new); the re-quantized latents are then decoded: by a
single-device program with the torch codec, so its callback never runs inside a
program with cross-device collectives (``training.check_multi_device``); sharded
over the mesh as the latent part with ``codec.backend=jax`` (no callback, and its
weights are on every device).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax import codec, losses, mixture_mask
from neurocodec_jax.models import cue as cue_forms
from neurocodec_jax.run import Run, pad_batch, shard_batch
from neurocodec_jax.train import steps

# Fields read on the host only (evaluation's rows and samples), never by the programs
# ("subject" goes to the device where the model decodes per subject: steps.subject_fields).
HOST_FIELDS = ("noisy", "subject", "index")


CUES = ("eeg", "oracle")
# What scale each output frame is decoded at: the model's own, or (diagnostic) the
# attended talker's quantized frame norms, the prediction's direction kept.
NORMS = ("model", "oracle")


def make_metrics(run: Run, target: str, references: bool = False, cue: str = "eeg",
                 norm: str = "model") -> Callable[[dict, dict], dict]:
  """``metrics(state, batch) -> {name: [n]}`` (see the module docstring), compiled
  once for ``run`` and the runs that reuse it. ``references``: also the floor and the
  ceiling (``si_sdr_mixture``, ``si_sdr_oracle``, ``oracle_wave``; the batch must
  have ``noisy``), which evaluation reports and validation skips (a second decode).
  ``model.output_waveform="mixture_mask"`` needs ``noisy`` too (the masked mixture is
  the output). ``cue="oracle"`` (selector models): the selector chooses by the attended talker's
  true envelope instead of the EEG's decoded one, i.e. with perfect attention
  decoding; what remains between it and the ceiling is the separation's.
  ``norm="oracle"``: each output frame is decoded at the attended talker's frame norm
  (its quantized latent's), the prediction's direction kept: what a perfect estimate
  of the output's loudness contour would give. Latent metrics are scale-free and do
  not change."""
  if cue not in CUES:
    raise ValueError(f"cue must be one of {CUES}, got {cue!r}.")
  if norm not in NORMS:
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}.")
  if cue == "oracle" and run.config.model.selector == "none":
    raise ValueError("cue='oracle' needs a selector model (model.selector='correlation').")
  if masks(run.config) and run.config.model.selector == "none":
    raise ValueError(f"model.output_waveform={run.config.model.output_waveform!r} needs a "
                     "selector model "
                     "(model.selector='correlation'): the mask is its two streams'.")
  # The cue and the norm are arguments of one program, not a program each: an
  # evaluation with its diagnostics compiles the generator once.
  program = run.compiled(("metrics", target, references), lambda: _make(
      run.config, run.models, run.batched, run.local_batch, target, references))
  oracle_cue, oracle_norm = cue == "oracle", norm == "oracle"

  def metrics(state, batch):
    if oracle_cue and run.config.model.cue_form == "encoding":
      raise ValueError("cue='oracle' replaces a decoded envelope, and model.cue_form="
                       "'encoding' has none (its cue is a source); id_oracle_cue, in the "
                       "selector's diagnostics, is the identification a perfect cue gives.")
    if oracle_cue and "clean" not in batch:
      raise ValueError("cue='oracle' needs the attended talker's audio (the batch field "
                       "'clean') for its envelope.")
    if oracle_norm and masks(run.config) and "unattended_codes" not in batch:
      raise ValueError("norm='oracle' with model.output_waveform='mixture_mask' needs the "
                       "competing talker's codes (unattended_codes) to scale its stream.")
    return program(state, batch, run.frozen, oracle_cue, oracle_norm)
  return metrics


def masks(config) -> bool:
  """Whether the output is the mixture masked by the decoded streams (it needs ``noisy``):
  ``model.output_waveform`` "mixture_mask" or "refined_mask"."""
  return config.model.output_waveform in ("mixture_mask", "refined_mask")


def _make(config, models: steps.Models, batched, local_batch: int, target: str,
          references: bool):
  n_q = config.codec.n_quantizers_eval
  selector = config.model.selector != "none"
  mask = masks(config)
  per_example = lambda p, t: steps.per_example(
      lambda a, b: losses.latent_loss(a, b, config.normalize_latents), p, t)

  @jax.jit
  def latent_metrics(state, batch, frozen, oracle_cue, oracle_norm):
    with_aux = selector and "unattended" in batch and "unattended_codes" in batch
    cue_fn = None
    if selector and "clean" in batch and config.model.cue_form != "encoding":
      # lax.cond: the flags' untaken branches cost nothing per batch.
      cue_fn = lambda env: jax.lax.cond(
          oracle_cue, lambda: steps.envelope_target(config, batch, env.shape[-1]), lambda: env)
    z_pred, env, *aux = steps.predict(models, state, batch, frozen,
                                      return_aux=with_aux or mask, cue_fn=cue_fn)
    quantizer = frozen["quantizer"]
    z_att = codec.codes_to_z(quantizer, batch["clean_codes"])
    out = dict(latent_loss=per_example(z_pred, steps.target_latent(quantizer, batch, target)),
               cos_attended=losses.frame_cosine(z_pred, z_att))
    if "unattended_codes" in batch:
      z_un = codec.codes_to_z(quantizer, batch["unattended_codes"])
      out["cos_unattended"] = losses.frame_cosine(z_pred, z_un)
      out["id_latent"] = (out["cos_attended"] > out["cos_unattended"]).astype(jnp.float32)
      z_mix = codec.codes_to_z(quantizer, batch["noisy_codes"])
      out["cos_mix_attended"] = losses.frame_cosine(z_mix, z_att)
      out["cos_mix_unattended"] = losses.frame_cosine(z_mix, z_un)
      if with_aux:
        out.update(selector_diagnostics(config, aux[0], batch, z_att, z_un))
    if config.lambda_env > 0:
      target_env = steps.envelope_target(config, batch, env.shape[-1])
      out["envelope"] = steps.per_example(losses.envelope_loss, env, target_env)
    at_norm = lambda z, ref: jax.lax.cond(
        oracle_norm,
        lambda: losses.latent.l2_normalize(z) * jnp.linalg.norm(ref(), axis=1, keepdims=True),
        lambda: z)
    z_pred = at_norm(z_pred, lambda: z_att)
    out["z_q"] = codec.output_latent(quantizer, z_pred, config.codec.requantize_output, n_q)
    if mask:
      out["margin"] = mixture_mask.selector_margin(aux[0]["logits"])
      competing = aux[0]["competing"]
      if "unattended_codes" in batch:
        competing = at_norm(competing,
                            lambda: codec.codes_to_z(quantizer, batch["unattended_codes"]))
      out["z_q_competing"] = codec.output_latent(quantizer, competing,
                                                 config.codec.requantize_output, n_q)
    if references:
      out["z_oracle"] = codec.requantize(quantizer, z_att, n_q)
    return out

  max_lag = losses.sisdr.max_lag_samples(config.codec.arch["sample_rate"])

  @jax.jit
  def decoded(decoder, refiner, inputs):
    wave = models.decode(decoder, inputs["z_q"])
    if mask:
      refine = (None if models.refine is None else
                lambda *signals: models.refine(refiner, *(x[:, 0] for x in signals))[:, None])
      wave = mixture_mask.output_waveform(
          config.model.output_waveform, config.model.mask_power, config.model.mask_floor,
          wave, models.decode(decoder, inputs["z_q_competing"]), inputs["noisy"], refine)
      if config.model.unsure_margin > 0:
        wave = mixture_mask.back_off(wave, inputs["noisy"], inputs["margin"],
                                     config.model.unsure_margin, config.model.unsure_mix)
    sdr = lambda ref, est: losses.si_sdr(ref, est, max_lag=max_lag)
    out = {f"si_sdr{suffix}": sdr(inputs[talker], wave)
           for talker, suffix in (("clean", ""), ("unattended", "_unattended"))
           if talker in inputs}
    out["wave"] = wave[:, 0]
    if references:
      oracle = models.decode(decoder, inputs["z_oracle"])
      out["si_sdr_mixture"] = sdr(inputs["clean"], inputs["noisy"])
      out["si_sdr_oracle"] = sdr(inputs["clean"], oracle)
      out["oracle_wave"] = oracle[:, 0]
    return out

  host_only = tuple(k for k in HOST_FIELDS if k not in steps.subject_fields(config))

  def metrics(state, batch: dict, frozen: dict, oracle_cue: bool, oracle_norm: bool) -> dict:
    n = len(next(iter(batch.values())))
    batch = pad_batch(batch, local_batch)
    device = {k: v for k, v in batch.items() if k not in host_only}
    out = jax.device_get(latent_metrics(state, shard_batch(device, batched), frozen,
                                        np.bool_(oracle_cue), np.bool_(oracle_norm)))
    talkers = ("clean", "unattended") + (("noisy",) if references or mask else ())
    inputs = {k: np.asarray(batch[k]) for k in talkers if k in batch}
    inputs.update({k: out.pop(k) for k in ("z_q", "z_q_competing", "z_oracle") if k in out})
    if "margin" in out:
      inputs["margin"] = out["margin"]
    if frozen["decoder"] is not None:     # JAX decoder: data parallel (module docstring)
      inputs = shard_batch(inputs, batched)
    out.update(jax.device_get(decoded(frozen["decoder"], frozen.get("refiner"), inputs)))
    return {k: np.asarray(v)[:n] for k, v in out.items()}

  return metrics


def selector_diagnostics(config, aux: dict, batch: dict, z_att, z_unatt) -> dict:
  """Where a separate-then-select model loses trials: the cue or the separation.

  Per example, with the talkers' true frame-rate envelopes (from their audio):
  ``cue_r_attended`` / ``cue_r_unattended``, the decoded EEG envelope's Pearson
  correlation with each talker (with ``model.cue_form`` "forward" or "encoding" the
  whitened source's with the whitened response predicted with each talker attended), and
  ``id_cue_true_envelopes`` (1 when it is closer to the attended one: the identification
  a PERFECT separation would give with this EEG decoder); ``stream_r_own`` /
  ``stream_r_other``, the stream envelopes' correlation with their own talker and with
  the other one (assignment by latent cosine), and ``id_oracle_cue`` (1 when selecting
  by the TRUE attended envelope picks the stream closer to the attended talker: the
  identification a perfect cue would give with this separation).
  """
  pear = losses.envelope.pearson
  streams, stream_env, cue = aux["streams"], aux["stream_env"], aux["cue"]
  env_att, env_unatt = steps.talker_envelopes(config, batch, stream_env.shape[1])
  cos_att = jnp.stack([losses.frame_cosine(streams[:, k], z_att) for k in (0, 1)], -1)     # [b, 2]
  cos_un = jnp.stack([losses.frame_cosine(streams[:, k], z_unatt) for k in (0, 1)], -1)
  att_stream = jnp.argmax(cos_att - cos_un, axis=-1)                               # [b]
  r_att = jnp.stack([pear(stream_env[..., k], env_att) for k in (0, 1)], -1)        # [b, 2]
  r_un = jnp.stack([pear(stream_env[..., k], env_unatt) for k in (0, 1)], -1)
  take = lambda x, k: jnp.take_along_axis(x, k[:, None], axis=-1)[:, 0]
  other = 1 - att_stream
  picked = jnp.argmax(r_att, axis=-1)
  # The cue against each talker as the selector compares it (models/cue.py).
  hypotheses = cue_forms.compared(jnp.stack([env_att, env_unatt], -1), config.model.cue_form,
                                  aux.get("response"), aux.get("whitener"))
  r_cue_att, r_cue_un = pear(cue, hypotheses[..., 0]), pear(cue, hypotheses[..., 1])
  return dict(cue_r_attended=r_cue_att, cue_r_unattended=r_cue_un,
              id_cue_true_envelopes=(r_cue_att > r_cue_un).astype(jnp.float32),
              stream_r_own=(take(r_att, att_stream) + take(r_un, other)) / 2,
              stream_r_other=(take(r_un, att_stream) + take(r_att, other)) / 2,
              id_oracle_cue=(take(cos_att, picked) > take(cos_un, picked)).astype(jnp.float32))
