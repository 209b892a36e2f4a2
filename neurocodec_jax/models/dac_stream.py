"""DAC's encoder and decoder (``dac_jax``) as stateful streams: a block costs its own samples.

Each convolution keeps the newest inputs its next outputs need (``(kernel - 1) *
dilation`` of them, up to the stride's alignment; a transposed conv keeps the inputs
its overlap reaches back to), and each residual unit delays its skip path by its
branch's look-ahead. A stream element carries its delay: a chunk of ``L`` samples
after ``k`` blocks holds the layer's samples ``k * L - delay - L .. k * L - delay - 1``,
each emitted as soon as every input it reads has arrived, so the delays add up to
the codec's look-ahead (``streaming.encoder_receptive_field``). Samples before the
stream's start are zeros, as the whole signal's zero padding (each layer's output
is masked there: a conv's bias is not zero). The outputs equal
``dac_jax.Encoder``/``Decoder`` over the whole signal up to float rounding, except
at the end, where the whole signal is zero-padded and a stream just stops.

The state is a list of arrays (``[batch, channels, kept]``), in the order the layers
read it: :func:`init_state` builds it for a given chunk length.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

from neurocodec_jax.models import dac_jax
from neurocodec_jax.ops.precision import HIGHEST


class _Walk:
  """The state's arrays in order: read (``old``, or zeros of the asked shape when None)
  and rewritten; ``k`` the blocks so far, this one included (traced)."""

  def __init__(self, old, k):
    self.old, self.new, self.k = old, [], k

  def carry(self, shape, dtype) -> jax.Array:
    if self.old is None:
      return jnp.zeros(shape, dtype)
    return self.old[len(self.new)]

  def keep(self, a: jax.Array) -> None:
    self.new.append(a)

  def started(self, y: jax.Array, delay: int) -> jax.Array:
    """``y [B, C, L]`` with the samples before the stream's start zeroed."""
    n = y.shape[-1]
    index = self.k * n - delay - n + jnp.arange(n)
    return jnp.where(index >= 0, y, 0.0)


def _snake(x, alpha):
  alpha = alpha.reshape(1, -1, 1)
  return x + jnp.sin(alpha * x) ** 2 / (alpha + 1e-9)       # layers.Snake's order


def _conv(w: _Walk, x, delay: int, p: dict, *, stride=1, dilation=1, padding=0):
  """``layers.Conv1d`` (torch layout) on a stream: ``x [B, C, L]`` -> ``[B, F, L / stride]``
  and its delay. Output t reads inputs ``t * stride - padding .. + span - 1``; the
  kept inputs (``m``) put the chunk's first window on a stride boundary."""
  kernel = p["kernel"]
  span = dilation * (kernel.shape[-1] - 1) + 1
  n = x.shape[-1]
  if n % stride:
    raise ValueError(f"a chunk of {n} samples is not a multiple of the stride {stride}.")
  m = span - stride + (padding - delay - (span - stride)) % stride
  if m:
    buf = jnp.concatenate([w.carry(x.shape[:2] + (m,), x.dtype), x], axis=-1)
    w.keep(buf[..., -m:])
  else:
    buf = x
  y = jax.lax.conv_general_dilated(
      buf, kernel, window_strides=(stride,), padding="VALID", rhs_dilation=(dilation,),
      dimension_numbers=("NCH", "OIH", "NCH"), precision=HIGHEST)
  delay = (delay + m - padding) // stride
  return w.started(y + p["bias"][None, :, None], delay), delay


def _conv_t(w: _Walk, x, delay: int, p: dict, *, stride: int, padding: int):
  """``dac_jax.ConvTranspose1d`` on a stream: the input dilated by ``stride`` (each
  sample then ``stride - 1`` zeros), a stride-1 conv with the flipped kernel and
  ``kernel - 1 - padding`` of padding; ``[B, C, L] -> [B, F, L * stride]``."""
  kernel = p["kernel"]                                     # [C_in, F, K]
  size = kernel.shape[-1]
  n = x.shape[-1]
  m = -(-(size - 1) // stride)                             # inputs the overlap reaches
  buf = jnp.concatenate([w.carry(x.shape[:2] + (m,), x.dtype), x], axis=-1)
  w.keep(buf[..., -m:])
  y = jax.lax.conv_general_dilated(
      buf, jnp.flip(kernel, axis=2), window_strides=(1,), padding=[(0, stride - 1)],
      lhs_dilation=(stride,), dimension_numbers=("NCH", "IOH", "NCH"), precision=HIGHEST)
  y = y[..., -n * stride:]
  delay = delay * stride + padding                   # (kernel - 1) kept - (kernel - 1 - padding)
  return w.started(y + p["bias"][None, :, None], delay), delay


def _delayed(w: _Walk, x, by: int):
  """``x [B, C, L]`` a further ``by`` samples late (a FIFO)."""
  if by == 0:
    return x
  buf = jnp.concatenate([w.carry(x.shape[:2] + (by,), x.dtype), x], axis=-1)
  w.keep(buf[..., x.shape[-1]:])
  return buf[..., :x.shape[-1]]


def _residual(w: _Walk, x, delay: int, p: dict, dilation: int):
  y = _snake(x, p["snake_0"]["alpha"])
  y, d = _conv(w, y, delay, p["conv_0"], dilation=dilation, padding=3 * dilation)
  y = _snake(y, p["snake_1"]["alpha"])
  y, d = _conv(w, y, d, p["conv_1"])
  return _delayed(w, x, d - delay) + y, d


def _encoder(w: _Walk, params: dict, audio):
  """``audio [B, 1, L]`` (delay 0) -> ``(latent [B, D, L / hop], delay in frames)``."""
  module = dac_jax.encoder_module(params)
  x, d = _conv(w, audio, 0, params["conv_in"], padding=3)
  for i, s in enumerate(module.strides):
    p = params[f"block_{i}"]
    for j, dilation in enumerate((1, 3, 9)):
      x, d = _residual(w, x, d, p[f"res_{j}"], dilation)
    x = _snake(x, p["snake"]["alpha"])
    x, d = _conv(w, x, d, p["conv"], stride=s, padding=math.ceil(s / 2))
  x = _snake(x, params["snake_out"]["alpha"])
  return _conv(w, x, d, params["conv_out"], padding=1)


def _decoder(w: _Walk, params: dict, z, delay: int):
  """``z [B, D, F]`` (``delay`` frames) -> ``(wave [B, 1, F * hop], delay in samples)``."""
  module = dac_jax.decoder_module(params)
  x, d = _conv(w, w.started(z, delay), delay, params["conv_in"], padding=3)
  for i, s in enumerate(module.rates):
    p = params[f"block_{i}"]
    x = _snake(x, p["snake"]["alpha"])
    x, d = _conv_t(w, x, d, p["conv_t"], stride=s, padding=math.ceil(s / 2))
    for j, dilation in enumerate((1, 3, 9)):
      x, d = _residual(w, x, d, p[f"res_{j}"], dilation)
  x = _snake(x, params["snake_out"]["alpha"])
  x, d = _conv(w, x, d, params["conv_out"], padding=3)
  return jnp.tanh(x), d


def encoder_step(params: dict, state, audio: jax.Array, k: jax.Array, ahead: int):
  """One block through the encoder: ``params`` ``dac_jax.Encoder``'s, ``state`` from
  :func:`init_state` (None: a fresh stream, eagerly zero), ``audio [B, 1, L]`` (``L`` a
  multiple of the hop) the ``k``-th block (from 1) -> ``(state, latent [B, D, L / hop])``:
  frames ``k * L / hop - ahead - L / hop ..`` of the whole signal's encoding. ``ahead``
  (frames) at least the encoder's own look-ahead: the rest is a FIFO."""
  w = _Walk(state, k)
  latent, d = _encoder(w, params, audio)
  if d > ahead:
    raise ValueError(f"the encoder streams {d} frames behind; asked for {ahead}.")
  latent = _delayed(w, latent, ahead - d)
  return w.new, latent


def decoder_step(params: dict, state, z: jax.Array, k: jax.Array, delay: int, ahead: int):
  """One block through the decoder: ``z [B, D, F]`` generated frames ``k * F - delay - F
  ..`` (frames before 0 are ignored) -> ``(state, wave [B, 1, F * hop])``: frames
  ``k * F - delay - ahead - F ..`` of the whole latent's decoding (before its zero-padded
  tail). ``ahead`` (frames) at least the decoder's own look-ahead."""
  w = _Walk(state, k)
  wave, d = _decoder(w, params, z, delay)
  hop = math.prod(dac_jax.decoder_module(params).rates)
  if d > (delay + ahead) * hop:
    raise ValueError(f"the decoder streams {d} samples behind; asked for "
                     f"{(delay + ahead) * hop}.")
  wave = _delayed(w, wave, (delay + ahead) * hop - d)
  return w.new, wave


def init_state(step: Callable, params: dict, x: jax.Array, *args) -> list:
  """The zero state of ``encoder_step``/``decoder_step`` (``step``) for chunks shaped
  like ``x``; ``args`` the step's static arguments after ``k``."""
  shapes = jax.eval_shape(lambda p, xx: step(p, None, xx, jnp.int32(1), *args)[0], params, x)
  return [jnp.zeros(s.shape, s.dtype) for s in shapes]
