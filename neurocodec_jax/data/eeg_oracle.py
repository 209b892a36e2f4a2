"""The synthetic EEG generator's own forward model as an attention decoder.

A decoder learnt from data (the ridge backward model, the model's EEG encoder) has to
estimate what the generator knows: each subject's stimulus feature, response
functions and spatial map, and its background's statistics. This decoder is given
them. For a trial with talkers A and B it predicts the source time course under both
hypotheses (A attended, or B), extracts the source from the EEG with a spatial filter
``Sigma^-1 pattern`` (``Sigma``: the background's covariance over electrodes), whitens
it in time with an autoregressive filter fit to the background's source, and picks
the hypothesis whose whitened prediction correlates more with it: a matched filter in
noise colored in space and time, close to the likelihood-ratio test for the Gaussian
part of the background. With every part the subject's own (:meth:`ForwardOracle.of_subject`)
its identification is the ceiling a decoder of this EEG can be compared with (not a
strict bound: it ignores the non-Gaussian part, muscle bursts and blinks); with
parts replaced (the training subjects' mean model, statistics estimated from unlabeled
EEG) it measures what each piece of knowledge is worth.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import linalg, signal

from neurocodec_jax.data import synthetic
from neurocodec_jax.linear_decoder import covariance, whitener

AR_ORDER = 8


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
  a, b = a - a.mean(), b - b.mean()
  return float(a @ b / (np.sqrt((a @ a) * (b @ b)) + 1e-12))


def _centred(x: np.ndarray) -> np.ndarray:
  return x - x.mean(-1, keepdims=True)


def background_draws(subject: synthetic.Subject, spec: synthetic.SyntheticSpec,
                     draws: int = 64, seed: int = 0) -> np.ndarray:
  """``[draws, C, T_eeg]`` fresh background EEG of ``subject`` (no response)."""
  rng = np.random.default_rng(seed)
  back = (synthetic.family_background if subject.trf_unattended is not None
          else synthetic.background)
  return np.stack([back(rng, subject, spec.eeg_length, spec.eeg_rate) for _ in range(draws)])


def population(subjects: list[synthetic.Subject]) -> synthetic.Subject:
  """The subjects' mean forward model: mean spatial map, response functions and
  feature mix (what a subject-independent decoder could at best learn of them)."""
  mean = lambda k: np.mean([getattr(s, k) for s in subjects], 0)
  return dataclasses.replace(subjects[0], pattern=mean("pattern"), trf=mean("trf"),
                             trf_unattended=(None if subjects[0].trf_unattended is None
                                             else mean("trf_unattended")),
                             feature_weights=(None if subjects[0].feature_weights is None
                                              else mean("feature_weights")))


def stimulus(spec: synthetic.SyntheticSpec, audio: np.ndarray) -> np.ndarray:
  """What the forward model reads of one talker's ``[T]`` audio: the family's features
  ``[F, T_eeg]`` or the classic envelope ``[T_eeg]``."""
  if spec.eeg_model == "family":
    return synthetic.stimulus_features(audio, spec.sample_rate, spec.eeg_rate, spec.eeg_length)
  return synthetic.envelope_at(audio, spec.sample_rate, spec.eeg_rate, spec.eeg_length)


class ForwardOracle:
  """A matched-filter decoder from a forward ``model`` (a :class:`synthetic.Subject`:
  its pattern, response functions and feature mix), a ``spatial`` filter ``[C]`` and a
  temporal ``whitener`` (FIR taps; ``[1.0]``: none)."""

  def __init__(self, model: synthetic.Subject, spec: synthetic.SyntheticSpec,
               spatial: np.ndarray, whiten: np.ndarray):
    self.model, self.spec = model, spec
    self.spatial, self.whiten = np.asarray(spatial), np.asarray(whiten)

  @classmethod
  def of_subject(cls, subject, spec, draws: int = 64, seed: int = 0) -> "ForwardOracle":
    """Everything the subject's own: its model, its background's covariance and
    spectrum (from ``draws`` fresh background trials)."""
    return cls.with_noise(subject, spec, background_draws(subject, spec, draws, seed))

  @classmethod
  def with_noise(cls, model, spec, noise: np.ndarray,
                 cov: np.ndarray | None = None) -> "ForwardOracle":
    """``model`` with the spatial filter from ``cov`` (default: ``noise``'s) and the
    whitener of ``noise [trials, C, T]`` seen through it. ``noise`` may be a subject's
    unlabeled EEG: at these SNRs it is almost all background."""
    cov = covariance(noise) if cov is None else cov
    spatial = linalg.solve(cov, model.pattern, assume_a="pos")
    return cls(model, spec, spatial,
               whitener(np.einsum("c,mct->mt", spatial, _centred(noise)), AR_ORDER))

  def _drive(self, attended, unattended) -> np.ndarray:
    family = self.model.trf_unattended is not None
    fn = synthetic.family_drive if family else synthetic.classic_drive
    return fn(self.model, attended, unattended)

  def _white(self, x: np.ndarray) -> np.ndarray:
    return signal.lfilter(self.whiten, [1.0], x)[len(self.whiten) - 1:]

  def correlations(self, eeg: np.ndarray, stim_a, stim_b) -> tuple[float, float]:
    """``eeg [C, T_eeg]`` and the two talkers' :func:`stimulus`: the whitened source's
    correlation with the prediction under "A attended" and under "B attended"."""
    source = self._white(self.spatial @ _centred(eeg))
    return (_pearson(source, self._white(self._drive(stim_a, stim_b))),
            _pearson(source, self._white(self._drive(stim_b, stim_a))))


def identify(oracles: dict[int, ForwardOracle], eeg: np.ndarray, stimuli: list,
             subjects: np.ndarray) -> np.ndarray:
  """``[trials]`` 1.0 where the oracle of the trial's subject picks the attended
  talker. ``eeg [trials, C, T_eeg]``; ``stimuli``: per trial, the attended and the
  unattended talker's :func:`stimulus`; ``subjects [trials]``."""
  return np.array([float(np.subtract(*oracles[int(s)].correlations(
      np.asarray(x, np.float64), *stim)) > 0) for x, stim, s in zip(eeg, stimuli, subjects)])
