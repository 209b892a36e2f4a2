"""DAC's encoder and decoder in Flax, frozen: a pure JAX codec (no torch, no callback).

Matches ``dac.model.dac`` (descript-audio-codec 1.0.0) layer for layer: the same
layer order, kernel sizes, paddings, strides and dilations, and DAC's center crop of
the residual branch. The quantizer is the project's (``neurocodec_jax.codec``).

Layout: ``[batch, channels, time]`` throughout, as torch's ``Conv1d`` and the rest of
the project (z is ``[B, D, F]``), so no transposes at the boundaries and kernels keep
torch's layout (``Conv1d`` ``[out, in, k]``, ``ConvTranspose1d`` ``[in, out, k]``).
XLA picks the physical layout of a convolution itself. The Snake and the conv (DAC's
``WNConv1d``, weight norm folded) are the project's (``models.layers``, its
``Conv1d`` in the torch layout); the transposed conv is the codec's alone.

Weight norm is folded into plain kernels when the parameters are converted
(``codec_bridge.converters.dac_params_from_torch``): the codec is frozen, so ``g * v/||v||``
is a constant, and folding it with torch's own ``torch._weight_norm`` gives the very
kernel torch's forward uses (bitwise); a ``weight_g``/``weight_v`` pair would be
recomputed on every call and round differently from torch's.

The parameter pytree::

  {"encoder": <Encoder params>, "decoder": <Decoder params>,
   "quantizer": <neurocodec_jax.codec's pytree>}

The architecture (widths, strides) is read from the parameters' shapes
(``decoder_module``/``encoder_module``), so ``decode(params, z)`` and
``encode(params, audio)`` need nothing else.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from neurocodec_jax import codec
from neurocodec_jax.models.layers import Conv1d, Snake
from neurocodec_jax.ops.precision import HIGHEST


class ConvTranspose1d(nn.Module):
  """DAC's ``WNConvTranspose1d`` (no output padding), weight norm folded:
  ``[B, C_in, T] -> [B, features, (T - 1) * stride - 2 * padding + kernel_size]``.

  ``kernel`` ``[C_in, features, kernel_size]`` (torch's layout), ``bias`` ``[features]``.
  Computed as torch defines it: the input dilated by ``stride``, padded by
  ``kernel_size - 1 - padding`` each side, convolved with the flipped kernel.
  """
  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0

  @nn.compact
  def __call__(self, x):
    kernel = self.param("kernel", nn.initializers.lecun_normal(in_axis=0, out_axis=1),
                        (x.shape[1], self.features, self.kernel_size))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    edge = self.kernel_size - 1 - self.padding
    y = jax.lax.conv_general_dilated(
        x, jnp.flip(kernel, axis=2), window_strides=(1,), padding=[(edge, edge)],
        lhs_dilation=(self.stride,), dimension_numbers=("NCH", "IOH", "NCH"),
        precision=HIGHEST)
    return y + bias[None, :, None]


class ResidualUnit(nn.Module):
  """Snake, conv k7 (dilated), snake, conv k1, plus the input: ``[B, C, T] -> [B, C, T']``.

  DAC center-crops the input to the branch's length when they differ (never with
  its ``padding = 3 * dilation``; kept for exactness).
  """
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    dim = x.shape[1]
    y = Snake(axis=1, name="snake_0")(x)
    y = Conv1d(dim, 7, dilation=self.dilation, padding=3 * self.dilation, name="conv_0")(y)
    y = Snake(axis=1, name="snake_1")(y)
    y = Conv1d(dim, 1, name="conv_1")(y)
    crop = (x.shape[-1] - y.shape[-1]) // 2
    if crop > 0:
      x = x[..., crop:-crop]
    return x + y


class EncoderBlock(nn.Module):
  """Three residual units (dilation 1, 3, 9) at ``dim // 2``, snake, strided conv:
  ``[B, dim // 2, T] -> [B, dim, T / stride]``."""
  dim: int
  stride: int

  @nn.compact
  def __call__(self, x):
    for i, dilation in enumerate((1, 3, 9)):
      x = ResidualUnit(dilation, name=f"res_{i}")(x)
    x = Snake(axis=1, name="snake")(x)
    return Conv1d(self.dim, 2 * self.stride, stride=self.stride,
                  padding=math.ceil(self.stride / 2), name="conv")(x)


class DecoderBlock(nn.Module):
  """Snake, transposed conv (upsample by ``stride``), three residual units:
  ``[B, C_in, T] -> [B, dim, T * stride]`` (one sample fewer for an odd stride)."""
  dim: int
  stride: int

  @nn.compact
  def __call__(self, x):
    x = Snake(axis=1, name="snake")(x)
    x = ConvTranspose1d(self.dim, 2 * self.stride, stride=self.stride,
                        padding=math.ceil(self.stride / 2), name="conv_t")(x)
    for i, dilation in enumerate((1, 3, 9)):
      x = ResidualUnit(dilation, name=f"res_{i}")(x)
    return x


class Encoder(nn.Module):
  """DAC's ``Encoder``: ``[B, 1, T] -> [B, d_latent, T / prod(strides)]``."""
  d_model: int
  strides: Sequence[int]
  d_latent: int

  @nn.compact
  def __call__(self, x):
    x = Conv1d(self.d_model, 7, padding=3, name="conv_in")(x)
    d = self.d_model
    for i, stride in enumerate(self.strides):
      d *= 2                                   # channels double as time shrinks
      x = EncoderBlock(d, stride, name=f"block_{i}")(x)
    x = Snake(axis=1, name="snake_out")(x)
    return Conv1d(self.d_latent, 3, padding=1, name="conv_out")(x)


class Decoder(nn.Module):
  """DAC's ``Decoder``: ``[B, D, F] -> [B, 1, ~F * prod(rates)]`` in [-1, 1] (tanh).

  Each odd rate drops one sample per block input: 16/24 kHz DAC returns
  ``F * hop - 8``; ``decode`` pads the tail.
  """
  channels: int
  rates: Sequence[int]

  @nn.compact
  def __call__(self, z):
    x = Conv1d(self.channels, 7, padding=3, name="conv_in")(z)
    for i, rate in enumerate(self.rates):
      x = DecoderBlock(self.channels // 2 ** (i + 1), rate, name=f"block_{i}")(x)
    x = Snake(axis=1, name="snake_out")(x)
    return jnp.tanh(Conv1d(1, 7, padding=3, name="conv_out")(x))


# ------------------------------------------------ architecture from shapes ----

def _strides(params: dict, block_layer: str) -> tuple[int, ...]:
  """Each block's stride: its strided conv's kernel is ``2 * stride`` long."""
  n = sum(1 for k in params if k.startswith("block_"))
  return tuple(params[f"block_{i}"][block_layer]["kernel"].shape[2] // 2 for i in range(n))


def decoder_module(decoder_params: dict) -> Decoder:
  """The ``Decoder`` whose parameters these are (widths and rates from their shapes)."""
  return Decoder(channels=decoder_params["conv_in"]["kernel"].shape[0],
                 rates=_strides(decoder_params, "conv_t"))


def encoder_module(encoder_params: dict) -> Encoder:
  """The ``Encoder`` whose parameters these are (widths and strides from their shapes)."""
  return Encoder(d_model=encoder_params["conv_in"]["kernel"].shape[0],
                 strides=_strides(encoder_params, "conv"),
                 d_latent=encoder_params["conv_out"]["kernel"].shape[0])


def hop_length(params: dict) -> int:
  """Audio samples per latent frame: the product of the encoder's strides."""
  return math.prod(_strides(params["encoder"], "conv"))


# ------------------------------------------------------------------ codec ----

def decode(params: dict, z: jax.Array) -> jax.Array:
  """z ``[B, D, F]`` -> waveform ``[B, 1, F * hop]``, as ``codec_bridge.make_decoder``:
  DAC's decoder output, its tail (8 samples short for odd-stride models) zero-padded,
  or cut, to ``F * hop``. Differentiable; jit/vmap/grad as any JAX function.

  Reads ``params["decoder"]`` only (the hop is the product of the decoder's rates,
  which ``dac_params_from_torch`` checks against the encoder's), so a train step can take
  the decoder's weights alone as an argument."""
  module = decoder_module(params["decoder"])
  wave = module.apply({"params": params["decoder"]}, z)
  n = z.shape[-1] * math.prod(module.rates)
  missing = n - wave.shape[-1]
  return jnp.pad(wave, ((0, 0), (0, 0), (0, missing))) if missing > 0 else wave[..., :n]


def encode(params: dict, audio: jax.Array):
  """Audio ``[B, 1, T]`` -> ``(codes [B, n_codebooks, F] int32, quantized z [B, D, F],
  continuous latent [B, D, F])``, ``F = ceil(T / hop)``, as ``codec_bridge.encode``
  (DAC's ``preprocess``: the audio right-padded with zeros to ``F * hop``; encoder;
  eval-mode quantizer with every codebook)."""
  hop = hop_length(params)
  audio = jnp.pad(audio, ((0, 0), (0, 0), (0, -audio.shape[-1] % hop)))
  latent = encoder_module(params["encoder"]).apply({"params": params["encoder"]}, audio)
  z, codes = codec.requantize(params["quantizer"], latent, None, return_codes=True)
  return codes, z, latent
