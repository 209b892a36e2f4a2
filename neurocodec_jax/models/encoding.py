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

Per subject (``subjects`` > 0, ``model.encoding_subjects``): the same statistics are
kept for each subject id in [0, ``subjects``) as well, and a trial of a known subject is
decoded with its subject's fit: the subject's statistics shrunk toward the pooled ones
as ``(n_s * S_s + PRIOR_TRIALS * S_pooled) / (n_s + PRIOR_TRIALS)`` (``n_s``: the
subject's training trials), so a subject never trained on (held out, or an id outside
the range, or ``-1``: unknown) gets the pooled fit. Responses and spatial maps differ
between people; one pooled fit blurs them (the linear forward decoder fit per subject
identifies 5-9 points more within subjects, docs/research-log.md).

Shapes: ``eeg [b, C, T]`` (µV), ``talkers [b, T, 2]`` (attended, unattended at the EEG
rate), ``subject [b]`` (int) -> ``source [b, F]``; ``response [2, L]`` (pooled) or
``[b, 2, L]`` (per subject) at the frame rate; ``whitener [order + 1]`` or ``[b, order
+ 1]``.
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
PRIOR_TRIALS = 32.0  # a subject's statistics weigh as the pooled ones after this many trials
STATISTICS = ("xtx", "xty", "lag_cov")


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
  subjects: int = 0           # per-subject statistics for ids 0 .. subjects - 1 (0: pooled only)

  def eeg_taps(self) -> int:
    """Lags 0 .. RESPONSE_SECONDS at the EEG rate."""
    return int(round(cue_forms.RESPONSE_SECONDS * self.eeg_rate)) + 1   # as ForwardDecoder

  @nn.compact
  def __call__(self, eeg: jax.Array, talkers: jax.Array | None, n_frames: int, *,
               train: bool, subject: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """``(source [b, F], {"response": [2, L_frames] or [b, 2, L_frames], "whitener":
    [order + 1] or [b, order + 1]})``.

    Training (``train`` outside initialization) adds this batch to the statistics
    after using them, so the current batch's labels never shape its cue; it needs
    ``talkers [b, T, 2]``, the attended and the unattended talker's envelopes at the
    EEG rate. ``subject [b]``: each trial's subject id (per-subject statistics only;
    ``None``: every trial gets the pooled fit, and training then updates only those)."""
    b, c, t = eeg.shape
    taps, order = self.eeg_taps(), cue_forms.WHITEN_ORDER
    stat = lambda name, shape: self.variable("batch_stats", name, jnp.zeros, shape)
    shapes = dict(xtx=(2 * taps, 2 * taps), xty=(2 * taps, c), lag_cov=(order + 1, c, c))
    count = stat("count", ())
    pooled = {k: stat(k, shape) for k, shape in shapes.items()}
    per_subject = self.subjects > 0
    if per_subject:
      s_count = stat("subject_count", (self.subjects,))                  # trials
      own = {k: stat(f"subject_{k}", (self.subjects,) + shape) for k, shape in shapes.items()}
    eeg_z = cue_forms.standardize(jnp.asarray(eeg, jnp.float32))
    interp = jnp.asarray(cue_forms.frame_interpolation(n_frames, t, self.frame_seconds,
                                                       self.eeg_rate))
    frames = jnp.einsum("bct,ft->bcf", eeg_z, interp, precision=HIGHEST)     # [b, C, F]

    # Each trial's subject as one-hot weights [b, S]: all zero for an id outside the
    # range (unknown, held out), which then gets the pooled fit.
    onehot = None
    if per_subject and subject is not None:
      onehot = jax.nn.one_hot(jnp.asarray(subject, jnp.int32).reshape(b), self.subjects)

    def fitted(stats):
      """``stats`` (``xtx [2 L, 2 L]``, ``xty [2 L, C]``, ``lag_cov [order + 1, C, C]``)
      -> ``(spatial [C], response [2, L], whitener [order + 1])``."""
      spatial, response = fit(stats["xtx"], stats["xty"], stats["lag_cov"][0], self.ridge)
      acf = jnp.einsum("c,kcd,d->k", spatial, stats["lag_cov"], spatial, precision=HIGHEST)
      return spatial, response.reshape(2, taps), cue_forms.yule_walker(acf)

    if onehot is None:
      spatial, response, white = fitted({k: v.value for k, v in pooled.items()})
      source = jnp.einsum("c,bcf->bf", spatial, frames, precision=HIGHEST)
    else:
      n = jnp.einsum("bs,s->b", onehot, s_count.value, precision=HIGHEST)      # trials
      w = n / (n + PRIOR_TRIALS)

      def shrunk(k):
        weight = w.reshape((b,) + (1,) * len(shapes[k]))
        own_k = jnp.einsum("bs,s...->b...", onehot, own[k].value, precision=HIGHEST)
        return weight * own_k + (1.0 - weight) * pooled[k].value

      # One trial at a time: the same fits vmapped deadlocked XLA's CPU runtime inside
      # the recipe's train step (every thread waiting, no CPU; a small program ran).
      spatial, response, white = jax.lax.map(fitted, {k: shrunk(k) for k in shapes})
      source = jnp.einsum("bc,bcf->bf", spatial, frames, precision=HIGHEST)
    # Before the first training batch there is no fit: no source, no whitening (the
    # fit of zero statistics is not finite), an undecided selector.
    ready = count.value > 0
    source = jnp.where(ready, source, 0.0)
    white = jnp.where(ready, white, jnp.zeros_like(white).at[..., 0].set(1.0))
    out = dict(response=resample_response(response, self.eeg_rate, self.frame_seconds,
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
      trial = dict(                                                   # each trial's [b, ...]
          xtx=jnp.einsum("btk,btl->bkl", x, x, precision=HIGHEST) / t,
          xty=jnp.einsum("btk,bct->bkc", x, eeg_z, precision=HIGHEST) / t,
          lag_cov=jnp.stack([jnp.einsum("bcf,bdf->bcd", centred[..., k:],
                                        centred[..., :n_frames - k], precision=HIGHEST)
                             for k in range(order + 1)], 1) / n_frames)
      n = count.value
      for k, var in pooled.items():
        var.value = var.value + (trial[k].mean(0) - var.value) / (n + 1)
      count.value = n + 1
      if onehot is not None:
        m = onehot.sum(0)                                             # [S] trials this batch
        total = s_count.value + m
        for k, var in own.items():
          sums = jnp.einsum("bs,b...->s...", onehot, trial[k], precision=HIGHEST)
          grow = (sums - m.reshape((-1,) + (1,) * len(shapes[k])) * var.value)
          var.value = var.value + grow / jnp.maximum(total, 1.0).reshape(
              (-1,) + (1,) * len(shapes[k]))
        s_count.value = total
    return source, out
