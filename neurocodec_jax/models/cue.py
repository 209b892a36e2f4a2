"""How the selector compares the EEG's cue with a talker's envelope (``model.cue_form``).

``"backward"`` (the classic stimulus reconstruction): the cue is a reconstruction of
the attended envelope and is correlated with each talker's envelope as it is.

``"forward"`` (the encoding form, ``linear_decoder.ForwardDecoder``'s decision): the cue
is the EEG's source; under the hypothesis "talker k attended" the source would be the
response to talker k through a learnt attended response function plus the response to
the other talker through a learnt unattended one (lags 0 .. ``RESPONSE_SECONDS``, at the
frame rate: the EEG follows the ignored talker too), and the source and both predicted
responses pass through one whitening filter fit to the trial's own source (a
Yule-Walker AR(``WHITEN_ORDER``), no gradient through its fit). Where the EEG's
background is steep (1/f), an unwhitened correlation is decided by its slowest,
noisiest components: on the family generator with subjects held out, whitening is
the linear forward decoder's whole 4-6 point lead over the backward one
(docs/research-log.md, which also has what this form did inside the model). The
filter is fit per trial, so the forward form reads the whole window: offline only
(``model.select_window="trial"``).

``"encoding"``: the forward form's comparison, with the source, both responses and the
whitener (one for every trial, or one for each subject) taken from a linear encoding
model the model fits by regression on its training batches (``models/encoding.py``),
not learnt by correlation.

Shapes: cues ``[batch, frames]``; envelopes ``[batch, frames, 2]`` (two talkers or
streams); responses ``[2, L]`` or ``[batch, 2, L]`` (attended, unattended); whiteners
``[batch, order + 1]``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

CUE_FORMS = ("backward", "forward", "encoding")
RESPONSE_SECONDS = 0.4      # cortical responses follow the sound by ~50-250 ms, tails to 400
WHITEN_ORDER = 4            # AR order of the whitener at the frame rate (2 s = 100 frames)


def frame_interpolation(n_frames: int, n_env: int, frame_seconds: float,
                        eeg_rate: int) -> np.ndarray:
  """``[n_frames, n_env]`` linear interpolation of an EEG-rate envelope at frame centres.

  Envelope sample j describes the stimulus around (j + 0.5) / eeg_rate seconds
  (``losses.speech_envelope``); frame i covers (i + 0.5) * frame_seconds.
  """
  pos = np.clip((np.arange(n_frames) + 0.5) * frame_seconds * eeg_rate - 0.5, 0, n_env - 1)
  lo = np.floor(pos).astype(int)
  hi = np.minimum(lo + 1, n_env - 1)
  w = np.zeros((n_frames, n_env), np.float32)
  w[np.arange(n_frames), lo] += 1 - (pos - lo)
  w[np.arange(n_frames), hi] += pos - lo
  return w


def response_taps(frame_seconds: float) -> int:
  """Taps of the response function at the frame rate: lags 0 .. RESPONSE_SECONDS."""
  return int(math.floor(RESPONSE_SECONDS / frame_seconds + 1e-9)) + 1


def causal_fir(x: jax.Array, taps: jax.Array) -> jax.Array:
  """``y[:, t] = sum_l taps[..., l] x[:, t - l]`` (zero before frame 0), along axis 1.

  ``x [b, F]`` or ``[b, F, K]``; ``taps [L]`` (shared) or ``[b, L]`` (per example).
  """
  squeeze = x.ndim == 2
  x = x[..., None] if squeeze else x
  taps = jnp.broadcast_to(taps, (x.shape[0], taps.shape[-1]))
  n = x.shape[1]
  y = sum(taps[:, l, None, None] * jnp.pad(x, ((0, 0), (l, 0), (0, 0)))[:, :n]
          for l in range(taps.shape[-1]))
  return y[..., 0] if squeeze else y


def standardize(x: jax.Array, axis: int = -1) -> jax.Array:
  """Zero mean, unit variance along ``axis`` (each trial's z-score)."""
  x = x - x.mean(axis, keepdims=True)
  return x / jnp.sqrt(jnp.mean(x ** 2, axis, keepdims=True) + 1e-8)


def yule_walker(acf: jax.Array) -> jax.Array:
  """``[..., order + 1]``: the whitening FIR ``[1, -a_1, ..., -a_order]`` of the
  Yule-Walker AR(order) fit to autocorrelations ``acf [..., order + 1]`` (lags 0 ..
  order)."""
  order = acf.shape[-1] - 1
  acf = acf.at[..., 0].multiply(1 + 1e-3) + 1e-12         # a little ridge: never singular
  idx = jnp.abs(jnp.arange(order)[:, None] - jnp.arange(order)[None, :])
  a = jnp.linalg.solve(acf[..., idx], acf[..., 1:, None])[..., 0]     # Toeplitz [..., o, o]
  return jnp.concatenate([jnp.ones_like(a[..., :1]), -a], -1)


def whitener(cue: jax.Array, order: int = WHITEN_ORDER) -> jax.Array:
  """``[b, order + 1]``: the FIR of each trial's Yule-Walker AR(order) fit to its own
  ``cue [b, F]`` (constant to the gradient)."""
  x = jax.lax.stop_gradient(cue)
  x = x - x.mean(-1, keepdims=True)
  n = x.shape[-1]
  return yule_walker(jnp.stack([jnp.sum(x[:, k:] * x[:, :n - k], -1)
                                for k in range(order + 1)], -1) / n)


def compared(envelopes: jax.Array, form: str, responses: jax.Array | None = None,
             white: jax.Array | None = None) -> jax.Array:
  """What the cue is correlated with, ``[b, F, 2]``: ``envelopes [b, F, 2]`` as they are
  (backward), or (forward, encoding) under "k attended" the response predicted through
  ``responses [2, L]`` or per example ``[b, 2, L]`` (the attended response * talker k
  + the unattended one * the other; encoding: each envelope z-scored over the frames
  first), centred and whitened by ``white``."""
  if form == "backward":
    return envelopes
  if form not in CUE_FORMS:
    raise ValueError(f"model.cue_form must be one of {CUE_FORMS}, got {form!r}.")
  if envelopes.ndim != 3 or envelopes.shape[-1] != 2:
    raise ValueError(f"the {form} cue form compares two envelopes [b, F, 2], got "
                     f"{envelopes.shape}.")
  if form == "encoding":
    # Its responses were fit to each trial's z-scored envelopes: the sum must weigh the
    # two envelopes as the fit did, whatever their levels (or a stream head's scale).
    envelopes = standardize(envelopes, axis=1)
  predicted = (causal_fir(envelopes, responses[..., 0, :])
               + causal_fir(envelopes[..., ::-1], responses[..., 1, :]))
  return causal_fir(predicted - predicted.mean(1, keepdims=True), white)


def source(cue: jax.Array, form: str, white: jax.Array | None = None) -> jax.Array:
  """The cue as the selector compares it: as it is (backward), centred and whitened by
  ``white`` (forward, encoding)."""
  if form == "backward":
    return cue
  return causal_fir(cue - cue.mean(1, keepdims=True), white)
