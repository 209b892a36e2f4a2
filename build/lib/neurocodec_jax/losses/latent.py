"""Latent reconstruction: MSE, on L2-normalized latents when ``normalize``.

With ``normalize`` BOTH prediction and target are normalized over the channel axis
(the original normalized only the prediction in training, a bug); the MSE of unit
vectors is 2 (1 - cos) / D per frame, a cosine distance.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(z: jax.Array, axis: int = 1, eps: float = 1e-12) -> jax.Array:
  """``z / max(||z||, eps)`` over ``axis`` (F.normalize)."""
  return z / jnp.maximum(jnp.linalg.norm(z, axis=axis, keepdims=True), eps)


def latent_loss(pred: jax.Array, target: jax.Array, normalize: bool) -> jax.Array:
  """Scalar MSE between latents ``[batch, latent_dim, frames]``."""
  if pred.shape != target.shape:
    raise ValueError(f"latent loss: prediction {pred.shape} vs target {target.shape}.")
  if normalize:
    pred, target = l2_normalize(pred), l2_normalize(target)
  return jnp.mean((pred - target) ** 2)


def frame_cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """``[n, D, F]`` x2 -> ``[n]``: per example, the mean over frames of the cosine over
  D (the ``cos_*`` metrics and latent identification of evaluation and validation)."""
  return jnp.mean(jnp.sum(l2_normalize(a) * l2_normalize(b), axis=1), axis=-1)
