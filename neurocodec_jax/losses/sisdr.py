"""Scale-invariant SDR, batched, with the original's alignment by cross-correlation lag.

Alignment (as the original's validation): the estimate is shifted by the lag
maximizing its cross-correlation with the reference (computed with an FFT, linear
not circular), zero-filled, before the SI-SDR.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _align(reference: jax.Array, estimate: jax.Array) -> jax.Array:
  n = reference.shape[-1]
  size = 2 * n
  xcorr = jnp.fft.irfft(jnp.fft.rfft(reference, size) * jnp.conj(jnp.fft.rfft(estimate, size)),
                        size)                          # lag k at index k mod size
  lag = jnp.argmax(xcorr, axis=-1)
  lag = jnp.where(lag >= n, lag - size, lag)           # in (-n, n)
  idx = jnp.arange(n)[None, :] - lag[:, None]          # out[t] = est[t - lag]
  valid = (idx >= 0) & (idx < n)
  return jnp.where(valid, jnp.take_along_axis(estimate, jnp.clip(idx, 0, n - 1), axis=-1), 0.0)


def si_sdr(reference: jax.Array, estimate: jax.Array, align: bool = False,
           eps: float = 1e-8) -> jax.Array:
  """SI-SDR in dB, ``[batch]``, of ``estimate`` against ``reference`` (``[batch, T]``
  or ``[batch, 1, T]``), both made zero-mean."""
  reference = reference.reshape(reference.shape[0], -1)
  estimate = estimate.reshape(estimate.shape[0], -1)
  if reference.shape != estimate.shape:
    raise ValueError(f"si_sdr: reference {reference.shape} vs estimate {estimate.shape}.")
  reference = reference - reference.mean(-1, keepdims=True)
  estimate = estimate - estimate.mean(-1, keepdims=True)
  if align:
    estimate = _align(reference, estimate)
  scale = (estimate * reference).sum(-1, keepdims=True) / (
      (reference ** 2).sum(-1, keepdims=True) + eps)
  target = scale * reference
  noise = estimate - target
  return 10 * jnp.log10(((target ** 2).sum(-1) + eps) / ((noise ** 2).sum(-1) + eps))
