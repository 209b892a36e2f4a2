"""Small layers shared by the models: Snake and PReLU activations, the channel-first
1-D convolution, sinusoidal positional encodings."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax.ops.precision import HIGHEST


class Snake(nn.Module):
  """DAC's Snake: ``x + 1 / (alpha + 1e-9) * sin(alpha x)^2``, alpha per channel (init 1),
  parameter ``alpha [C]``. ``axis`` is the channel axis of the input (DAC's codec: 1).

  Written as a division by ``alpha + 1e-9``, broadcast over the channel axis: XLA
  computes a division by a broadcast value as a multiplication by its reciprocal,
  which is DAC's own order (``x + reciprocal(alpha + 1e-9) * sin(alpha x)^2``), so the
  codec's forward and its gradient wrt ``x`` are DAC's (tests/test_codec_jax.py).
  """
  axis: int = -1

  @nn.compact
  def __call__(self, x):
    alpha = self.param("alpha", nn.initializers.ones, (x.shape[self.axis],))
    shape = [1] * x.ndim
    shape[self.axis] = -1
    alpha = alpha.reshape(shape)
    return x + jnp.sin(alpha * x) ** 2 / (alpha + 1e-9)


class Conv1d(nn.Module):
  """Channel-first 1-D convolution ``[B, C_in, T] -> [B, features, T']``: stride,
  dilation, ``padding`` zeros on each side, a bias unless ``use_bias=False``.

  One class for the two parameter layouts the project's checkpoints hold (``layout``):

  * ``"torch"`` (DAC's codec, whose weights are converted from torch with weight norm
    folded: ``codec_bridge.converters``): parameters ``kernel [features, C_in,
    kernel_size]`` (torch's layout) and ``bias [features]``, computed by XLA's
    convolution over ``[B, C, T]`` at ``HIGHEST`` precision, so that the codec matches
    DAC's float32 to its rounding.
  * ``"flax"`` (the EEG encoder, trained here): Flax's ``nn.Conv`` over the time-major
    transpose, parameters under ``Conv_0``: ``kernel [kernel_size, C_in, features]``,
    ``bias [features]``, with Flax's init and default precision. The encoder's
    checkpoints hold this tree; the layout keeps them loadable, not a difference in
    the function.
  """
  features: int
  kernel_size: int
  stride: int = 1
  dilation: int = 1
  padding: int = 0
  use_bias: bool = True
  layout: str = "torch"

  @nn.compact
  def __call__(self, x):
    if self.layout == "flax":
      y = nn.Conv(self.features, (self.kernel_size,), strides=(self.stride,),
                  padding=[(self.padding, self.padding)], kernel_dilation=(self.dilation,),
                  use_bias=self.use_bias)(jnp.swapaxes(x, 1, 2))
      return jnp.swapaxes(y, 1, 2)
    if self.layout != "torch":
      raise ValueError(f"Conv1d layout must be 'torch' or 'flax', got {self.layout!r}.")
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=1, out_axis=0),
                        (self.features, x.shape[1], self.kernel_size))
    bias = self.param("bias", nn.initializers.zeros, (self.features,)) if self.use_bias else None
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(self.stride,), padding=[(self.padding, self.padding)],
        rhs_dilation=(self.dilation,), dimension_numbers=("NCH", "OIH", "NCH"),
        precision=HIGHEST)
    return y if bias is None else y + bias[None, :, None]


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
