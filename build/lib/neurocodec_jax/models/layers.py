"""Small layers: Snake and PReLU activations, sinusoidal positional encodings."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


class Snake(nn.Module):
  """DAC's Snake: ``x + 1 / (alpha + 1e-9) * sin(alpha x)^2``, alpha per channel (init 1).

  ``axis`` is the channel axis of the input.
  """
  axis: int = -1

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.ones, (x.shape[self.axis],))
    shape = [1] * x.ndim
    shape[self.axis] = -1
    alpha = alpha.reshape(shape)
    return x + jnp.sin(alpha * x) ** 2 / (alpha + 1e-9)


class PReLU(nn.Module):
  """torch's ``nn.PReLU()``: one learnable slope, init 0.25."""

  @nn.compact
  def __call__(self, x):
    a = self.param("alpha", nn.initializers.constant(0.25), ())
    return jnp.where(x >= 0, x, a * x)


ACTIVATIONS = ("snake", "prelu")


def activation(kind: str, axis: int = -1, name: str | None = None) -> nn.Module:
  if kind == "snake":
    return Snake(axis=axis, name=name)
  if kind == "prelu":
    return PReLU(name=name)
  raise ValueError(f"activation must be one of {ACTIVATIONS}, got {kind!r}.")


def sinusoidal_encoding(max_len: int, dim: int) -> np.ndarray:
  """``[max_len, dim]``: sin at even, cos at odd channels, 10000^(-2i/dim) frequencies."""
  return sinusoidal_at(np.arange(max_len, dtype=np.float64), dim)


def sinusoidal_at(positions: np.ndarray, dim: int) -> np.ndarray:
  """``[len(positions), dim]``: the sinusoidal encoding at (fractional) positions."""
  pos = np.asarray(positions, np.float64)[:, None]
  freq = np.exp(np.arange(0, dim, 2) * (-math.log(10000.0) / dim))
  pe = np.zeros((len(positions), dim), np.float32)
  pe[:, 0::2] = np.sin(pos * freq)
  pe[:, 1::2] = np.cos(pos * freq[: dim // 2])
  return pe
