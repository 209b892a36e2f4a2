"""Weight-normed convolutions in torch's layout (DAC's discriminators), with their
implementation chosen once.

``weight_normed_conv(x, v, g, bias, strides, padding, implementation, groups)`` is
torch's ``weight_norm(ConvNd)`` forward: ``w = v * (g / ||v||)`` (the norm over every
axis but the output channel), the convolution with symmetric zero ``padding``, plus
the bias; ``v`` ``[O, C / groups, *kernel]`` in torch's layout. The implementations
(``IMPLEMENTATIONS``) compute the same function, summed in other orders
(tests/test_conv.py checks each against ``"xla"``: outputs and gradients):

  xla                      XLA's convolution over DAC's channel-first maps
                           ``[B, C, *spatial]``.
  channels_last            XLA's convolution over channel-last maps ``[B, *spatial,
                           C]``: XLA CPU's convolution libraries are channel-last, so
                           channel-first maps cost layout transposes around each conv.
  polyphase                channel-first; a conv strided along the last axis only runs
                           as a stride-1 conv over the stride's phases
                           (``polyphase_conv``): XLA CPU computes a strided conv's
                           input gradient as a conv over a dilated cotangent, a slow
                           path, and a stride-1 conv's as a plain conv.
  polyphase_channels_last  both.
  banded                   channel-first; a 2-D conv of stride 1 along H as one matmul
                           against a band matrix (``banded_conv``): at a few channels
                           XLA CPU's convolutions are a slow path and a matmul is not,
                           which pays for the band's zeros.

A form applies where it can; a conv it does not apply to (``polyphase``: one not
strided along the last axis alone, or grouped; ``banded``: 1-D, grouped, or strided
along H) runs as XLA's in the same layout.

Layout: a channel-last implementation takes and returns channel-last maps; a stack
of convs enters that layout once (``to_layout``, which also returns the way back)
and hands its feature maps out in DAC's layout. Kernels one column wide (MPD's
``(k, 1)``) convolve each column alone: channel-last maps then fold the columns into
the batch, and those convs run 1-D (``conv`` drops the kernel's unit axis when the
input has one spatial axis fewer).

The models name an implementation or ``"auto"``, which ``resolve`` turns into one
from the backend, the kernel's shape and the stack's width, once per stack: the one
place that reads the backend.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from neurocodec_jax.ops.precision import HIGHEST

IMPLEMENTATIONS = ("xla", "channels_last", "polyphase", "polyphase_channels_last", "banded")
# Below this many channels XLA CPU's convolutions are a slow path (``banded`` there);
# from it on, channel-last maps with polyphase strided convs.
CPU_NARROW_CHANNELS = 16
# Output columns per band-matrix block of ``banded_conv`` over wide inputs: the band's
# zeros cost ~``block / kw`` times a conv's multiply-adds and each block copies its
# input window, so smaller blocks waste less on zeros and more on copies; 32 was the
# fastest at MRD's narrow widths when timed.
BANDED_BLOCK = 32


def resolve(implementation: str, kernel: Sequence[int], channels: int,
            backend: str | None = None) -> str:
  """The implementation of a stack of ``channels``-wide convs with ``kernel``-shaped
  kernels: ``implementation`` itself unless it is ``"auto"``, which is

  * ``channels_last`` for kernels one column wide (``(k, 1)``: MPD), on every backend:
    the columns folded into the batch make the convs 1-D, which XLA's CPU backend
    runs faster than the 2-D form with a unit axis (chosen there; the same function
    on any backend);
  * on XLA's CPU backend (``backend``, default ``jax.default_backend()``),
    ``banded`` below ``CPU_NARROW_CHANNELS`` channels, ``polyphase_channels_last``
    from it;
  * ``xla`` elsewhere: GPU and TPU convolutions have no slow path at few channels or
    in a strided conv's gradient, and the band's zeros would cost there.
  """
  if implementation != "auto":
    if implementation not in IMPLEMENTATIONS:
      raise ValueError(f"conv implementation must be 'auto' or one of {IMPLEMENTATIONS}, "
                       f"got {implementation!r}.")
    return implementation
  if kernel[-1] == 1:
    return "channels_last"
  if (backend or jax.default_backend()) != "cpu":
    return "xla"
  return "banded" if channels < CPU_NARROW_CHANNELS else "polyphase_channels_last"


def is_channels_last(implementation: str) -> bool:
  """Whether ``implementation`` takes and returns channel-last maps."""
  return implementation.endswith("channels_last")


def to_layout(x: jax.Array, implementation: str, fold_columns: bool = False
              ) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
  """``(x in the implementation's layout, back)`` for DAC's ``x [B, C, H, W]``;
  ``back(y)`` returns a map of the stack in DAC's ``[B, C', H', W]``.

  Channel-last: ``[B, H, W, C]``, or with ``fold_columns`` (kernels one column wide)
  ``[B * W, H, C]``, every column a 1-D signal of the batch.
  """
  if not is_channels_last(implementation):
    return x, lambda y: y
  if not fold_columns:
    return jnp.transpose(x, (0, 2, 3, 1)), lambda y: jnp.transpose(y, (0, 3, 1, 2))
  b, c, h, w = x.shape
  folded = jnp.transpose(x, (0, 3, 2, 1)).reshape(b * w, h, c)
  return folded, lambda y: jnp.transpose(y.reshape(b, w, *y.shape[1:]), (0, 3, 2, 1))


def weight_norm(v: jax.Array, g: jax.Array) -> jax.Array:
  """torch's ``weight_norm(dim=0)`` kernel, in its order: ``v * (g / ||v||)``, one scale
  per output channel, then one multiply (``g * v / ||v||`` has a heavier backward)."""
  return v * (g / jnp.sqrt(jnp.sum(jnp.square(v), axis=tuple(range(1, v.ndim)), keepdims=True)))


def weight_normed_conv(x: jax.Array, v: jax.Array, g: jax.Array, bias: jax.Array,
                       strides: Sequence[int], padding: Sequence[int],
                       implementation: str = "xla", groups: int = 1) -> jax.Array:
  """torch's weight-normed conv (the module docstring) in ``implementation``'s form and
  layout: ``x [B, C, *spatial]`` (channel-last: ``[B, *spatial, C]``) -> the same
  layout with ``O`` channels."""
  y = conv(x, weight_norm(v, g), strides, padding, implementation, groups)
  return y + (bias if is_channels_last(implementation)
              else bias.reshape(1, -1, *([1] * (y.ndim - 2))))


def conv(x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Sequence[int],
         implementation: str = "xla", groups: int = 1) -> jax.Array:
  """``w [O, C / groups, *kernel]`` (torch's layout) over ``x`` in ``implementation``'s
  layout, ``padding`` zeros on both sides of each spatial axis, no bias.

  ``x`` with one spatial axis fewer than the kernel: the kernel's last axis must be
  one column wide (MPD's ``(k, 1)`` over folded columns); the conv runs without it.
  """
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"conv implementation must be one of {IMPLEMENTATIONS}, "
                     f"got {implementation!r}.")
  strides, padding = tuple(strides), tuple(padding)
  if x.ndim == w.ndim - 1:
    if w.shape[-1] != 1 or strides[-1] != 1 or padding[-1] != 0:
      raise ValueError(f"an input with one spatial axis fewer needs a unit last kernel "
                       f"axis, got kernel {w.shape[2:]}, strides {strides}, padding {padding}")
    w, strides, padding = w[..., 0], strides[:-1], padding[:-1]
  last = is_channels_last(implementation)
  if implementation == "banded" and w.ndim == 4 and groups == 1 and strides[0] == 1:
    return banded_conv(x, w, strides, padding)
  if (implementation.startswith("polyphase") and groups == 1 and strides[-1] > 1
      and all(s == 1 for s in strides[:-1])):
    return polyphase_conv(x, w, strides, padding, last)
  return _xla_conv(x, w, strides, tuple((p, p) for p in padding), last, groups)


def _xla_conv(x, w, strides, pads, last: bool, groups: int = 1):
  """XLA's conv; ``pads`` ``((lo, hi), ...)`` per spatial axis."""
  spatial = "HW"[:w.ndim - 2]
  io = "N" + spatial + "C" if last else "NC" + spatial
  return jax.lax.conv_general_dilated(x, w, window_strides=strides, padding=pads,
                                      dimension_numbers=(io, "OI" + spatial, io),
                                      feature_group_count=groups, precision=HIGHEST)


def polyphase_conv(x: jax.Array, w: jax.Array, strides, padding,
                   channels_last: bool = False) -> jax.Array:
  """A conv strided along the last spatial axis only, as a stride-1 conv over its
  phases: ``x [B, C, *spatial]``, ``w [O, C, *kernel]`` -> ``[B, O, *spatial']``
  (``channels_last``: ``x [B, *spatial, C]`` -> ``[B, *spatial', O]``).

  With stride ``s`` along W, output column ``j`` reads ``x[s * j + t]`` through tap
  ``t = s * m + r``, i.e. column ``j + m`` of phase ``r`` (``x[r::s]``). The ``s``
  phases stacked as channels (``[B, s * C, ..., W / s]``) and the kernel split alike
  (``[O, s * C, ..., ceil(kw / s)]``, zero taps past ``kw``) give a stride-1 conv with
  the same multiply-adds, whose gradients are stride-1 convs' (the module docstring
  says why that matters). Same numbers, summed in another order.
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
  if channels_last:     # phase r of channel k -> channel r * c + k: [..., length, s, C]
    x = _pad_to(x, pw, s * length, axis=axis)
    x = x.reshape(*x.shape[:-2], length, s * c)
  else:
    x = _pad_to(x, pw, s * length)
    lead = x.shape[2:-1]
    x = x.reshape(x.shape[0], c, *lead, length, s)
    x = jnp.moveaxis(x, -1, 1).reshape(x.shape[0], s * c, *lead, length)
  w = jnp.pad(w, ((0, 0),) * (w.ndim - 1) + ((0, s * m - kw),))
  w = jnp.moveaxis(w.reshape(o, c, *kernel[:-1], m, s), -1, 1).reshape(o, s * c, *kernel[:-1], m)
  pads = tuple((p, p) for p in padding[:-1]) + ((0, 0),)
  return _xla_conv(x, w, (1,) * len(kernel), pads, channels_last)


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


def banded_conv(x: jax.Array, w: jax.Array, strides, padding,
                block: int = BANDED_BLOCK) -> jax.Array:
  """A 2-D conv as one matmul: ``x [B, C, H, W]``, ``w [O, C, kh, kw]`` ->
  ``[B, O, H', W']``, stride 1 along H.

  The conv along W is a banded ``[W, W']`` matrix per (output, input channel, row
  tap) (``_band_matrix``); the ``kh`` row taps are ``kh`` shifted copies of the input
  side by side. So the layer is ``[B * H', kh * C * W] @ [kh * C * W, O * W']``: the
  band's zeros cost multiply-adds (``W / kw`` times a conv's), which a matmul's speed
  pays for only at a few channels (the module docstring). Wider than 1.5 blocks (and
  kernels wider than 3), the output columns go in blocks of ``block``, each reading
  only its window of ``(block - 1) * stride + kw`` input columns (one shared matrix;
  the zero padding is then explicit), so the zeros stay ~``block / kw`` times a
  conv's. Same numbers as the conv, summed in another order; gradients by autodiff
  (the kernel's is the band matrix's, summed over its diagonals).
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
  # columns: there the windows' copies cost more than the band's zeros save.
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
