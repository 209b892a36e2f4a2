"""STFT and mel filterbanks matching audiotools' ``AudioSignal.stft``/``mel_spectrogram``.

audiotools (0.7.2) documents a sqrt-hann default window, but its ``stft_params``
setter fills an unset window type with ``"hann"`` (scipy's periodic hann), and that
is what DAC's ``MelSpectrogramLoss`` and MRD get. The STFT is ``torch.stft`` with
``center=True``: reflect padding of ``n_fft // 2`` on both sides, frames every
``hop`` samples. Mel filters are librosa's (slaney scale and norm). Windows and
filterbanks are numpy constants built once per size (``lru_cache``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import signal as sps

from neurocodec_jax.ops.precision import HIGHEST


@functools.lru_cache(None)
def window(kind: str, length: int) -> np.ndarray:
  if kind == "sqrt_hann":
    return np.sqrt(sps.get_window("hann", length)).astype(np.float32)
  return sps.get_window(kind, length).astype(np.float32)


@functools.lru_cache(None)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                fmax: float | None = None) -> np.ndarray:
  """``[n_mels, n_fft // 2 + 1]`` librosa mel filterbank."""
  from librosa.filters import mel  # pylint: disable=g-import-not-at-top
  return mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def stft(x: jax.Array, n_fft: int, hop: int, window_type: str = "hann") -> jax.Array:
  """Complex STFT ``[..., n_fft // 2 + 1, frames]`` of ``x [..., T]`` (torch.stft, center)."""
  pad = n_fft // 2
  lead = x.shape[:-1]
  x = x.reshape(-1, x.shape[-1])
  x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
  n_frames = 1 + (x.shape[-1] - n_fft) // hop
  idx = jnp.arange(n_fft)[None, :] + hop * jnp.arange(n_frames)[:, None]
  frames = x[:, idx] * window(window_type, n_fft)         # [B, frames, n_fft]
  spec = jnp.fft.rfft(frames, axis=-1)                     # [B, frames, bins]
  return jnp.swapaxes(spec, -1, -2).reshape(*lead, n_fft // 2 + 1, n_frames)


def mel_spectrogram(x: jax.Array, sample_rate: int, n_fft: int, n_mels: int,
                    window_type: str = "hann", fmin: float = 0.0,
                    fmax: float | None = None) -> jax.Array:
  """Magnitude mel spectrogram ``[..., n_mels, frames]`` (hop = n_fft // 4)."""
  mag = jnp.abs(stft(x, n_fft, n_fft // 4, window_type))
  fb = mel_filters(sample_rate, n_fft, n_mels, fmin, fmax)
  return jnp.einsum("mf,...ft->...mt", fb, mag, precision=HIGHEST)
