"""Speech envelope at the EEG rate and the negative-Pearson envelope loss.

Envelope (a standard AAD choice): the magnitude of the waveform, block-averaged
over windows of ``sample_rate / eeg_rate`` samples centred on each EEG sample
(a boxcar low-pass at ~eeg_rate/2 followed by sampling), compressed with power 0.6.
The EEG encoder's output t depends on EEG samples up to t + kernel + 2
(``EEGEncoder.receptive_field``: t + 10 for the original's kernel 8), and cortical
responses follow the stimulus by ~50-250 ms (6-32 samples at 128 Hz), so those
samples carry the envelope near t and before, never after: the trainer compares
the head's ``T' = EEGEncoder.output_length(T_eeg, kernel)`` outputs with the FIRST
``T'`` envelope samples (output t <-> envelope t: lags up to ~80 ms for kernel 8,
~265 ms for 32).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def speech_envelope(audio: jax.Array, sample_rate: int, eeg_rate: int,
                    n_frames: int) -> jax.Array:
  """``[batch, T]`` audio -> ``[batch, n_frames]`` envelope at ``eeg_rate``."""
  step = sample_rate / eeg_rate
  width = int(round(step))
  mag = jnp.abs(audio)
  csum = jnp.pad(jnp.cumsum(mag, axis=-1), ((0, 0), (1, 0)))
  centres = jnp.round((jnp.arange(n_frames) + 0.5) * step).astype(jnp.int32)
  lo = jnp.clip(centres - width // 2, 0, audio.shape[-1])
  hi = jnp.clip(lo + width, 0, audio.shape[-1])
  mean = (csum[:, hi] - csum[:, lo]) / jnp.maximum(hi - lo, 1)
  return jnp.maximum(mean, 0.0) ** 0.6


def pearson(x: jax.Array, y: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Pearson correlation over the last axis: ``[batch, T] -> [batch]``."""
  x = x - x.mean(-1, keepdims=True)
  y = y - y.mean(-1, keepdims=True)
  return (x * y).sum(-1) / (jnp.sqrt((x ** 2).sum(-1) * (y ** 2).sum(-1)) + eps)


def envelope_contrast_loss(pred_env: jax.Array, attended_env: jax.Array,
                           unattended_env: jax.Array, temperature: float) -> jax.Array:
  """Two-way InfoNCE of the decoded envelope between the talkers, mean over the batch.

  Cross-entropy of ``softmax([r_att, r_unatt] / temperature)`` against the attended
  talker, ``r`` the Pearson correlations over time of ``pred_env [batch, T]`` with each
  talker's envelope ``[batch, T]``. It trains the decision attention decoding makes
  (the better-correlated talker), where the Pearson loss only reconstructs the attended
  envelope and leaves the response to the ignored talker unpenalized.
  """
  if not pred_env.shape == attended_env.shape == unattended_env.shape:
    raise ValueError(f"envelope contrast loss: {pred_env.shape} vs {attended_env.shape} "
                     f"and {unattended_env.shape}.")
  gap = (pearson(pred_env, attended_env) - pearson(pred_env, unattended_env)) / temperature
  return jnp.mean(jax.nn.softplus(-gap))


def envelope_loss(pred_env: jax.Array, target_env: jax.Array) -> jax.Array:
  """Negative Pearson correlation over time, mean over the batch."""
  if pred_env.shape != target_env.shape:
    raise ValueError(f"envelope loss: {pred_env.shape} vs {target_env.shape}.")
  return -jnp.mean(pearson(pred_env, target_env))
