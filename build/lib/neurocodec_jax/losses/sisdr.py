"""Scale-invariant SDR, batched, with an optional bounded, sign-robust alignment.

SI-SDR is invariant to the estimate's scale, its sign included (the projection's
scale may be negative). Alignment must be too: the lag is the one maximizing the
*magnitude* of the cross-correlation (an inverted copy peaks negatively; the signed
argmax would pick a pitch period away instead), searched only within
``|lag| <= max_lag`` samples, the delay the pipeline can really introduce
(``ALIGN_MAX_LAG_SECONDS``). The estimate is shifted by that lag, zero-filled.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# The largest delay evaluation searches when aligning a decoded output with its
# reference. DAC's decoder is frame-aligned with its encoder (measured lag 0 on the
# demo codec, docs/evaluation.md), and the generator predicts frame for frame, so
# anything past a few milliseconds is a spurious correlation peak, not a delay.
ALIGN_MAX_LAG_SECONDS = 0.005


def max_lag_samples(sample_rate: int) -> int:
  return int(round(ALIGN_MAX_LAG_SECONDS * sample_rate))


def best_lag(reference: jax.Array, estimate: jax.Array, max_lag: int) -> jax.Array:
  """``[batch]`` int lags in ``[-max_lag, max_lag]``: ``estimate[t - lag]`` best matches
  ``reference[t]`` in |cross-correlation| (``[batch, T]`` inputs)."""
  n = reference.shape[-1]
  size = 2 * n
  xcorr = jnp.fft.irfft(jnp.fft.rfft(reference, size) * jnp.conj(jnp.fft.rfft(estimate, size)),
                        size)                          # lag k at index k mod size
  lags = jnp.arange(-max_lag, max_lag + 1)
  window = jnp.take(xcorr, lags % size, axis=-1)       # [batch, 2 max_lag + 1]
  return lags[jnp.argmax(jnp.abs(window), axis=-1)]


def shift(estimate: jax.Array, lag: jax.Array) -> jax.Array:
  """``out[t] = estimate[t - lag]``, zero outside: ``[batch, T]``, ``lag [batch]``."""
  n = estimate.shape[-1]
  idx = jnp.arange(n)[None, :] - lag[:, None]
  valid = (idx >= 0) & (idx < n)
  return jnp.where(valid, jnp.take_along_axis(estimate, jnp.clip(idx, 0, n - 1), axis=-1), 0.0)


def si_sdr(reference: jax.Array, estimate: jax.Array, max_lag: int = 0,
           eps: float = 1e-8) -> jax.Array:
  """SI-SDR in dB, ``[batch]``, of ``estimate`` against ``reference`` (``[batch, T]``
  or ``[batch, 1, T]``), both made zero-mean; aligned first when ``max_lag > 0``."""
  reference = reference.reshape(reference.shape[0], -1)
  estimate = estimate.reshape(estimate.shape[0], -1)
  if reference.shape != estimate.shape:
    raise ValueError(f"si_sdr: reference {reference.shape} vs estimate {estimate.shape}.")
  reference = reference - reference.mean(-1, keepdims=True)
  estimate = estimate - estimate.mean(-1, keepdims=True)
  if max_lag > 0:
    estimate = shift(estimate, best_lag(reference, estimate, max_lag))
  scale = (estimate * reference).sum(-1, keepdims=True) / (
      (reference ** 2).sum(-1, keepdims=True) + eps)
  target = scale * reference
  noise = estimate - target
  return 10 * jnp.log10(((target ** 2).sum(-1) + eps) / ((noise ** 2).sum(-1) + eps))
