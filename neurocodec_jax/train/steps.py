"""The pure train step ``(state, batch, frozen) -> (state, metrics)`` and the prediction.

One generator forward per step, as DAC's trainer: the prediction (latents and,
when a waveform loss is on, its decoded waveform) is computed once with
``jax.vjp``; the discriminator is updated first on the detached waveform; the
generator's losses then use the UPDATED discriminator, and their gradient with
respect to the prediction is pulled back through the same forward.

Waveform terms (mel, adversarial, feature matching) are traced only when their
weight is > 0: decoding through the frozen DAC is the costliest part of a step.

State (a plain dict pytree, see :func:`init_state`)::

  step        int32 scalar
  rng         PRNG key data (uint32 [2]); the step's key is fold_in(rng, step)
  g           {"params", "batch_stats", "opt"}   generator
  d           {"params", "opt"} or {}            discriminator (when a GAN term is on)
  plateau     {"best", "bad_epochs", "scale"}    reduce-on-plateau state

Batch (numpy or sharded jax arrays, leading axis = batch)::

  noisy_codes, clean_codes   int32 [batch, n_codebooks, frames]
  noisy_latent               float32 [batch, latent_dim, frames]  (model.mix_input="continuous")
  clean_latent, unattended_latent
                             float32 [batch, latent_dim, frames]  (model.target_latent="continuous")
  eeg                        float32 [batch, eeg_channels, eeg_time]  (µV)
  clean                      float32 [batch, 1, frames * hop]  (when needed)

Frozen (the codec's arrays, ``run.Codec.frozen_params``; an argument of every
program, never closed over: XLA would embed closed-over arrays as constants)::

  quantizer   neurocodec_jax.codec's pytree (codebook float32 [n_codebooks, K, d], ...)
  decoder     Models.decode's params (codec.backend=jax: DAC's decoder; torch: None)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from neurocodec_jax import codec, losses, mixture_mask
from neurocodec_jax.models import cue as cue_forms
from neurocodec_jax.train import optim

PyTree = Any


def uses_waveform(config) -> bool:
  return (config.lambda_mel > 0 or config.lambda_adv > 0 or config.lambda_feat > 0
          or config.lambda_sisdr > 0)


def uses_gan(config) -> bool:
  return config.lambda_adv > 0 or config.lambda_feat > 0


def uses_aux(config) -> bool:
  """The separate-then-select losses (they need the competing talker)."""
  return (config.lambda_sep > 0 or config.lambda_sep_env > 0 or config.lambda_select > 0
          or config.lambda_token > 0)


MIX_INPUTS = ("quantized", "continuous")


def mix_fields(config) -> list[str]:
  """The fields the model's mixture input comes from (see :func:`mix_latent`)."""
  if config.model.mix_input not in MIX_INPUTS:
    raise ValueError(f"model.mix_input must be one of {MIX_INPUTS}, got "
                     f"{config.model.mix_input!r}.")
  return ["noisy_codes"] + (["noisy_latent"] if config.model.mix_input == "continuous" else [])


def mix_latent(qparams, batch: dict, mix_input: str) -> jax.Array:
  """The generator's mixture input ``[batch, latent_dim, frames]``.

  ``model.mix_input="quantized"`` (the original): the mixture's quantized z, from its
  codes. ``"continuous"``: DAC's encoder output before quantization (precomputed as
  ``noisy_latent``): at inference the mixture audio is at hand, so nothing forces its
  latent through the codebooks, whose few bits per frame blur two overlapping talkers.
  Targets stay quantized either way (the decoder needs them).
  """
  if mix_input == "continuous":
    if "noisy_latent" not in batch:
      raise KeyError("model.mix_input='continuous' needs the batch field 'noisy_latent' "
                     "(request steps.mix_fields(config) from the source).")
    return jnp.asarray(batch["noisy_latent"], jnp.float32)
  return codec.codes_to_z(qparams, batch["noisy_codes"])


TARGET_LATENTS = ("quantized", "continuous")

# What the waveform terms decode (``train.waveform_output``; see :func:`attended_stream`),
# and which terms are waveform terms (``train.waveform_ramp_steps`` ramps their weights).
WAVEFORM_OUTPUTS = ("output", "attended_stream", "attended_stream_masked")
WAVEFORM_TERMS = ("mel", "adversarial", "features", "sisdr")


def target_fields(config, talker: str = "clean") -> list[str]:
  """The fields ``talker``'s ("clean": attended, "unattended") latent target comes
  from (see :func:`target_latent`)."""
  if config.model.target_latent not in TARGET_LATENTS:
    raise ValueError(f"model.target_latent must be one of {TARGET_LATENTS}, got "
                     f"{config.model.target_latent!r}.")
  return [f"{talker}_codes"] + ([f"{talker}_latent"]
                                if config.model.target_latent == "continuous" else [])


def target_latent(qparams, batch: dict, target: str, talker: str = "clean") -> jax.Array:
  """A talker's latent target ``[batch, latent_dim, frames]``.

  ``model.target_latent="quantized"`` (the original): the talker's quantized z, from
  its codes. ``"continuous"``: DAC's encoder output of the talker before quantization
  (precomputed as ``<talker>_latent``). The two talkers' continuous latents add up to
  the mixture's far better than their quantized ones (additivity 0.87 vs 0.76 with
  the demo codec, docs/codec.md), so streams constrained to add up to the
  mixture (``model.mixture_consistency``) can reach them; DAC's decoder takes either.
  """
  if target == "continuous":
    field = f"{talker}_latent"
    if field not in batch:
      raise KeyError(f"model.target_latent='continuous' needs the batch field {field!r} "
                     f"(request steps.target_fields(config) from the source).")
    return jnp.asarray(batch[field], jnp.float32)
  return codec.codes_to_z(qparams, batch[f"{talker}_codes"])


def batch_fields(config) -> tuple[str, ...]:
  """The source fields a training batch needs under ``config``'s loss weights."""
  fields = mix_fields(config) + target_fields(config) + ["eeg"]
  # The encoding cue form fits its encoding model on both talkers' envelopes.
  encoding = config.model.cue_form == "encoding"
  if (uses_waveform(config) or config.lambda_env > 0 or config.lambda_sep_env > 0
      or config.lambda_env_contrast > 0 or config.train.cue_curriculum_steps > 0
      or encoding):
    fields.append("clean")
  if uses_aux(config):
    fields += target_fields(config, "unattended")
  # The forward cue form's envelope term compares both talkers' predicted responses.
  forward_cue = config.model.cue_form == "forward" and config.lambda_env > 0
  if config.lambda_sep_env > 0 or config.lambda_env_contrast > 0 or forward_cue or encoding:
    fields.append("unattended")
  if uses_waveform(config) and config.train.waveform_output == "attended_stream_masked":
    fields.append("noisy")               # the waveform terms judge the masked mixture
  return tuple(fields + subject_fields(config))


def subject_fields(config) -> list[str]:
  """``["subject"]`` where the model decodes each subject with its own fit
  (``model.encoding_subjects``), else none."""
  return ["subject"] if config.model.encoding_subjects > 0 else []


@dataclasses.dataclass(frozen=True)
class Models:
  """What a step closes over: static for jit (modules, optimizers, pure functions,
  flags), no arrays (the codec's travel in ``frozen``)."""
  generator: nn.Module
  discriminator: nn.Module | None
  decode: Callable[[PyTree, jax.Array], jax.Array] | None   # (frozen["decoder"], z [B, D, F])
                                                            # -> [B, 1, F * hop]
  g_tx: optax.GradientTransformation
  d_tx: optax.GradientTransformation | None
  mix_input: str = "quantized"                      # model.mix_input (see mix_latent)
  # model.output_waveform="refined_mask": (frozen["refiner"], mixture [B, T], selected
  # [B, T], competing [B, T]) -> [B, T] (models/refiner.py); None otherwise
  refine: Callable[..., jax.Array] | None = None
  target: str = "quantized"                         # model.target_latent (see target_latent)


def init_generator(config, models: Models, example: dict, frozen: dict, rngs: dict) -> dict:
  """The generator's initial ``{"params", "batch_stats"}`` for one example batch's
  shapes; ``rngs``: ``{"params", "dropout"}`` keys."""
  z_mix = mix_latent(frozen["quantizer"], example, config.model.mix_input)
  variables = models.generator.init(rngs, z_mix, jnp.asarray(example["eeg"]), train=False,
                                    quantizer=frozen["quantizer"])
  return dict(params=variables["params"], batch_stats=variables.get("batch_stats", {}))


def init_state(config, models: Models, example: dict, frozen: dict, seed: int) -> dict:
  """Initial train state from one example batch (shapes only matter)."""
  rng = jax.random.PRNGKey(seed)
  g_rng, d_rng, drop_rng, state_rng = jax.random.split(rng, 4)
  g = init_generator(config, models, example, frozen, {"params": g_rng, "dropout": drop_rng})
  g["opt"] = models.g_tx.init(g["params"])
  d = {}
  if models.discriminator is not None:
    frames = mix_latent(frozen["quantizer"], example, config.model.mix_input).shape[-1]
    audio = jnp.zeros((1, 1, frames * codec.hop_length(config.codec.arch)), jnp.float32)
    d_params = models.discriminator.init(d_rng, audio)["params"]
    d = dict(params=d_params, opt=models.d_tx.init(d_params))
  return dict(step=jnp.asarray(0, jnp.int32), rng=state_rng, g=g, d=d,
              plateau=optim.init_plateau())


def _latents(models: Models, batch: dict, quantizer: PyTree):
  z_mix = mix_latent(quantizer, batch, models.mix_input)
  z_tgt = target_latent(quantizer, batch, models.target)
  return z_mix, z_tgt


def envelope_target(config, batch, n_frames, talker: str = "clean"):
  """``talker``'s envelope ``[b, n_frames]`` at the EEG rate, aligned with the
  envelope head's output."""
  env = losses.speech_envelope(batch[talker][:, 0], config.codec.arch.sample_rate,
                               config.data.eeg_rate, batch["eeg"].shape[-1])
  return env[:, :n_frames]          # causal alignment: see losses/envelope.py


def envelope_pair(config, batch, env, aux, unattended: bool):
  """What the EEG's envelope terms compare: ``(cue, attended, unattended)``, each
  ``[b, n]`` (``unattended`` None in the backward form unless asked for). Backward: the
  decoded envelope ``env [b, T']`` and the talkers' envelopes at the EEG rate. Forward
  (``model.cue_form``): the selector's whitened cue and the responses predicted with
  each talker attended, at the frame rate, as the selector compares them. Encoding:
  as backward (its cue has no parameters to train; the terms train the EEG encoder's
  envelope head, shaping the features the cross-attention reads)."""
  if config.model.cue_form in ("backward", "encoding"):
    return (env, envelope_target(config, batch, env.shape[-1]),
            envelope_target(config, batch, env.shape[-1], "unattended") if unattended
            else None)
  talkers = jnp.stack(talker_envelopes(config, batch, aux["cue"].shape[1]), -1)
  hypotheses = cue_forms.compared(talkers, config.model.cue_form, aux["response"],
                                  aux["whitener"])
  return aux["cue"], hypotheses[..., 0], hypotheses[..., 1]


def cue_oracle_weight(config, step: jax.Array) -> jax.Array:
  """The oracle's share of the curriculum's cue at ``step``: 1 -> 0 linearly."""
  n = max(config.train.cue_curriculum_steps, 1)
  return jnp.clip(1.0 - jnp.asarray(step, jnp.float32) / n, 0.0, 1.0)


def curriculum_cue(config, batch: dict, env: jax.Array, step: jax.Array) -> jax.Array:
  """The cue curriculum's selector cue ``[b, T']`` at ``step``.

  ``w = max(0, 1 - step / train.cue_curriculum_steps)`` of the attended talker's own
  envelope (the oracle) plus ``1 - w`` of the EEG's decoded ``env``, each
  standardized. Early on the selector picks the right stream whatever the EEG
  encoder has learned, so the attended latent term trains the stream it should
  (not a blend of both); by the end of the curriculum the cue is the EEG's alone.
  The oracle is detached: it is data, not a path for gradients.
  """
  w = cue_oracle_weight(config, step)
  oracle = jax.lax.stop_gradient(envelope_target(config, batch, env.shape[-1]))
  return w * cue_forms.standardize(oracle) + (1.0 - w) * cue_forms.standardize(env)


def _pit(cost_same, cost_swap):
  """Permutation-invariant loss: per-example min over the two assignments, mean."""
  return jnp.mean(jnp.minimum(cost_same, cost_swap))


def token_cross_entropy(logits: jax.Array, codes: jax.Array) -> jax.Array:
  """Mean cross-entropy (nats) per example of ``logits [b, n, F, K]`` against the
  first n codebooks of ``codes [b, >= n, F]`` -> ``[b]``."""
  n = logits.shape[1]
  logp = jax.nn.log_softmax(logits, axis=-1)
  picked = jnp.take_along_axis(logp, codes[:, :n, :, None].astype(jnp.int32), axis=-1)
  return -jnp.mean(picked[..., 0], axis=(1, 2))


def separation_terms(aux: dict, z_att, z_unatt, env_att=None, env_unatt=None, *,
                     normalize: bool = True, codes=None) -> dict:
  """PIT losses of the selector's two streams vs both talkers.

  ``aux["streams"] [b, 2, D, F]`` vs ``z_att``/``z_unatt [b, D, F]`` ("sep": the
  per-example minimum over the two assignments, halved); with the talkers'
  frame-rate envelopes ``[b, F]``, ``aux["stream_env"] [b, F, 2]``'s negative
  Pearson correlation under the assignment the latent term chose ("sep_env").

  "select": the attended-versus-unattended contrastive term, a two-way InfoNCE of
  the selector: cross-entropy of ``aux["logits"] [b, F, 2]`` (the cue's correlation
  with each stream's envelope, times the learned inverse temperature) against the
  stream the latent term assigned to the attended talker. It trains the decision
  evaluation makes (the better-correlated stream) directly, where the attended
  latent term on the soft blend only moves it as far as the streams differ.

  "token" (``model.stream_form="tokens"``, with ``codes``: the attended and the
  unattended talker's codes ``[b, n_codebooks, F]``): the PIT cross-entropy of
  ``aux["token_logits"] [b, 2, n, F, K]`` against both talkers' codes, halved; its
  assignment is then the one "select" and "sep_env" use.
  """
  per = lambda p, t: per_example(lambda a, b: losses.latent_loss(a, b, normalize), p, t)
  s0, s1 = aux["streams"][:, 0], aux["streams"][:, 1]
  same = per(s0, z_att) + per(s1, z_unatt)
  swap = per(s0, z_unatt) + per(s1, z_att)
  terms = dict(sep=_pit(same, swap) / 2)
  if codes is not None and "token_logits" in aux:
    ce, (c_att, c_unatt) = token_cross_entropy, codes
    logits = aux["token_logits"]
    same = ce(logits[:, 0], c_att) + ce(logits[:, 1], c_unatt)
    swap = ce(logits[:, 0], c_unatt) + ce(logits[:, 1], c_att)
    terms["token"] = _pit(same, swap) / 2
  swapped = jax.lax.stop_gradient(swap < same)                # [b]: stream 1 is attended
  log_w = jax.nn.log_softmax(aux["logits"], axis=-1)          # [b, F, 2]
  terms["select"] = -jnp.mean(jnp.where(swapped[:, None], log_w[..., 1], log_w[..., 0]))
  if env_att is not None:
    pear = losses.envelope.pearson
    e0, e1 = aux["stream_env"][..., 0], aux["stream_env"][..., 1]
    terms["sep_env"] = -jnp.mean(jnp.where(swapped, pear(e0, env_unatt) + pear(e1, env_att),
                                           pear(e0, env_att) + pear(e1, env_unatt))) / 2
  return terms


def talker_envelopes(config, batch: dict, n_frames: int) -> tuple[jax.Array, jax.Array]:
  """Both talkers' envelopes at the latent frame rate, ``[b, n_frames]`` each."""
  arch = config.codec.arch
  env = lambda x: losses.speech_envelope(x[:, 0], arch.sample_rate, codec.frame_rate(arch),
                                         n_frames)
  return env(batch["clean"]), env(batch["unattended"])


def separation_losses(config, aux, batch, z_tgt, qparams) -> dict:
  """:func:`separation_terms` for a training batch (talker envelopes from the audio)."""
  z_unatt = target_latent(qparams, batch, config.model.target_latent, "unattended")
  env_att = env_unatt = None
  if config.lambda_sep_env > 0:
    env_att, env_unatt = talker_envelopes(config, batch, aux["stream_env"].shape[1])
  codes = None
  if config.lambda_token > 0:
    codes = (batch["clean_codes"], batch["unattended_codes"])
  terms = separation_terms(aux, z_tgt, z_unatt, env_att, env_unatt,
                           normalize=config.normalize_latents, codes=codes)
  return {k: v for k, v in terms.items() if config[f"lambda_{k}"] > 0}


# Bits of the ``nonfinite`` metric: which part of a step was not finite.
NONFINITE_PARTS = ("loss", "gradients", "updated parameters or optimizer state")


def nonfinite_parts(code: int) -> list[str]:
  """The parts named by a step's ``nonfinite`` bit mask."""
  return [name for i, name in enumerate(NONFINITE_PARTS) if int(code) >> i & 1]


def _finite(tree) -> jax.Array:
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_train_step(config, models: Models, *, total_steps: int, waveform: bool = True
                    ) -> Callable[[dict, dict, dict], tuple[dict, dict]]:
  """The (unjitted) train step ``(state, batch, frozen) -> (state, metrics)`` for
  ``config``; see the module docstring. Not differentiated w.r.t. ``frozen``, nor
  to be donated (the run's one copy).

  ``total_steps``: the run's resolved length (the learning-rate schedule's horizon).

  ``waveform=False`` leaves the waveform terms (mel, adversarial, features) and the
  discriminator update out while keeping the state's structure: the first
  ``train.waveform_start`` steps of a curriculum.
  """
  lam = dict(latent=config.lambda_recon, envelope=config.lambda_env,
             mel=config.lambda_mel, adversarial=config.lambda_adv,
             features=config.lambda_feat, sisdr=config.lambda_sisdr, sep=config.lambda_sep,
             sep_env=config.lambda_sep_env, select=config.lambda_select,
             token=config.lambda_token, env_contrast=config.lambda_env_contrast)
  aux_on = uses_aux(config)
  curriculum = config.train.cue_curriculum_steps > 0
  wave_on, gan_on = uses_waveform(config) and waveform, uses_gan(config) and waveform
  if config.train.waveform_output not in WAVEFORM_OUTPUTS:
    raise ValueError(f"train.waveform_output must be one of {WAVEFORM_OUTPUTS}, got "
                     f"{config.train.waveform_output!r}.")
  mask = config.train.waveform_output == "attended_stream_masked"
  held_stream = mask or config.train.waveform_output == "attended_stream"
  if held_stream and wave_on and config.model.selector != "correlation":
    raise ValueError(f"train.waveform_output={config.train.waveform_output!r} needs the "
                     f"selector's streams (model.selector='correlation').")
  sample_rate = config.codec.arch.sample_rate
  mel_settings = dict(config.mel)
  disc = models.discriminator

  def step(state: dict, batch: dict, frozen: dict) -> tuple[dict, dict]:
    rng = jax.random.fold_in(state["rng"], state["step"])
    z_mix, z_tgt = _latents(models, batch, frozen["quantizer"])

    def forward(g_params):
      variables = {"params": g_params, "batch_stats": state["g"]["batch_stats"]}
      cue_fn = talkers = None
      if curriculum:
        cue_fn = lambda env: curriculum_cue(config, batch, env, state["step"])
      if config.model.cue_form == "encoding":
        n = batch["eeg"].shape[-1]
        talkers = jnp.stack([envelope_target(config, batch, n, k)
                             for k in ("clean", "unattended")], -1)          # [b, T, 2]
      (z_pred, env, aux), updates = models.generator.apply(
          variables, z_mix, batch["eeg"], train=True, rngs={"dropout": rng},
          mutable=["batch_stats"], return_aux=True, cue_fn=cue_fn,
          quantizer=frozen["quantizer"], talkers=talkers, subject=batch.get("subject"))
      wave = None
      if wave_on:
        wave = decoded_waveform(
            models, variables, frozen, z_pred, aux["streams"] if held_stream else None,
            z_mix, z_tgt, requantize=config.codec.requantize_output,
            n_q=config.codec.n_quantizers_eval,
            mask=((batch["noisy"], config.model.mask_power, config.model.mask_floor)
                  if mask else None))
      return (z_pred, env, wave, aux if aux_on else {}), updates.get("batch_stats", {})

    outputs, pullback, batch_stats = jax.vjp(forward, state["g"]["params"], has_aux=True)
    wave = outputs[2]
    metrics = {}

    d_state, d_grads = state["d"], {}
    if gan_on:
      real = batch["clean"]

      def d_loss_fn(d_params):
        fake_maps = disc.apply({"params": d_params}, jax.lax.stop_gradient(wave))
        real_maps = disc.apply({"params": d_params}, real)
        return losses.discriminator_loss(fake_maps, real_maps)

      d_loss, d_grads = jax.value_and_grad(d_loss_fn)(d_state["params"])
      d_updates, d_opt = models.d_tx.update(d_grads, d_state["opt"], d_state["params"])
      d_state = dict(params=optax.apply_updates(d_state["params"], d_updates), opt=d_opt)
      metrics["d_loss"] = d_loss
      metrics["d_grad_norm"] = optax.global_norm(d_grads)

    def g_loss_fn(outs):
      z_pred, env, wave, aux = outs
      terms = {"latent": losses.latent_loss(z_pred, z_tgt, config.normalize_latents)}
      if aux_on:
        terms.update(separation_losses(config, aux, batch, z_tgt, frozen["quantizer"]))
      if lam["envelope"] > 0 or lam["env_contrast"] > 0:
        cue, att, unatt = envelope_pair(config, batch, env, aux, lam["env_contrast"] > 0)
      if lam["envelope"] > 0:
        terms["envelope"] = losses.envelope_loss(cue, att)
      if lam["env_contrast"] > 0:
        terms["env_contrast"] = losses.envelope_contrast_loss(
            cue, att, unatt, config.env_contrast_temperature)
      if lam["mel"] > 0 and wave_on:
        terms["mel"] = losses.mel_loss(wave, batch["clean"], sample_rate, **mel_settings)
      if lam["sisdr"] > 0 and wave_on:
        terms["sisdr"] = -jnp.mean(losses.si_sdr(batch["clean"], wave))
      if gan_on:
        fake_maps = disc.apply({"params": d_state["params"]}, wave)
        real_maps = disc.apply({"params": d_state["params"]}, batch["clean"])
        terms["adversarial"], terms["features"] = losses.generator_loss(fake_maps, real_maps)
      ramp = waveform_ramp(state["step"], config.train.waveform_start,
                           config.train.waveform_ramp_steps)
      total = sum(lam[k] * (ramp if k in WAVEFORM_TERMS else 1.0) * v
                  for k, v in terms.items())
      return total, terms

    (g_loss, terms), out_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(outputs)
    (g_grads,) = pullback(out_grads)
    g = state["g"]
    lr = optim.learning_rate(config, state["step"], state["plateau"]["scale"],
                             total_steps)
    if wave_on:
      lr = lr * config.train.waveform_lr_scale
    g_opt = optim.set_learning_rate(g["opt"], lr)
    g_updates, g_opt = models.g_tx.update(g_grads, g_opt, g["params"])
    new_g = dict(params=optax.apply_updates(g["params"], g_updates),
                 batch_stats=batch_stats, opt=g_opt)
    metrics.update({f"loss_{k}": v for k, v in terms.items()})
    if curriculum:
      metrics["cue_oracle_weight"] = cue_oracle_weight(config, state["step"])
    metrics.update(g_loss=g_loss, g_grad_norm=optax.global_norm(g_grads), lr=lr,
                   # The gradient reaching the EEG encoder: the issue-12 diagnostic of
                   # whether training still asks anything of the EEG.
                   g_grad_norm_eeg=optax.global_norm(g_grads["eeg_encoder"]))

    # Anything non-finite -- the losses, the gradients, or the updated parameters
    # and optimizer states (a finite gradient times a huge rate overflows) --
    # keeps the previous state, so no NaN or inf reaches the parameters or a
    # checkpoint; the host stops or skips by config, told which part failed.
    parts = jnp.stack([_finite((g_loss, metrics.get("d_loss", 0.0))),
                       _finite((g_grads, d_grads)),
                       _finite((new_g, d_state))])
    ok = jnp.all(parts)
    new_state = dict(step=state["step"] + 1, rng=state["rng"], g=new_g, d=d_state,
                     plateau=state["plateau"])
    keep = lambda new, old: jnp.where(ok, new, old)
    new_state = dict(new_state,
                     g=jax.tree.map(keep, new_g, state["g"]),
                     d=jax.tree.map(keep, d_state, state["d"]))
    metrics["nonfinite"] = jnp.sum(jnp.where(parts, 0, 2 ** jnp.arange(3)))
    metrics["finite"] = ok
    return new_state, metrics

  return step


def waveform_ramp(step: jax.Array, start: int, ramp_steps: int) -> jax.Array:
  """The waveform terms' weight factor at ``step``: 1, or with ``ramp_steps`` > 0 a
  linear ramp from 1 / ramp_steps at ``start`` to 1 (a new term's gradient enters
  gradually instead of at once into an optimizer whose moments never saw it)."""
  if ramp_steps <= 0:
    return jnp.asarray(1.0, jnp.float32)
  done = jnp.asarray(step, jnp.float32) - start + 1.0
  return jnp.clip(done / ramp_steps, 0.0, 1.0)


def attended_stream(streams: jax.Array, z_att: jax.Array, other: bool = False) -> jax.Array:
  """The selector's stream nearer the attended talker's latent (mean frame cosine):
  ``streams [b, 2, D, F]``, ``z_att [b, D, F]`` -> ``[b, D, F]`` (``other``: the
  other stream). The choice is held (no gradient through it); the chosen stream
  keeps its own."""
  cos = jax.vmap(losses.frame_cosine, in_axes=(1, None), out_axes=1)(streams, z_att)  # [b, 2]
  pick = jax.nn.one_hot(jnp.argmax(jax.lax.stop_gradient(cos), axis=1), 2, dtype=streams.dtype)
  return jnp.einsum("bkdf,bk->bdf", streams, 1.0 - pick if other else pick)


def decoded_waveform(models: Models, variables: dict, frozen: dict, z_pred: jax.Array,
                     streams: jax.Array | None, z_mix: jax.Array, z_att: jax.Array, *,
                     requantize: bool, n_q: int, mask: tuple | None = None) -> jax.Array:
  """What the waveform terms judge: ``[b, 1, samples]``, the decode of ``z_pred
  [b, D, F]``, or with ``streams [b, 2, D, F]`` (``train.waveform_output=
  "attended_stream"``) of the stream nearer ``z_att`` at the output's scale, each
  re-quantized as :func:`decoded_latent` says.

  ``mask``: ``(mixture [b, 1, samples], power, floor)`` (``train.waveform_output=
  "attended_stream_masked"``, with ``streams``): the mixture through the ratio mask of
  that decode and the other stream's (``mixture_mask``'s output).
  """
  z = z_pred
  rescale = lambda z: models.generator.apply(variables, z, z_mix, method="_rescale")
  if streams is not None:
    z = rescale(attended_stream(streams, z_att))
  decode = lambda z: models.decode(frozen["decoder"],
                                   decoded_latent(frozen["quantizer"], z, requantize, n_q))
  if mask is None:
    return decode(z)
  mixture, power, floor = mask
  competing = rescale(attended_stream(streams, z_att, other=True))
  both = decode(jnp.concatenate([z, competing]))         # one decode of 2b examples
  return mixture_mask.ratio_mask(mixture, both[:len(z)], both[len(z):], power, floor)


def decoded_latent(quantizer: dict, z: jax.Array, requantize: bool, n_q: int) -> jax.Array:
  """What the waveform terms decode: ``z [b, latent, F]`` as evaluation decodes it
  (re-quantized with ``n_q`` codebooks unless ``requantize`` is False), with a
  straight-through gradient (DAC's own, around its quantizer): the mel and GAN terms
  then judge the audio evaluation outputs, not a continuous decode it never makes."""
  decoded = codec.output_latent(quantizer, z, requantize, n_q)
  return z if decoded is z else z + jax.lax.stop_gradient(decoded - z)


def predict(models: Models, state: dict, batch: dict, frozen: dict,
            return_aux: bool = False, cue_fn=None) -> tuple:
  """Eval-mode prediction: ``(z_pred [B, D, F], env_pred [B, T'])`` (``+ aux``, the
  selector's streams/envelopes/weights/cue, with ``return_aux``). ``cue_fn``: the
  selector's cue in place of the decoded envelope (``NeuroCodec.__call__``). The
  batch's ``subject [B]``, where present, picks per-subject encoding models."""
  z_mix = mix_latent(frozen["quantizer"], batch, models.mix_input)   # no target needed
  variables = {"params": state["g"]["params"], "batch_stats": state["g"]["batch_stats"]}
  return models.generator.apply(variables, z_mix, batch["eeg"], train=False,
                                return_aux=return_aux, cue_fn=cue_fn,
                                quantizer=frozen["quantizer"], subject=batch.get("subject"))


def per_example(loss_fn, *arrays) -> jax.Array:
  """``[batch]`` values of a batch-mean loss, each example as a batch of one."""
  return jax.vmap(lambda *xs: loss_fn(*(x[None] for x in xs)))(*arrays)


def val_fields(config, has_unattended: bool) -> tuple[str, ...]:
  """The source fields validation needs (with the competing talker's codes when the
  split has them: validation then reports identification)."""
  fields = mix_fields(config) + target_fields(config) + ["eeg", "clean"]
  if config.model.output_waveform == "mixture_mask":
    fields.append("noisy")                   # the masked mixture is the output
  return tuple(fields + (["unattended_codes"] if has_unattended else [])
               + subject_fields(config))
