"""The output waveform: the decoded prediction, or the mixture masked by the decoded streams.

``model.output_waveform="decoded"`` (the original) outputs the codec's decoding of the
predicted latent. ``"mixture_mask"`` (a selector model) decodes both streams, the
selected one ``a`` and the competing one ``b``, and outputs the mixture through the
time-frequency ratio mask ``|A|^p / (|A|^p + |B|^p)`` (``p``: ``model.mask_power``;
lower-bounded by ``model.mask_floor``):
the codec's separation decides which talker dominates each bin, the mixture supplies
the fine structure the decoder smears (docs/research-log.md "The codec's separation as
a mask"). Offline only: the STFT reads ``N_FFT`` samples around each (32 ms at 16 kHz).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import signal as jsig

OUTPUT_WAVEFORMS = ("decoded", "mixture_mask", "refined_mask")
N_FFT, HOP = 512, 128        # 32 ms / 8 ms at 16 kHz


def stft(x: jax.Array, n_fft: int = N_FFT, hop: int = HOP) -> jax.Array:
  """``[..., T]`` -> ``[..., bins, frames]``: Hann STFT, scipy's conventions (zero-padded
  boundaries)."""
  return jsig.stft(x, nperseg=n_fft, noverlap=n_fft - hop, window="hann")[2]


def istft(spec: jax.Array, length: int, n_fft: int = N_FFT, hop: int = HOP) -> jax.Array:
  """The inverse of :func:`stft` (weighted overlap-add), cut to ``length`` samples."""
  _, y = jsig.istft(spec, nperseg=n_fft, noverlap=n_fft - hop, window="hann")
  return y[..., :length]


def stream_mask(target_spec: jax.Array, other_spec: jax.Array, power: float,
                floor: float = 0.0) -> jax.Array:
  """``floor + (1 - floor) |A|^p / (|A|^p + |B|^p)`` from two STFTs (same shape)."""
  a, b = magnitude(target_spec, power), magnitude(other_spec, power)
  return floor + (1 - floor) * a / jnp.maximum(a + b, 1e-12)


def ratio_mask(mixture: jax.Array, target: jax.Array, other: jax.Array, power: float,
               floor: float = 0.0, n_fft: int = N_FFT, hop: int = HOP) -> jax.Array:
  """``[..., T]`` the mixture through the ratio mask of two estimates (each ``[..., T]``).

  ``floor`` lower-bounds the mask, ``floor + (1 - floor) |A|^p / (|A|^p + |B|^p)``: a
  bin the streams give to the other talker keeps ``floor`` of the mixture (0: the
  plain ratio mask; 1: the mixture). Differentiable in both estimates.
  """
  mask = stream_mask(stft(target, n_fft, hop), stft(other, n_fft, hop), power, floor)
  y = istft(mask * stft(mixture, n_fft, hop), mixture.shape[-1], n_fft, hop)
  return y.astype(mixture.dtype)


def selector_margin(logits: jax.Array) -> jax.Array:
  """``[B]``: how sure the selector was, the mean gap between its two streams' logits
  (``logits [B, frames, 2]``; one value per frame with ``select_window="trial"``)."""
  return jnp.mean(jnp.abs(logits[..., 0] - logits[..., 1]), axis=-1)


def back_off(output: jax.Array, mixture: jax.Array, margin: jax.Array, threshold: float,
             share: float) -> jax.Array:
  """``[B, ..., T]``: where the selector's margin ``[B]`` is below ``threshold``, the
  output with ``share`` of it replaced by the mixture (a wrong choice costs less
  there); elsewhere the output unchanged. ``threshold`` 0: off."""
  unsure = (margin < threshold).reshape(margin.shape + (1,) * (output.ndim - 1))
  return jnp.where(unsure, share * mixture + (1 - share) * output, output)


def magnitude(x: jax.Array, power: float) -> jax.Array:
  """``|x|^power`` with a zero (not NaN) gradient at ``x = 0`` (an all-zero bin)."""
  sq = jnp.real(x) ** 2 + jnp.imag(x) ** 2
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.where(nonzero, sq, 1.0) ** (power / 2), 0.0)


def output_waveform(kind: str, power: float, floor: float, decoded: jax.Array,
                    competing: jax.Array | None, mixture: jax.Array | None,
                    refine=None) -> jax.Array:
  """The output ``[..., T]`` per ``model.output_waveform`` from the decoded selected
  stream, the decoded competing stream and the mixture (the last two, ``power`` and
  ``floor`` are read only by the masks). ``"refined_mask"`` calls ``refine(mixture,
  decoded, competing)`` (a trained ``models.refiner.MaskRefiner``, its parameters
  bound), which starts from the same floored ratio mask."""
  if kind == "decoded":
    return decoded
  if kind not in OUTPUT_WAVEFORMS:
    raise ValueError(f"model.output_waveform must be one of {OUTPUT_WAVEFORMS}, got {kind!r}.")
  if competing is None or mixture is None:
    raise ValueError(f"model.output_waveform={kind!r} needs the competing stream "
                     "(model.selector='correlation') and the mixture's audio.")
  if kind == "refined_mask":
    if refine is None:
      raise ValueError("model.output_waveform='refined_mask' needs a trained refiner "
                       "(model.refiner: python -m neurocodec_jax.cli.refine).")
    return refine(mixture, decoded, competing)
  return ratio_mask(mixture, decoded, competing, power, floor)
