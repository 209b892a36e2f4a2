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
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax import audio

HIGHEST = jax.lax.Precision.HIGHEST
BANDS = ((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
# DAC's conv stacks (before each ``conv_post``): MPD (channels, stride) of its (5, 1)
# kernels; MRD (kernel, stride, padding) of each band's 32-channel convs.
MPD_LAYERS = ((32, 3), (128, 3), (512, 3), (1024, 3), (1024, 1))
MRD_LAYERS = (((3, 9), (1, 1), (1, 4)), ((3, 9), (1, 2), (1, 4)), ((3, 9), (1, 2), (1, 4)),
              ((3, 9), (1, 2), (1, 4)), ((3, 3), (1, 1), (1, 1)))


# XLA's CPU backend: below this many channels its convolutions are a slow path
# (``banded_conv`` instead); from it on, ``polyphase_conv`` and channel-last MRD maps.
CPU_NARROW_CHANNELS = 16


def _conv(x, w, strides, padding, dn, groups):
  return jax.lax.conv_general_dilated(x, w, window_strides=strides, padding=padding,
                                      dimension_numbers=dn, feature_group_count=groups,
                                      precision=HIGHEST)


def polyphase_conv(x: jax.Array, w: jax.Array, strides, padding,
                   channels_last: bool = False) -> jax.Array:
  """A conv strided along the last spatial axis only, as a stride-1 conv over its
  phases: ``x [B, C, *spatial]``, ``w [O, C, *kernel]`` -> ``[B, O, *spatial']``
  (``channels_last``: ``x [B, *spatial, C]`` -> ``[B, *spatial', O]``).

  With stride ``s`` along W, output column ``j`` reads ``x[s * j + t]`` through tap
  ``t = s * m + r``, i.e. column ``j + m`` of phase ``r`` (``x[r::s]``). The ``s``
  phases stacked as channels (``[B, s * C, ..., W / s]``) and the kernel split alike
  (``[O, s * C, ..., ceil(kw / s)]``, zero taps past ``kw``) give a stride-1 conv with
  the same multiply-adds. XLA CPU's strided conv has slow gradients (the input
  gradient is a conv over a dilated cotangent, 2-3x slower than a plain one); these
  are stride-1 convs' (MRD's 32-channel layers: 8-23% faster per layer than the
  input gradient through the stride-1 conv, 2-3x faster than the native one; README
  Performance). Same numbers, summed in another order.
  """
  o, c, *kernel = w.shape
  *rest, s = strides
  if any(r != 1 for r in rest):
    raise ValueError(f"polyphase_conv: strides must be 1 but on the last axis, got {strides}")
  axis = x.ndim - 2 if channels_last else x.ndim - 1      # the strided spatial axis
  kw, pw, width = kernel[-1], padding[-1], x.shape[axis]
  n_out = (width + 2 * pw - kw) // s + 1
  m = -(-kw // s)                                         # taps per phase
  length = n_out + m - 1                                  # columns per phase
  spatial = "HW"[:len(kernel)] if len(kernel) == 2 else "H"
  if channels_last:     # phase r of channel k -> channel r * c + k: [..., length, s, C]
    x = _pad_to(x, pw, s * length, axis=axis)
    x = x.reshape(*x.shape[:-2], length, s * c)
    dn = ("N" + spatial + "C", "OI" + spatial, "N" + spatial + "C")
  else:
    x = _pad_to(x, pw, s * length)
    lead = x.shape[2:-1]
    x = x.reshape(x.shape[0], c, *lead, length, s)
    x = jnp.moveaxis(x, -1, 1).reshape(x.shape[0], s * c, *lead, length)
    dn = ("NC" + spatial, "OI" + spatial, "NC" + spatial)
  w = jnp.pad(w, ((0, 0),) * (w.ndim - 1) + ((0, s * m - kw),))
  w = jnp.moveaxis(w.reshape(o, c, *kernel[:-1], m, s), -1, 1).reshape(o, s * c, *kernel[:-1], m)
  pads = tuple((p, p) for p in padding[:-1]) + ((0, 0),)
  return _conv(x, w, (1,) * len(kernel), pads, dn, 1)


def _pad_to(x: jax.Array, left: int, total: int, axis: int = -1) -> jax.Array:
  """``x`` zero-padded by ``left`` on ``axis`` (default the last), then padded or cut
  to ``total`` (cut when the last columns feed no output: stride > 1 with little
  padding)."""
  axis = axis % x.ndim
  pads = [(0, 0)] * x.ndim
  pads[axis] = (left, max(0, total - left - x.shape[axis]))
  return jax.lax.slice_in_dim(jnp.pad(x, pads), 0, total, axis=axis)


def _band_matrix(taps: int, n_in: int, stride: int, pad: int) -> jax.Array:
  """``S[tap, k, j] = 1`` where output column ``j`` reads input column ``k`` through
  kernel tap ``tap`` (zero padding: taps that fall outside read nothing). Built from
  iotas, so that the program holds no array constant (train steps are checked for
  embedded arrays: tests/test_train_units.py)."""
  n_out = (n_in + 2 * pad - taps) // stride + 1
  iota = lambda axis: jax.lax.broadcasted_iota(jnp.int32, (taps, n_in, n_out), axis)
  return (iota(1) == stride * iota(2) + iota(0) - pad).astype(jnp.float32)


# Output columns per band-matrix block of ``banded_conv`` over wide inputs (measured on
# 256 bins at 2 channels: 32 is 1.7-1.9x faster than one band matrix; 8 and 16 slower).
BANDED_BLOCK = 32


def banded_conv(x: jax.Array, w: jax.Array, strides, padding,
                block: int = BANDED_BLOCK) -> jax.Array:
  """A 2-D conv as one matmul: ``x [B, C, H, W]``, ``w [O, C, kh, kw]`` ->
  ``[B, O, H', W']``, stride 1 along H.

  The conv along W is a banded ``[W, W']`` matrix per (output, input channel, row
  tap) (``_band_matrix``); the ``kh`` row taps are ``kh`` shifted copies of the input
  side by side. So the layer is ``[B * H', kh * C * W] @ [kh * C * W, O * W']``: the
  band's zeros cost multiply-adds (``W / kw`` times a conv's), but at a few channels
  XLA CPU's convolution runs at a few GFLOP/s, and this matmul runs 2-10x faster
  (MRD's 2-8-channel layers over 16-256 bins: README Performance). Wider than 1.5
  blocks (and kernels wider than 3), the output columns go in blocks of ``block``,
  each reading only its window of ``(block - 1) * stride + kw`` input columns (one
  shared matrix; the zero padding is then explicit), so the zeros stay ~``block /
  kw`` times a conv's. Same numbers as the conv, summed in another order; gradients
  by autodiff (the kernel's is the band matrix's, summed over its diagonals).
  """
  o, c, kh, kw = w.shape
  (sh, sw), (ph, pw) = strides, padding
  if sh != 1:
    raise ValueError(f"banded_conv: stride along H must be 1, got {strides}")
  b, _, h, width = x.shape
  n_out = (width + 2 * pw - kw) // sw + 1
  h_out = h + 2 * ph - kh + 1
  x = jnp.pad(x, ((0, 0), (0, 0), (ph, ph), (0, 0)))
  rows = jnp.stack([x[:, :, t:t + h_out] for t in range(kh)], axis=1)  # [B, kh, C, H', W]
  # One band matrix (the padding inside it) for narrow inputs, and for kernels of <= 3
  # columns: there the windows' copies cost more than the band's zeros (conv_post over
  # 257 bins: blocks 2-3x slower than one matrix, which equals the conv).
  if n_out <= block + block // 2 or kw <= 3:
    n_block, band = n_out, _band_matrix(kw, width, sw, pw)
    rows = rows[:, None]                                               # [B, 1, kh, C, H', W]
  else:                                    # blocks of output columns, one shared matrix
    n_block, window = block, (block - 1) * sw + kw
    n = -(-n_out // block)
    need = (n * block - 1) * sw + kw
    rows = _pad_to(rows, pw, need)
    rows = jnp.stack([rows[..., q * block * sw:q * block * sw + window] for q in range(n)],
                     axis=1)                                           # [B, n, kh, C, H', win]
    band = _band_matrix(kw, window, sw, 0)
  n, k_in = rows.shape[1], band.shape[1]
  rows = rows.transpose(0, 4, 1, 2, 3, 5).reshape(b * h_out * n, kh * c * k_in)
  dense = jnp.einsum("ocht,tkj->hckoj", w, band, precision=HIGHEST)
  y = jnp.matmul(rows, dense.reshape(kh * c * k_in, o * n_block), precision=HIGHEST)
  y = y.reshape(b, h_out, n, o, n_block).transpose(0, 3, 1, 2, 4)
  return y.reshape(b, o, h_out, n * n_block)[..., :n_out]


class WNConv(nn.Module):
  """Weight-normed conv over ``[B, C, *spatial]`` with torch-layout parameters."""
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = None
  padding: Sequence[int] = None
  groups: int = 1
  act: bool = True
  # The kernel's last axis has size 1 and the input lacks it: the conv runs with one
  # spatial axis fewer (MPD's folded form); the parameters keep torch's shape.
  drop_unit_axis: bool = False
  # Input and output ``[B, *spatial, C]`` (the kernel keeps torch's layout). XLA CPU
  # runs the MPD's folded 1-D convs 5-35% faster channel-last (README Performance).
  channels_last: bool = False
  # Strided along the last axis only: as a stride-1 conv over the stride's phases
  # (``polyphase_conv``). None: where measured faster, on XLA's CPU backend with >= 16
  # input channels (MRD's 2-D convs at DAC's width: 2-3x faster per layer than XLA's
  # strided gradients; MPD's folded 1-D convs are faster as they are, 1.2-1.6x slower
  # polyphase at 128-512 channels). Off on GPU/TPU, whose strided backward is not a
  # slow path.
  polyphase: bool | None = False
  # 2-D, stride 1 along H: as one matmul (``banded_conv``). None: on XLA's CPU backend
  # below 16 input and output channels (MRD at the demo's width: 2-10x faster per
  # layer; at 32 channels slower). Off on GPU/TPU, whose convolutions are not slow at
  # few channels and where the band's zeros would cost.
  banded: bool | None = False

  @nn.compact
  def __call__(self, x):
    nd = len(self.kernel_size)
    in_ch = x.shape[-1] if self.channels_last else x.shape[1]
    shape = (self.features, in_ch // self.groups, *self.kernel_size)
    fan_in = shape[1] * math.prod(self.kernel_size)
    bound = 1 / math.sqrt(fan_in)      # torch's default conv init bounds
    v = self.param("weight_v", lambda k, s: jax.random.uniform(k, s, jnp.float32,
                                                               -bound, bound), shape)
    g = self.param("weight_g", lambda _: jnp.linalg.norm(
        v.reshape(self.features, -1), axis=1).reshape(self.features, *([1] * (nd + 1))))
    b = self.param("bias", lambda k: jax.random.uniform(k, (self.features,), minval=-bound,
                                                        maxval=bound))
    # torch's order (``v * (g / ||v||)``): one scale per output channel, then one
    # multiply. XLA CPU ran ``g * v / ||v||``'s backward over the full kernel 10-15%
    # slower at DAC's MPD size (README Performance).
    w = v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, nd + 2)), keepdims=True)))
    strides = tuple(self.strides or (1,) * nd)
    padding = tuple(self.padding or (0,) * nd)
    if self.drop_unit_axis:
      if self.kernel_size[-1] != 1 or strides[-1] != 1 or padding[-1] != 0:
        raise ValueError(f"drop_unit_axis needs a unit last kernel axis, got kernel "
                         f"{self.kernel_size}, strides {strides}, padding {padding}")
      nd, w, strides, padding = nd - 1, w[..., 0], strides[:-1], padding[:-1]
    spatial = "HW"[:nd] if nd == 2 else "H"
    io = "N" + spatial + "C" if self.channels_last else "NC" + spatial
    dn = (io, "OI" + spatial, io)
    polyphase = self.polyphase
    if polyphase is None:
      polyphase = jax.default_backend() == "cpu" and in_ch >= CPU_NARROW_CHANNELS
    # Unlike ``banded`` (which refuses what it cannot do), ``polyphase`` falls back to
    # XLA's conv where it does not apply (no stride, or grouped/strided
    # along H): the same function either way, so MPD and MRD can share the flag.
    polyphase = (polyphase and strides[-1] > 1 and self.groups == 1
                 and all(s == 1 for s in strides[:-1]))
    fits_banded = nd == 2 and self.groups == 1 and not self.channels_last
    banded = self.banded
    if banded is None:
      banded = (fits_banded and strides[0] == 1 and jax.default_backend() == "cpu"
                and max(in_ch, self.features) < CPU_NARROW_CHANNELS)
    if banded:
      if not fits_banded:
        raise ValueError("banded: 2-D, channel-first, ungrouped convolutions only")
      y = banded_conv(x, w, strides, padding)
    elif polyphase:
      y = polyphase_conv(x, w, strides, padding, self.channels_last)
    else:
      y = _conv(x, w, strides, tuple((p, p) for p in padding), dn, self.groups)
    y = y + (b if self.channels_last else b.reshape(1, -1, *([1] * nd)))
    return nn.leaky_relu(y, 0.1) if self.act else y


def _ch(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


class MPD(nn.Module):
  """Multi-period discriminator for one period.

  DAC convolves ``(k, 1)`` kernels over the ``[B, C, T / p, p]`` fold: each of the
  ``p`` phases is an independent 1-D signal. ``fold_period`` (the default) runs them
  as such, channel-last 1-D convolutions over ``[B * p, T / p, C]``, which XLA's CPU
  backend runs faster than the 2-D form (README Performance); the feature maps are
  returned in DAC's ``[B, C, T / p, p]`` layout either way, and the parameters are
  the same.
  """
  period: int
  width: float = 1.0
  fold_period: bool = True

  @nn.compact
  def __call__(self, x):                       # [B, 1, T]
    b, t = x.shape[0], x.shape[-1]
    x = jnp.pad(x, ((0, 0), (0, 0), (0, self.period - t % self.period)), mode="reflect")
    x = x.reshape(b, 1, -1, self.period)       # [B, 1, T / p, p]
    fold = self.fold_period
    if fold:
      x = jnp.moveaxis(x, -1, 1).reshape(b * self.period, -1, 1)      # [B * p, T / p, 1]
      # [B * p, T', C] -> [B, C, T', p]
      unfold = lambda y: jnp.transpose(y.reshape(b, self.period, *y.shape[1:]), (0, 3, 2, 1))
    else:
      unfold = lambda y: y
    fmap = []
    for i, (ch, stride) in enumerate(MPD_LAYERS):
      x = WNConv(_ch(ch, self.width), (5, 1), (stride, 1), (2, 0), drop_unit_axis=fold,
                 channels_last=fold, name=f"conv_{i}")(x)
      fmap.append(unfold(x))
    fmap.append(unfold(WNConv(1, (3, 1), (1, 1), (1, 0), act=False, drop_unit_axis=fold,
                              channels_last=fold, name="conv_post")(x)))
    return fmap


def _resample_fir(x: jax.Array, rate: int) -> jax.Array:
  from scipy import signal as sps  # pylint: disable=g-import-not-at-top
  taps = sps.firwin(16 * rate + 1, 1.0 / rate).astype(np.float32)
  y = jax.lax.conv_general_dilated(x, jnp.asarray(taps)[None, None], (1,),
                                   [(len(taps) // 2, len(taps) // 2)],
                                   dimension_numbers=("NCH", "OIH", "NCH"), precision=HIGHEST)
  return y[..., ::rate]


class MSD(nn.Module):
  """Multi-scale (waveform) discriminator at ``sample_rate / rate``."""
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
  """Multi-band complex-spectrogram discriminator for one FFT size.

  ``channels_last``: the conv stacks run on ``[B, frames, bins, C]`` maps (XLA CPU's
  conv libraries are channel-last: half the layout transposes of the channel-first
  form; README Performance); the feature maps are returned in DAC's ``[B, C,
  frames, bins]`` either way, and the parameters are the same. None: on XLA's CPU
  backend where no conv is banded (>= 16 channels).
  """
  window_length: int
  bands: Sequence[Sequence[float]] = BANDS
  width: float = 1.0
  polyphase: bool | None = None           # see WNConv (None: where it is faster)
  banded: bool | None = None              # see WNConv (None: where it is faster)
  channels_last: bool | None = None

  @nn.compact
  def __call__(self, x):
    spec = mrd_spectrogram(x, self.window_length)               # [B, 2, frames, bins]
    n_bins = self.window_length // 2 + 1
    edges = [(int(lo * n_bins), int(hi * n_bins)) for lo, hi in self.bands]
    last = self.channels_last
    if last is None:
      last = (not self.banded and jax.default_backend() == "cpu"
              and _ch(32, self.width) >= CPU_NARROW_CHANNELS)
    if last:
      spec = jnp.transpose(spec, (0, 2, 3, 1))                  # [B, frames, bins, 2]
    dac_layout = (lambda y: jnp.transpose(y, (0, 3, 1, 2))) if last else (lambda y: y)
    bins = 2 if last else 3
    fmap, outs = [], []
    for b, (lo, hi) in enumerate(edges):
      band = jax.lax.slice_in_dim(spec, lo, hi, axis=bins)
      for i, (k, s, p) in enumerate(MRD_LAYERS):
        band = WNConv(_ch(32, self.width), k, s, p, polyphase=self.polyphase,
                      banded=self.banded, channels_last=last, name=f"band_{b}_conv_{i}")(band)
        fmap.append(dac_layout(band))
      outs.append(band)
    x = jnp.concatenate(outs, axis=bins)
    fmap.append(dac_layout(WNConv(1, (3, 3), (1, 1), (1, 1), act=False, banded=self.banded,
                                  channels_last=last, name="conv_post")(x)))
    return fmap


class Discriminator(nn.Module):
  """MPDs, MSDs and MRDs over one waveform, as ``dac.model.discriminator.Discriminator``."""
  rates: Sequence[int] = ()
  periods: Sequence[int] = (2, 3, 5, 7, 11)
  fft_sizes: Sequence[int] = (2048, 1024, 512)
  sample_rate: int = 44100
  bands: Sequence[Sequence[float]] = BANDS
  width: float = 1.0           # channel multiplier; 1.0 is DAC's (parity) size
  mpd_fold_period: bool = True  # MPD's 1-D form (same maps and parameters; see MPD)
  mrd_polyphase: bool | None = None          # MRD's strided convs (WNConv; None: auto)
  mrd_banded: bool | None = None             # MRD's convs as matmuls (WNConv; None: auto)
  mrd_channels_last: bool | None = None      # MRD's maps channel-last inside (None: auto)

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
    discs = [MPD(p, w, self.mpd_fold_period, name=f"disc_{i}")
             for i, p in enumerate(self.periods)]
    discs += [MSD(r, w, name=f"disc_{len(discs) + i}") for i, r in enumerate(self.rates)]
    n = len(discs)
    discs += [MRD(f, self.bands, w, self.mrd_polyphase, self.mrd_banded,
                  self.mrd_channels_last, name=f"disc_{n + i}")
              for i, f in enumerate(self.fft_sizes)]
    return [d(x) for d in discs]


def params_from_torch(torch_discriminator) -> dict:
  """Our parameter tree from a ``dac.model.discriminator.Discriminator``'s weights."""
  state = {k: v.detach().cpu().numpy() for k, v in torch_discriminator.state_dict().items()}
  params = {}
  for i, disc in enumerate(torch_discriminator.discriminators):
    kind = type(disc).__name__
    names = {}
    if kind in ("MPD", "MSD"):
      for j in range(len(disc.convs)):
        names[f"conv_{j}"] = f"discriminators.{i}.convs.{j}.0"
    else:
      for b, stack in enumerate(disc.band_convs):
        for j in range(len(stack)):
          names[f"band_{b}_conv_{j}"] = f"discriminators.{i}.band_convs.{b}.{j}.0"
    names["conv_post"] = f"discriminators.{i}.conv_post"
    params[f"disc_{i}"] = {
        ours: {p: jnp.asarray(state[f"{theirs}.{p}"]) for p in ("weight_v", "weight_g", "bias")}
        for ours, theirs in names.items()}
  return params
