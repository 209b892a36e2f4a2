"""The EEG encoder of the original ("FlexibleEEGEncoder", from M3ANet), in Flax.

``[batch, C, T_eeg]`` (µV) -> features ``[batch, eeg_dim, T']`` and the envelope
head's output ``[batch, T']``, ``T' = EEGEncoder.output_length(T_eeg, kernel)`` =
``T_eeg - kernel + 1`` (``kernel`` = 8 as the original: ``T_eeg - 7``):

  BatchNorm over electrodes (or, with ``norm="trial"``, not in the original: each
  window's channels z-scored over time, as the linear baseline's, then BatchNorm's
  per-electrode scale and bias)
  -> Chebyshev graph convolution (K supports of a learnable adjacency A, C x C,
     xavier-normal init; each support with its own C x C weight over electrodes;
     summed) -> activation
  -> Conv1d(C -> eeg_dim, ``kernel`` (8), valid, no bias) -> LayerNorm over channels
  -> 1x1 conv -> [conv k3 -> act -> dropout] x 3 -> 1x1 conv
  envelope head: 1x1 conv eeg_dim -> 1
  (``linear_branch``, not in the original) + a linear backward decoder of the
  normalized EEG: sum over electrodes c and lags l < kernel of w[c, l] x[c, j + l],
  zero at initialization

The linear branch holds the classic backward model (the mTRF family's ridge decoder,
``neurocodec_jax.linear_decoder``) inside the encoder, so the envelope head need not
rediscover it through the graph convolution and the nonlinear stack; its lags
(``j .. j + kernel - 1``) lie inside the receptive field below, so the streaming
look-ahead is unchanged.

Normalization: BatchNorm's statistics at evaluation are the training subjects'
pooled ones; a subject never trained on has other channel scales. ``norm="trial"``
takes every window's own statistics instead (no running statistics; the same learnable
scale and bias per electrode). Every output then depends on the whole window, not
only on its receptive field below, so it does not stream.

Receptive field: output j depends on EEG samples j - 3 .. j + kernel + 2 (the
valid projection, then three 'same' k3 convs): ``EEGEncoder.receptive_field(kernel)``,
derived from the temporal convs the encoder is built from; its look-ahead
(kernel + 2) is what the generator's streaming mask waits for. Cortical responses to
the stimulus at time j follow by ~50-250 ms (6-32 samples at 128 Hz): the
original's kernel 8 sees the first 80 ms of that; ``model.eeg_kernel=32`` covers
the whole response (a backward model's usual 250 ms of lags).

Activation: Snake (``activation='snake'``, which also replaces the ReLU after the
graph convolution) or PReLU.

Graph normalization (the original's ``normalize_A``): A <- relu(A) with a zero
diagonal, symmetrized A + A^T, then L = I - D^-1/2 A D^-1/2, rescaled
L~ = 2 L / lambda_max - I with lambda_max = 2, i.e. L~ = -D^-1/2 A D^-1/2.
Supports: T_0 = I, T_1 = L~, T_k = 2 L~ T_{k-1} - T_{k-2}.
"""

from __future__ import annotations

import functools
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from neurocodec_jax.models.layers import Conv1d, activation
from neurocodec_jax.ops.precision import HIGHEST


# How electrodes are normalized: the original's BatchNorm, or each window's own statistics.
EEG_NORMS = ("batch", "trial")


def normalized_laplacian(adj: jax.Array) -> jax.Array:
  """Scaled Laplacian ``[C, C]`` of a learnable adjacency (see the module docstring)."""
  a = jax.nn.relu(adj) * (1 - jnp.eye(adj.shape[0], dtype=adj.dtype))
  a = a + a.T
  d = jnp.sum(a, axis=1)
  d_inv_sqrt = jnp.where(d > 0, 1 / jnp.sqrt(jnp.maximum(d, 1e-10)), 0.0)
  lap = jnp.eye(a.shape[0]) - d_inv_sqrt[:, None] * a * d_inv_sqrt[None, :]
  return 2 * lap / 2.0 - jnp.eye(a.shape[0])


def chebyshev_supports(lap: jax.Array, k: int) -> jax.Array:
  """``[k, C, C]``: T_0 = I, T_1 = L, T_j = 2 L T_{j-1} - T_{j-2}."""
  supports = [jnp.eye(lap.shape[0], dtype=lap.dtype)]
  if k > 1:
    supports.append(lap)
  for _ in range(2, k):
    supports.append(2 * lap @ supports[-1] - supports[-2])
  return jnp.stack(supports[:k])


class ChebGraphConv(nn.Module):
  """``[b, C, T] -> [b, C, T]``: sum_k W_k T_k x over the electrode axis."""
  k: int = 3

  @nn.compact
  def __call__(self, x):
    c = x.shape[1]
    adj = self.param("adjacency", nn.initializers.xavier_normal(), (c, c))
    weights = self.param("weights", nn.initializers.xavier_normal(batch_axis=(0,)),
                         (self.k, c, c))
    supports = chebyshev_supports(normalized_laplacian(adj), self.k)
    mix = jnp.einsum("koc,kcd->od", weights, supports, precision=HIGHEST)   # [C, C]
    return jnp.einsum("od,bdt->bot", mix, x, precision=HIGHEST)


class EEGEncoder(nn.Module):
  """See the module docstring. Returns ``(features [b, eeg_dim, T'], envelope [b, T'])``
  with ``T' = output_length(T, kernel)``."""
  eeg_dim: int = 64
  cheb_k: int = 3
  act: str = "snake"
  dropout: float = 0.3
  kernel: int = 8
  linear_branch: bool = False
  norm: str = "batch"

  # The conv stack after the projection: STACK_DEPTH 'same' convs of STACK_KERNEL taps.
  STACK_DEPTH: ClassVar[int] = 3
  STACK_KERNEL: ClassVar[int] = 3

  @classmethod
  def temporal_convs(cls, kernel: int) -> tuple[tuple[int, int], ...]:
    """``(taps, padding per side)`` of every conv along time, in order, all stride 1:
    the valid projection, the 1x1 in, the stack, the 1x1 out (the envelope head is 1x1)."""
    same = (cls.STACK_KERNEL, cls.STACK_KERNEL // 2)
    return ((kernel, 0), (1, 0)) + (same,) * cls.STACK_DEPTH + ((1, 0),)

  @classmethod
  def output_length(cls, n_eeg: int, kernel: int) -> int:
    """Output length ``T'`` for ``n_eeg`` EEG samples (``n_eeg - kernel + 1``)."""
    for taps, pad in cls.temporal_convs(kernel):
      n_eeg += 2 * pad - taps + 1
    return n_eeg

  @classmethod
  def receptive_field(cls, kernel: int) -> tuple[int, int]:
    """``(first, last)``: output j depends on EEG samples j + first .. j + last
    (within the window), ``(-3, kernel + 2)``; ``last`` is the look-ahead. (With
    ``norm="trial"`` every output also reads the whole window's statistics.)"""
    convs = cls.temporal_convs(kernel)
    return -sum(pad for _, pad in convs), sum(taps - 1 - pad for taps, pad in convs)

  @nn.compact
  def __call__(self, eeg: jax.Array, *, train: bool):
    # Flax's conv layout: the tree the encoder's checkpoints hold (``layers.Conv1d``).
    conv = functools.partial(Conv1d, layout="flax")
    if self.norm not in EEG_NORMS:
      raise ValueError(f"model.eeg_norm must be one of {EEG_NORMS}, got {self.norm!r}.")
    if self.norm == "trial":
      centred = eeg - eeg.mean(-1, keepdims=True)
      normed = centred / jnp.sqrt(jnp.mean(centred ** 2, -1, keepdims=True) + 1e-10)
      c = eeg.shape[1]
      scale = self.param("electrode_scale", nn.initializers.ones, (c,))
      bias = self.param("electrode_bias", nn.initializers.zeros, (c,))
      normed = normed * scale[:, None] + bias[:, None]
    else:
      normed = nn.BatchNorm(use_running_average=not train, axis=1, momentum=0.9, epsilon=1e-5,
                            name="electrode_norm")(eeg)
    x = ChebGraphConv(self.cheb_k, name="graph_conv")(normed)
    x = activation(self.act, axis=1, name="graph_act")(x)
    x = conv(self.eeg_dim, self.kernel, use_bias=False, name="proj_k8")(x)
    x = jnp.swapaxes(nn.LayerNorm(epsilon=1e-5, name="channel_norm")(jnp.swapaxes(x, 1, 2)), 1, 2)
    x = conv(self.eeg_dim, 1, name="in_1x1")(x)
    for i in range(self.STACK_DEPTH):
      x = conv(self.eeg_dim, self.STACK_KERNEL, padding=self.STACK_KERNEL // 2,
               name=f"conv_{i}")(x)
      x = activation(self.act, axis=1, name=f"act_{i}")(x)
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = conv(self.eeg_dim, 1, name="out_1x1")(x)
    envelope = conv(1, 1, name="envelope_head")(x)[:, 0]
    if self.linear_branch:
      w = self.param("linear_branch", nn.initializers.zeros, (1, eeg.shape[1], self.kernel))
      envelope = envelope + jax.lax.conv_general_dilated(
          normed, w, window_strides=(1,), padding="VALID",
          dimension_numbers=("NCH", "OIH", "NCH"), precision=HIGHEST)[:, 0]
    return x, envelope
