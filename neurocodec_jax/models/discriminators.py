"""DAC's discriminators in Flax: MPD, MSD, MRD, as ``dac.model.discriminator``.

Input ``[batch, 1, T]``; output a list (one per sub-discriminator, in DAC's order:
MPDs, MSDs, MRDs) of lists of feature maps, the last being the score. Every conv is
weight-normed (``w = g * v / ||v||``, parameters ``weight_v``, ``weight_g``, ``bias``
in torch's layout) and followed by LeakyReLU(0.1), except each ``conv_post``.
The input is made zero-mean and peak-normalized to 0.8 first.

Details matched to DAC 1.0.0 (checked by tests/test_losses.py):
  * MPD pads the signal on the right to a multiple of the period with reflect
    padding of ``period - T % period`` samples (a full period when T is already a
    multiple, as DAC does), folds it to ``[B, 1, T / p, p]`` and convolves (5, 1).
  * MRD: audiotools STFT with ``match_stride=True``: hann window, hop = window / 4,
    reflect pad ``(w - hop) / 2`` left and that plus the round-up to a hop
    multiple right, then the centred STFT (another ``w / 2`` reflect pad), first
    and last two frames dropped; real/imag as 2 channels of ``[B, 2, time, freq]``;
    bands ``int(lo * (w/2 + 1)) : int(hi * (w/2 + 1))``, each through its own conv
    stack, concatenated over frequency before ``conv_post``.
  * MSD at rate 1 runs on the raw input. At rates > 1 DAC resamples with julius;
    ours uses scipy's polyphase resampling via a fixed FIR (not parity-tested;
    DAC's released models use no MSD).
  * ``width`` scales every channel count (1.0: DAC's sizes, what the parity tests
    and real configs use; the demo uses a narrow discriminator to fit a CPU).

``conv`` names how the MPDs' and MRDs' convs are computed (``neurocodec_jax.ops.conv``:
XLA's convolution, or forms that avoid its slow paths on a CPU; ``"auto"`` picks by
backend and width). Every implementation computes the same function of the same
parameters, and the feature maps come back in DAC's layout. Torch's weights are
converted by ``codec_bridge.converters.discriminator_params_from_torch``.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax import audio
from neurocodec_jax.ops import conv as conv_ops
from neurocodec_jax.ops.precision import HIGHEST

BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
# DAC's conv stacks (before each ``conv_post``): MPD (channels, stride) of its (5, 1)
# kernels; MRD (kernel, stride, padding) of each band's 32-channel convs.
MPD_LAYERS = ((32, 3), (128, 3), (512, 3), (1024, 3), (1024, 1))
MRD_LAYERS = (((3, 9), (1, 1), (1, 4)), ((3, 9), (1, 2), (1, 4)), ((3, 9), (1, 2), (1, 4)),
              ((3, 9), (1, 2), (1, 4)), ((3, 3), (1, 1), (1, 1)))


class WNConv(nn.Module):
  """DAC's ``WNConv1d``/``WNConv2d``, then LeakyReLU(0.1) unless ``act=False``:
  parameters ``weight_v``, ``weight_g``, ``bias`` in torch's layout and init, computed
  by ``ops.conv.weight_normed_conv`` in ``implementation``'s form and layout (input
  and output channel-last for a channel-last one)."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = None
  padding: Sequence[int] = None
  groups: int = 1
  act: bool = True
  implementation: str = "xla"           # one of ops.conv.IMPLEMENTATIONS

  @nn.compact
  def __call__(self, x):
    nd = len(self.kernel_size)
    in_ch = x.shape[-1] if conv_ops.is_channels_last(self.implementation) else x.shape[1]
    shape = (self.features, in_ch // self.groups, *self.kernel_size)
    fan_in = shape[1] * math.prod(self.kernel_size)
    bound = 1 / math.sqrt(fan_in)      # torch's default conv init bounds
    v = self.param("weight_v", lambda k, s: jax.random.uniform(k, s, jnp.float32,
                                                               -bound, bound), shape)
    g = self.param("weight_g", lambda _: jnp.linalg.norm(
        v.reshape(self.features, -1), axis=1).reshape(self.features, *([1] * (nd + 1))))
    b = self.param("bias", lambda k: jax.random.uniform(k, (self.features,), minval=-bound,
                                                        maxval=bound))
    y = conv_ops.weight_normed_conv(x, v, g, b, self.strides or (1,) * nd,
                                    self.padding or (0,) * nd, self.implementation,
                                    self.groups)
    return nn.leaky_relu(y, 0.1) if self.act else y


def _ch(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


class MPD(nn.Module):
  """Multi-period discriminator for one period: DAC's ``(5, 1)`` kernels over the
  signal folded to ``[B, 1, T / p, p]``. ``conv``: the convs' implementation
  (``ops.conv.resolve``; ``auto`` folds the period's columns into the batch and runs
  the convs 1-D, channel-last). The feature maps are DAC's ``[B, C, T / p, p]`` and
  the parameters the same in every implementation.
  """
  period: int
  width: float = 1.0
  conv: str = "auto"

  @nn.compact
  def __call__(self, x):                       # [B, 1, T]
    b, t = x.shape[0], x.shape[-1]
    x = jnp.pad(x, ((0, 0), (0, 0), (0, self.period - t % self.period)), mode="reflect")
    x = x.reshape(b, 1, -1, self.period)       # [B, 1, T / p, p]
    impl = conv_ops.resolve(self.conv, (5, 1), _ch(MPD_LAYERS[0][0], self.width))
    x, dac_layout = conv_ops.to_layout(x, impl, fold_columns=True)
    fmap = []
    for i, (ch, stride) in enumerate(MPD_LAYERS):
      x = WNConv(_ch(ch, self.width), (5, 1), (stride, 1), (2, 0), implementation=impl,
                 name=f"conv_{i}")(x)
      fmap.append(dac_layout(x))
    fmap.append(dac_layout(WNConv(1, (3, 1), (1, 1), (1, 0), act=False, implementation=impl,
                                  name="conv_post")(x)))
    return fmap


def _resample_fir(x: jax.Array, rate: int) -> jax.Array:
  from scipy import signal as sps  # pylint: disable=g-import-not-at-top
  taps = sps.firwin(16 * rate + 1, 1.0 / rate).astype(np.float32)
  y = jax.lax.conv_general_dilated(x, jnp.asarray(taps)[None, None], (1,),
                                   [(len(taps) // 2, len(taps) // 2)],
                                   dimension_numbers=("NCH", "OIH", "NCH"), precision=HIGHEST)
  return y[..., ::rate]


class MSD(nn.Module):
  """Multi-scale (waveform) discriminator at ``sample_rate / rate``; XLA's convs in
  DAC's layout (not tuned: DAC's released models use no MSD)."""
  rate: int = 1
  width: float = 1.0

  @nn.compact
  def __call__(self, x):                       # [B, 1, T]
    if self.rate > 1:
      x = _resample_fir(x, self.rate)
    layers = ((16, 15, 1, 1, 7), (64, 41, 4, 4, 20), (256, 41, 4, 16, 20),
              (1024, 41, 4, 64, 20), (1024, 41, 4, 256, 20), (1024, 5, 1, 1, 2))
    fmap = []
    for i, (ch, k, s, groups, pad) in enumerate(layers):
      groups = min(groups, _ch(ch, self.width), x.shape[1])
      x = WNConv(_ch(ch, self.width), (k,), (s,), (pad,), groups=groups, name=f"conv_{i}")(x)
      fmap.append(x)
    fmap.append(WNConv(1, (3,), (1,), (1,), act=False, name="conv_post")(x))
    return fmap


def mrd_spectrogram(x: jax.Array, window_length: int) -> jax.Array:
  """``[B, 1, T]`` -> ``[B, 2, frames, bins]`` (real, imag) as DAC's MRD sees it."""
  hop = window_length // 4
  t = x.shape[-1]
  right = math.ceil(t / hop) * hop - t
  pad = (window_length - hop) // 2
  x = jnp.pad(x[:, 0], ((0, 0), (pad, pad + right)), mode="reflect")
  spec = audio.stft(x, window_length, hop, "hann")[..., 2:-2]     # [B, bins, frames]
  spec = jnp.stack([spec.real, spec.imag], axis=1)                # [B, 2, bins, frames]
  return jnp.swapaxes(spec, -1, -2)


class MRD(nn.Module):
  """Multi-band complex-spectrogram discriminator for one FFT size. ``conv``: the
  convs' implementation (``ops.conv.resolve``, from the bands' width); the feature maps
  are DAC's ``[B, C, frames, bins]`` and the parameters the same in every one.
  """
  window_length: int
  bands: Sequence[Sequence[float]] = BANDS
  width: float = 1.0
  conv: str = "auto"

  @nn.compact
  def __call__(self, x):
    spec = mrd_spectrogram(x, self.window_length)               # [B, 2, frames, bins]
    n_bins = self.window_length // 2 + 1
    edges = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in self.bands]
    ch = _ch(32, self.width)
    impl = conv_ops.resolve(self.conv, MRD_LAYERS[0][0], ch)
    spec, dac_layout = conv_ops.to_layout(spec, impl)
    bins = 2 if conv_ops.is_channels_last(impl) else 3
    fmap, outs = [], []
    for b, (lo, hi) in enumerate(edges):
      band = jax.lax.slice_in_dim(spec, lo, hi, axis=bins)
      for i, (k, s, p) in enumerate(MRD_LAYERS):
        band = WNConv(ch, k, s, p, implementation=impl, name=f"band_{b}_conv_{i}")(band)
        fmap.append(dac_layout(band))
      outs.append(band)
    x = jnp.concatenate(outs, axis=bins)
    fmap.append(dac_layout(WNConv(1, (3, 3), (1, 1), (1, 1), act=False, implementation=impl,
                                  name="conv_post")(x)))
    return fmap


class Discriminator(nn.Module):
  """MPDs, MSDs and MRDs over one waveform, as ``dac.model.discriminator.Discriminator``."""
  rates: Sequence[int] = ()
  periods: Sequence[int] = (2, 3, 5, 7, 11)
  fft_sizes: Sequence[int] = (2048, 1024, 512)
  sample_rate: int = 44100
  bands: Sequence[Sequence[float]] = BANDS
  width: float = 1.0           # channel multiplier; 1.0 is DAC's (parity) size
  # The MPDs' and MRDs' conv implementation (ops.conv; "auto": each sub-discriminator's
  # by the backend and its width; the same function and parameters in every one).
  conv: str = "auto"

  @classmethod
  def from_config(cls, config) -> "Discriminator":
    d = config.disc
    return cls(rates=tuple(d.rates), periods=tuple(d.periods), fft_sizes=tuple(d.fft_sizes),
               sample_rate=config.codec.arch.sample_rate,
               bands=tuple(tuple(b) for b in d.bands), width=d.width)

  @nn.compact
  def __call__(self, x: jax.Array) -> list[list[jax.Array]]:
    if x.ndim != 3 or x.shape[1] != 1:
      raise ValueError(f"Discriminator expects [batch, 1, T], got {x.shape}.")
    x = x - x.mean(-1, keepdims=True)
    x = 0.8 * x / (jnp.abs(x).max(-1, keepdims=True) + 1e-9)
    w = self.width
    discs = [MPD(p, w, self.conv, name=f"disc_{i}")
             for i, p in enumerate(self.periods)]
    discs += [MSD(r, w, name=f"disc_{len(discs) + i}") for i, r in enumerate(self.rates)]
    n = len(discs)
    discs += [MRD(f, self.bands, w, self.conv, name=f"disc_{n + i}")
              for i, f in enumerate(self.fft_sizes)]
    return [d(x) for d in discs]

