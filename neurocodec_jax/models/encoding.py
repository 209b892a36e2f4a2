"""A rank-one linear encoding model of the EEG, fit inside the model in closed form
(``model.cue_form="encoding"``): the linear forward decoder
(``linear_decoder.ForwardDecoder``) as the selector's source of the cue.

Every training batch adds to running means (``batch_stats``, no gradient) of what a
ridge regression of each EEG channel on both talkers' envelopes needs: the lagged
envelopes' Gram matrix and their cross-products with the EEG (lags 0 ..
``cue.RESPONSE_SECONDS`` at the EEG rate; EEG and envelopes z-scored per trial), and
the EEG's lagged spatial covariances at the frame rate. From them, at every call:

  TRFs      (X'X + ridge) \\ X'Y, [2 lags, C], reduced to rank one: a response to each
            talker (attended, unattended) and one spatial map
  source    the EEG through the spatial filter Sigma^-1 map (Sigma: the covariance),
            at the frame rate
  whitener  the Yule-Walker AR(``cue.WHITEN_ORDER``) filter of that source, from the
            lagged covariances (the training sources' spectrum, one for every trial)

The selector then compares the whitened source with each stream's predicted response
as ``cue_form="forward"`` does. Correlation-trained EEG decoders fit the training
subjects; the regression estimate of the response generalizes to unseen ones
(docs/research-log.md). Without statistics (before the first training batch) the
source is zero and the selector undecided.

Shapes: ``eeg [b, C, T]`` (µV), ``talkers [b, T, 2]`` (attended, unattended at the EEG
rate) -> ``source [b, F]``; ``response [2, L]`` at the frame rate; ``whitener
[order + 1]``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax.models import cue as cue_forms
from neurocodec_jax.ops.precision import HIGHEST

RIDGE = 0.1          # relative to X'X's mean diagonal; chosen on the held-out family's val
SHRINK = 1e-3        # the covariance's shrinkage toward its mean variance (as ForwardDecoder)


def lagged(env: jax.Array, taps: int) -> jax.Array:
  """``[b, T] -> [b, T, taps]``: column k is the envelope k samples ago (zero before 0)."""
  n = env.shape[1]
  return jnp.stack([jnp.pad(env, ((0, 0), (k, 0)))[:, :n] for k in range(taps)], -1)


def fit(xtx: jax.Array, xty: jax.Array, cov: jax.Array, ridge: float = RIDGE
        ) -> tuple[jax.Array, jax.Array]:
  """``(spatial [C], response [2 L])`` from the statistics ``xtx [2 L, 2 L]``, ``xty
  [2 L, C]`` and ``cov [C, C]`` (L lags of each talker, C channels): the ridge TRFs
  ``[2 L, C]`` reduced to rank one, the spatial filter ``Sigma^-1 map`` (unit norm: its
  scale, like the sign the two share, changes no correlation)."""
  eye = jnp.eye(len(xtx))
  scale = jnp.trace(xtx) / len(xtx)
  trfs = jnp.linalg.solve(xtx + (ridge * scale + 1e-8) * eye, xty)
  u, s, vt = jnp.linalg.svd(trfs, full_matrices=False)
  c = len(cov)
  shrunk = cov + (SHRINK * jnp.trace(cov) / c + 1e-8) * jnp.eye(c)
  spatial = jnp.linalg.solve(shrunk, vt[0])
  return spatial / jnp.maximum(jnp.linalg.norm(spatial), 1e-12), u[:, 0] * s[0]


def resample_response(response: jax.Array, eeg_rate: int, frame_seconds: float,
                      taps: int) -> jax.Array:
  """An EEG-rate response function ``[..., L]`` at the frame rate ``[..., taps]``
  (linear interpolation at lags 0, 1, ... frames; the envelopes are smooth at both
  rates). Scale is irrelevant to the correlations it feeds."""
  at = jnp.asarray(np.arange(taps) * frame_seconds * eeg_rate)
  return jax.vmap(lambda h: jnp.interp(at, jnp.arange(h.shape[-1]), h))(
      response.reshape(-1, response.shape[-1])).reshape(response.shape[:-1] + (taps,))


class EncodingModel(nn.Module):
  """See the module docstring."""
  frame_seconds: float
  eeg_rate: int
  ridge: float = RIDGE

  def eeg_taps(self) -> int:
    """Lags 0 .. RESPONSE_SECONDS at the EEG rate."""
    return int(round(cue_forms.RESPONSE_SECONDS * self.eeg_rate)) + 1   # as ForwardDecoder

  @nn.compact
  def __call__(self, eeg: jax.Array, talkers: jax.Array | None, n_frames: int, *,
               train: bool) -> tuple[jax.Array, dict]:
    """``(source [b, F], {"response": [2, L_frames], "whitener": [order + 1]})``.

    Training (``train`` outside initialization) adds this batch to the statistics
    after using them, so the current batch's labels never shape its cue; it needs
    ``talkers [b, T, 2]``, the attended and the unattended talker's envelopes at the
    EEG rate."""
    b, c, t = eeg.shape
    taps, order = self.eeg_taps(), cue_forms.WHITEN_ORDER
    stat = lambda name, shape: self.variable("batch_stats", name, jnp.zeros, shape)
    count = stat("count", ())
    xtx, xty = stat("xtx", (2 * taps, 2 * taps)), stat("xty", (2 * taps, c))
    lag_cov = stat("lag_cov", (order + 1, c, c))
    eeg_z = cue_forms.standardize(jnp.asarray(eeg, jnp.float32))
    interp = jnp.asarray(cue_forms.frame_interpolation(n_frames, t, self.frame_seconds,
                                                       self.eeg_rate))
    frames = jnp.einsum("bct,ft->bcf", eeg_z, interp, precision=HIGHEST)     # [b, C, F]

    spatial, response = fit(xtx.value, xty.value, lag_cov.value[0], self.ridge)
    acf = jnp.einsum("c,kcd,d->k", spatial, lag_cov.value, spatial, precision=HIGHEST)
    source = jnp.einsum("c,bcf->bf", spatial, frames, precision=HIGHEST)
    white = cue_forms.yule_walker(acf)
    # Before the first training batch there is no fit: no source, no whitening (the
    # fit of zero statistics is not finite), an undecided selector.
    fitted = count.value > 0
    source = jnp.where(fitted, source, 0.0)
    white = jnp.where(fitted, white, jnp.zeros_like(white).at[0].set(1.0))
    out = dict(response=resample_response(response.reshape(2, taps), self.eeg_rate,
                                          self.frame_seconds,
                                          cue_forms.response_taps(self.frame_seconds)),
               whitener=white)

    if train and not self.is_initializing():
      if talkers is None or talkers.shape != (b, t, 2):
        raise ValueError(f"model.cue_form='encoding' fits its encoding model on training "
                         f"batches: it needs both talkers' envelopes [{b}, {t}, 2] at the "
                         f"EEG rate, got {None if talkers is None else talkers.shape}.")
      z = cue_forms.standardize
      x = jnp.concatenate([lagged(z(talkers[..., 0]), taps),
                           lagged(z(talkers[..., 1]), taps)], -1)                 # [b, T, 2 L]
      centred = frames - frames.mean(-1, keepdims=True)
      batch = dict(
          xtx=jnp.einsum("btk,btl->kl", x, x, precision=HIGHEST) / (b * t),
          xty=jnp.einsum("btk,bct->kc", x, eeg_z, precision=HIGHEST) / (b * t),
          lag_cov=jnp.stack([jnp.einsum("bcf,bdf->cd", centred[..., k:],
                                        centred[..., :n_frames - k], precision=HIGHEST)
                             for k in range(order + 1)]) / (b * n_frames))
      n = count.value
      for name, var in dict(xtx=xtx, xty=xty, lag_cov=lag_cov).items():
        var.value = var.value + (batch[name] - var.value) / (n + 1)
      count.value = n + 1
    return source, out
