"""The classic linear backward decoder of auditory attention (the mTRF family's
stimulus reconstruction), the baseline a neural EEG decoder must beat.

The attended talker's envelope at the EEG rate is reconstructed as a linear map of
the EEG at lags 0 to ``max_lag_seconds`` after it (cortical responses follow the
sound by ~50-250 ms)::

  env_hat[t] = sum_{c, k} w[c, k] * eeg[c, t + k] + b

fit by ridge regression on the train split (EEG z-scored per trial and channel, the
envelope per trial), with the ridge chosen on the val split by identification. A
trial is identified when the reconstruction correlates more with the attended
talker's envelope than with the unattended one's: the identification this EEG
allows with perfectly separated talkers, to set beside the model's own
``id_cue_true_envelopes``.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, signal

from neurocodec_jax.losses.envelope import speech_envelope

RIDGES = tuple(10.0 ** k for k in range(-2, 7))
MAX_LAG_SECONDS = 0.25
CHUNK = 64                  # trials per block of the design matrix


def envelopes(audio: np.ndarray, sample_rate: int, eeg_rate: int, n: int) -> np.ndarray:
  """``[trials, T]`` audio -> ``[trials, n]`` envelopes at the EEG rate (the envelope
  the model's EEG losses use)."""
  return np.asarray(speech_envelope(np.asarray(audio, np.float32), sample_rate, eeg_rate, n))


def _zscore(x: np.ndarray, axis: int = -1) -> np.ndarray:
  x = x - x.mean(axis, keepdims=True)
  return x / (x.std(axis, keepdims=True) + 1e-8)


def lagged(eeg: np.ndarray, lags: int, zscore: bool = True) -> np.ndarray:
  """``[trials, channels, T]`` -> ``[trials, T - lags + 1, channels * lags]``: row t holds
  every channel at t, t + 1, ..., t + lags - 1 (the EEG after the sound at t), each
  trial's channels z-scored first unless ``zscore`` is False."""
  eeg = np.asarray(eeg, np.float64)
  eeg = _zscore(eeg) if zscore else eeg
  n, c, t = eeg.shape
  valid = t - lags + 1
  cols = [eeg[:, :, k:k + valid] for k in range(lags)]          # lags x [n, c, valid]
  return np.stack(cols, -1).transpose(0, 2, 1, 3).reshape(n, valid, c * lags)


def covariance(eeg: np.ndarray, shrink: float = 1e-3) -> np.ndarray:
  """``[C, C]`` spatial covariance of ``eeg [trials, C, T]``, shrunk toward its mean
  variance by ``shrink``."""
  x = np.asarray(eeg, np.float64)
  x = x - x.mean(-1, keepdims=True)
  cov = np.einsum("mct,mdt->cd", x, x) / (x.shape[0] * x.shape[2])
  return cov + shrink * np.trace(cov) / len(cov) * np.eye(len(cov))


def whitener(sources: np.ndarray, order: int) -> np.ndarray:
  """The FIR ``[1, -a_1, ..., -a_order]`` that whitens ``sources [trials, T]``: the
  Yule-Walker fit of an AR(order) model to their mean autocorrelation (``[1.0]``
  for order 0)."""
  if order == 0:
    return np.ones(1)
  x = np.asarray(sources, np.float64)
  x = x - x.mean(-1, keepdims=True)
  n = x.shape[-1]
  acf = np.mean([np.correlate(v, v, "full")[n - 1:n + order] for v in x], 0)
  return np.concatenate([[1.0], -linalg.solve_toeplitz(acf[:order], acf[1:order + 1])])


class LinearDecoder:
  """Ridge backward model. ``fit`` on train, ``choose`` the ridge on val, ``score``."""

  def __init__(self, eeg_rate: int, max_lag_seconds: float = MAX_LAG_SECONDS):
    self.lags = int(round(max_lag_seconds * eeg_rate)) + 1
    self.weights: dict[float, np.ndarray] = {}
    self.ridge: float | None = None

  def _design(self, eeg):
    x = lagged(eeg, self.lags)
    return np.concatenate([x, np.ones(x.shape[:2] + (1,))], -1)   # bias column

  def fit(self, eeg: np.ndarray, attended_env: np.ndarray, ridges=RIDGES) -> "LinearDecoder":
    """``eeg [trials, channels, T]``, ``attended_env [trials, T]``: one weight vector per
    ridge (the ridge scaled by the mean diagonal of X'X)."""
    xtx = xty = 0.0
    for i in range(0, len(eeg), CHUNK):          # the lagged design is channels x lags wide
      x = self._design(eeg[i:i + CHUNK])
      y = _zscore(np.asarray(attended_env[i:i + CHUNK], np.float64))[:, :x.shape[1]]
      x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1)
      xtx, xty = xtx + x.T @ x, xty + x.T @ y
    scale = np.trace(xtx) / len(xtx)
    eye = np.eye(len(xtx))
    eye[-1, -1] = 0.0                                               # the bias is not shrunk
    self.weights = {r: np.linalg.solve(xtx + r * scale * eye, xty) for r in ridges}
    return self

  def reconstruct(self, eeg: np.ndarray, ridge: float | None = None) -> np.ndarray:
    """``[trials, T - lags + 1]`` reconstructed envelopes."""
    w = self.weights[self.ridge if ridge is None else ridge]
    return np.concatenate([self._design(eeg[i:i + CHUNK]) @ w
                           for i in range(0, len(eeg), CHUNK)])

  def correlations(self, eeg, env_att, env_unatt, ridge=None) -> tuple[np.ndarray, np.ndarray]:
    """Per trial, the reconstruction's Pearson r with each talker's envelope."""
    rec = self.reconstruct(eeg, ridge)
    m = rec.shape[1]
    r = lambda env: np.mean(_zscore(rec) * _zscore(np.asarray(env, np.float64)[:, :m]), -1)
    return r(env_att), r(env_unatt)

  def choose(self, eeg, env_att, env_unatt) -> dict:
    """Sets the ridge with the best identification on these (validation) trials;
    ties go to the larger ridge. Returns ``{ridge: identification}``."""
    scores = {}
    for ridge in self.weights:
      ra, ru = self.correlations(eeg, env_att, env_unatt, ridge)
      scores[ridge] = float(np.mean(ra > ru))
    best = max(scores.values())
    self.ridge = max(r for r, s in scores.items() if s == best)
    return scores

  def score(self, eeg, env_att, env_unatt) -> dict:
    """Identification and mean correlations with the chosen ridge, per trial too."""
    ra, ru = self.correlations(eeg, env_att, env_unatt)
    return self._summary(ra, ru, self.ridge)

  def cross_fit_score(self, eeg, env_att, env_unatt, folds: int = 2) -> dict:
    """``score`` on the trials the ridge is chosen on, without choosing on the trials
    it scores: each of ``folds`` interleaved folds is scored with the ridge chosen on
    the others (reporting the best ridge's score on its own choosing trials would be the
    maximum of ``len(RIDGES)`` noisy estimates, biased upward). ``ridge``: every fold's.
    The decoder's own chosen ridge is left as it was."""
    n, kept = len(eeg), self.ridge
    ra, ru, chosen = np.zeros(n), np.zeros(n), []
    for f in range(folds):
      held = np.arange(n) % folds == f
      self.choose(eeg[~held], env_att[~held], env_unatt[~held])
      chosen.append(self.ridge)
      ra[held], ru[held] = self.correlations(eeg[held], env_att[held], env_unatt[held])
    self.ridge = kept
    return self._summary(ra, ru, chosen)

  def _summary(self, ra: np.ndarray, ru: np.ndarray, ridge) -> dict:
    """Identification (and its standard error) and mean correlations from per-trial
    ``ra``, ``ru``."""
    ident = (ra > ru).astype(np.float64)
    p, n = float(ident.mean()), len(ident)
    return dict(identification=p, identification_se=float(np.sqrt(p * (1 - p) / n)),
                r_attended=float(ra.mean()), r_unattended=float(ru.mean()), n=n,
                ridge=ridge, lags=self.lags, per_trial=ident)


class ForwardDecoder(LinearDecoder):
  """A linear forward (encoding) decoder: the EEG's source against each talker's
  predicted response, both whitened in time.

  Fit on the train split: a ridge regression of every channel on the attended and the
  unattended envelope at lags 0 to ``max_lag_seconds`` (the forward TRFs), reduced to
  rank one (one spatial map, a response function to each talker). A trial is decided
  by extracting the source with the spatial filter ``Sigma^-1 map`` (``Sigma``: the
  training EEG's covariance) and correlating it with the response predicted under
  "A attended" and under "B attended", all three through one AR(``ar_order``)
  whitening filter fit to the training sources: where the background's spectrum is
  steep (1/f), an unwhitened correlation is decided by its slowest, noisiest
  components. The same interface as :class:`LinearDecoder` (``choose``, ``score``,
  ``cross_fit_score``); ``correlations`` returns the two hypotheses' correlations.
  """

  def __init__(self, eeg_rate: int, max_lag_seconds: float = 0.4, ar_order: int = 8):
    super().__init__(eeg_rate, max_lag_seconds)
    self.ar_order = ar_order

  def _stimulus(self, env: np.ndarray) -> np.ndarray:
    """``[trials, T] -> [trials, T, lags]``: column k is the envelope k samples ago."""
    env = _zscore(np.asarray(env, np.float64))
    out = np.zeros(env.shape + (self.lags,))
    for k in range(self.lags):
      out[:, k:, k] = env[:, :env.shape[1] - k]
    return out

  def fit(self, eeg, env_att, env_unatt, ridges=RIDGES) -> "ForwardDecoder":
    """``eeg [trials, channels, T]``, both talkers' envelopes ``[trials, T]``."""
    eeg = _zscore(np.asarray(eeg, np.float64))
    xtx = xty = 0.0
    for i in range(0, len(eeg), CHUNK):
      x = np.concatenate([self._stimulus(env_att[i:i + CHUNK]),
                          self._stimulus(env_unatt[i:i + CHUNK])], -1)
      x, y = x.reshape(-1, x.shape[-1]), eeg[i:i + CHUNK].transpose(0, 2, 1).reshape(
          -1, eeg.shape[1])
      xtx, xty = xtx + x.T @ x, xty + x.T @ y
    scale = np.trace(xtx) / len(xtx)
    cov = covariance(eeg)
    self.weights = {}
    for r in ridges:
      trfs = np.linalg.solve(xtx + r * scale * np.eye(len(xtx)), xty)     # [2 lags, C]
      u, sv, vt = np.linalg.svd(trfs, full_matrices=False)
      response, spatial_map = u[:, 0] * sv[0], vt[0]
      spatial = linalg.solve(cov, spatial_map, assume_a="pos")
      source = np.einsum("c,mct->mt", spatial, eeg)
      self.weights[r] = dict(spatial=spatial, attended=response[:self.lags],
                             unattended=response[self.lags:],
                             whiten=whitener(source, self.ar_order))
    return self

  def correlations(self, eeg, env_att, env_unatt, ridge=None) -> tuple[np.ndarray, np.ndarray]:
    """Per trial, the whitened source's Pearson r with the whitened response predicted
    with the first talker attended, and with the second."""
    w = self.weights[self.ridge if ridge is None else ridge]
    skip = len(w["whiten"]) - 1
    white = lambda x: _zscore(signal.lfilter(w["whiten"], [1.0], x, axis=-1)[:, skip:])
    source = white(np.einsum("c,mct->mt", w["spatial"], _zscore(np.asarray(eeg, np.float64))))
    a, u = self._stimulus(env_att), self._stimulus(env_unatt)
    predict = lambda first, second: first @ w["attended"] + second @ w["unattended"]
    return (np.mean(source * white(predict(a, u)), -1),
            np.mean(source * white(predict(u, a)), -1))

