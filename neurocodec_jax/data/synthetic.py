"""Synthetic auditory-attention-decoding (AAD) dataset in the original HDF5 layout.

Stands in for real EEG data in the demo and the tests. Each trial mixes two
talkers drawn from the SAME speech-like distribution; which one is attended is
random per trial, so only the EEG can tell them apart. The EEG (128 Hz, volts)
carries a subject-specific temporal response function (TRF) to the attended
talker's envelope, a weaker one to the unattended talker's, and realistic
background activity.

Talker model (per trial, per talker, all random):
  * syllables at 2-8 Hz with pauses: raised-cosine amplitude bumps;
  * voiced source: harmonics of a drifting f0 (80-260 Hz) with a 1/k tilt;
  * formant-like filtering: each syllable is one of four vowels (three
    two-pole resonators each), cross-faded along the syllable sequence;
  * noise bursts (fricatives) band-passed at 2-7 kHz between some syllables.

EEG model (per subject: a spatial pattern and a TRF; per trial: background):
  * envelope: |analytic signal| resampled to 128 Hz, compressed (^0.6), z-scored;
  * response = pattern x (TRF * env_attended + UNATTENDED_GAIN * TRF * env_unattended),
    TRF = P1 (+, ~50 ms), N1 (-, ~100 ms), P2 (+, ~200 ms) with per-subject
    latencies and amplitudes;
  * background: spatially smooth 1/f noise, posterior alpha bursts (8-12 Hz),
    50 Hz line noise and white sensor noise, scaled to ``eeg_snr_db`` (power of
    the response over the power of the background, averaged over channels);
  * the sum is scaled to ~10 µV and stored in volts.

Run ``python -m neurocodec_jax.data.synthetic --out DIR --preset demo``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import sys

import h5py
import numpy as np
from scipy import signal
from tqdm import tqdm

from neurocodec_jax import codec
from neurocodec_jax.data.atomic import atomic_directory

SPLITS = ("train", "val", "test")
EEG_MODELS = ("classic", "family")
SUBJECT_SPLITS = ("within", "held_out")
UNATTENDED_GAIN = 0.25      # response to the ignored talker, relative
EEG_MICROVOLTS = 10.0       # overall EEG std in µV
VOWELS = (                  # formant (centre Hz, bandwidth Hz) triples
    ((730, 90), (1090, 110), (2440, 170)),   # a
    ((270, 60), (2290, 100), (3010, 200)),   # i
    ((300, 70), (870, 90), (2240, 160)),     # u
    ((530, 80), (1840, 110), (2480, 170)),   # e
)


@dataclasses.dataclass
class SyntheticSpec:
  """Generator settings; saved in the dataset's ``manifest.json``."""
  sample_rate: int = 16000
  seconds: float = 2.0
  hop_length: int = 320          # audio length is a multiple of the codec hop
  eeg_rate: int = 128
  eeg_channels: int = 32
  subjects: int = 4
  n_train: int = 256
  n_val: int = 32
  n_test: int = 64
  eeg_snr_db: float = -15.0
  level_db: float = 3.0          # level difference drawn from U(-level_db, level_db)
  seed: int = 1234
  # "eeg": the EEG model above. "oracle": the attended talker's own envelope
  # (z-scored, at the EEG rate, times the subject's pattern) in place of the EEG —
  # a perfect cue, for diagnosing whether an extractor can use a cue at all. The
  # audio of every trial is the same under both.
  cue: str = "eeg"
  # The talkers: "synthetic" (the generator above) or the recorded speech corpus at
  # this path (``neurocodec_jax.data.speech``): two talkers of different people per
  # trial, any genders, each an excerpt of the corpus split of the trial's split (no
  # recording is in two splits). The EEG follows their envelopes as above.
  talkers: str = "synthetic"
  # The EEG forward model: "classic" (the model above, one for every subject) or
  # "family" (per subject: the stimulus feature, the response functions, the spatial
  # map, the noise family and the SNR are drawn from a family of models; see
  # make_family_subject), so a decoder cannot learn one generator.
  eeg_model: str = "classic"
  # With "family": each subject's SNR is drawn from [eeg_snr_db - snr_spread_db, eeg_snr_db].
  snr_spread_db: float = 0.0
  # Which subjects each split holds: "within" (every subject in every split) or
  # "held_out" (val and test subjects never appear in training; subject_pools).
  subject_split: str = "within"

  @property
  def audio_length(self) -> int:
    return int(self.seconds * self.sample_rate) // self.hop_length * self.hop_length

  @property
  def eeg_length(self) -> int:
    return int(round(self.seconds * self.eeg_rate))


PRESETS = {
    "demo": SyntheticSpec(),
    "tiny": SyntheticSpec(n_train=16, n_val=8, n_test=8, eeg_channels=8, subjects=2,
                          seconds=1.0),
    "cocktail": SyntheticSpec(sample_rate=44100, hop_length=512, eeg_channels=128,
                              subjects=8),
    "kul": SyntheticSpec(sample_rate=16000, hop_length=320, eeg_channels=64,
                         subjects=8),
}


# ---------------------------------------------------------------- talkers ----

def _syllable_track(rng, n, sr):
  """Syllable onsets/offsets in samples and a vowel id per syllable."""
  t, spans = 0.0, []
  seconds = n / sr
  while t < seconds:
    if rng.random() < 0.15:                       # pause
      t += rng.uniform(0.15, 0.4)
      continue
    dur = 1.0 / rng.uniform(2.0, 8.0)             # syllabic rate 2-8 Hz
    spans.append((int(t * sr), int(min(t + dur * 0.85, seconds) * sr),
                  int(rng.integers(len(VOWELS)))))
    t += dur
  return spans


def _resonator(x, f, bw, sr):
  r = np.exp(-np.pi * bw / sr)
  a = [1.0, -2 * r * np.cos(2 * np.pi * f / sr), r * r]
  return signal.lfilter([1 - r], a, x)


def talker(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
  """One speech-like signal ``[n]`` at unit RMS (see the module docstring)."""
  time = np.arange(n) / sr
  f0_base = rng.uniform(80, 260)
  drift = 1 + 0.12 * np.sin(2 * np.pi * rng.uniform(0.3, 1.5) * time + rng.uniform(0, 6.3))
  f0 = f0_base * drift * (1 + 0.03 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n))
  phase = 2 * np.pi * np.cumsum(f0) / sr
  n_harm = int(min(40, 0.45 * sr / f0.max()))
  k = np.arange(1, n_harm + 1)[:, None]
  source = (np.sin(k * phase[None, :]) / k).sum(0)

  spans = _syllable_track(rng, n, sr)
  vowel_w = np.zeros((len(VOWELS), n))
  envelope = np.zeros(n)
  for start, stop, v in spans:
    if stop - start < 8:
      continue
    bump = np.sin(np.linspace(0, np.pi, stop - start)) ** 2
    bump *= rng.uniform(0.5, 1.0)
    envelope[start:stop] = np.maximum(envelope[start:stop], bump)
    vowel_w[v, start:stop] += bump
  vowel_w /= np.maximum(vowel_w.sum(0, keepdims=True), 1e-6)
  voiced = np.zeros(n)
  for v, formants in enumerate(VOWELS):
    if vowel_w[v].any():
      y = sum(_resonator(source, f * rng.uniform(0.92, 1.08), bw, sr)
              for f, bw in formants if f < 0.45 * sr)
      voiced += y * vowel_w[v]
  speech = voiced * envelope

  hi = min(7000, 0.45 * sr)
  sos = signal.butter(4, [2000, hi], btype="band", fs=sr, output="sos")
  noise = signal.sosfilt(sos, rng.standard_normal(n))
  bursts = np.zeros(n)
  for (_, stop, _), nxt in zip(spans, spans[1:] + [(n, n, 0)]):
    if rng.random() < 0.35:
      length = int(rng.uniform(0.03, 0.1) * sr)
      end = min(stop + length, nxt[0], n)
      if end - stop > 8:
        bursts[stop:end] = np.hanning(end - stop) * rng.uniform(0.2, 0.5)
  speech = speech / (np.std(speech) + 1e-8) + 0.7 * noise / (np.std(noise) + 1e-8) * bursts
  return speech / (np.sqrt(np.mean(speech ** 2)) + 1e-8)


def envelope_at(x: np.ndarray, sr: int, rate: int, length: int) -> np.ndarray:
  """Compressed broadband envelope ``[length]`` at ``rate`` Hz, z-scored."""
  env = np.abs(signal.hilbert(x))
  g = np.gcd(int(sr), int(rate))
  env = signal.resample_poly(env, rate // g, sr // g)[:length]
  env = np.maximum(env, 0) ** 0.6
  return (env - env.mean()) / (env.std() + 1e-8)


# -------------------------------------------------------------------- EEG ----

def electrode_positions(n: int) -> np.ndarray:
  """``[n, 3]`` unit vectors spread over the upper hemisphere (Fibonacci)."""
  i = np.arange(n) + 0.5
  z = 1 - i / n                       # from the vertex down to the ear line
  phi = np.pi * (1 + 5 ** 0.5) * i
  r = np.sqrt(1 - z ** 2)
  return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


@dataclasses.dataclass
class Subject:
  pattern: np.ndarray         # [C] spatial weights of the auditory response
  trf: np.ndarray             # [L] impulse response at the EEG rate
  mixing: np.ndarray          # [C, C] spatial smoothing of background sources
  alpha_pattern: np.ndarray   # [C]
  # The "family" model's per-subject draws (None in the classic model).
  trf_unattended: np.ndarray | None = None   # [L]: the ignored talker's response
  feature_weights: np.ndarray | None = None  # [len(FEATURES)] mix of stimulus features
  noise: str = "pink"                        # one of NOISE_FAMILIES
  snr_db: float | None = None
  line_hz: float = 50.0


def make_subject(rng, channels: int, eeg_rate: int) -> Subject:
  pos = electrode_positions(channels)
  # Fronto-central auditory topography (a dipole's positive pole) per subject.
  centre = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.4), 0.9])
  centre /= np.linalg.norm(centre)
  pattern = np.exp(-np.sum((pos - centre) ** 2, 1) / 0.5) - 0.35
  pattern /= np.sqrt(np.mean(pattern ** 2))
  t = np.arange(int(0.4 * eeg_rate)) / eeg_rate
  trf = np.zeros_like(t)
  for lat, width, amp in ((0.05, 0.015, 0.6), (0.10, 0.02, -1.0), (0.20, 0.04, 0.7)):
    trf += rng.uniform(0.7, 1.3) * amp * np.exp(
        -0.5 * ((t - lat * rng.uniform(0.85, 1.15)) / width) ** 2)
  trf /= np.sqrt(np.sum(trf ** 2))
  dist = np.sum((pos[:, None] - pos[None]) ** 2, -1)
  mixing = np.exp(-dist / 0.3)
  mixing /= np.linalg.norm(mixing, axis=1, keepdims=True)
  back = np.array([0.0, -0.8, 0.6])
  alpha_pattern = np.exp(-np.sum((pos - back) ** 2, 1) / 0.6)
  return Subject(pattern, trf, mixing, alpha_pattern)


FEATURES = ("broadband", "onset", "low_band", "mid_band", "high_band")
BANDS = {"low_band": (100, 1000), "mid_band": (1000, 3000), "high_band": (3000, 7000)}
NOISE_FAMILIES = ("pink", "brown", "ar1", "pink_emg", "pink_blinks")


def make_family_subject(rng, channels: int, eeg_rate: int, snr_high: float,
                        snr_spread: float) -> Subject:
  """A subject of the "family" model: every part of the forward model is drawn.

  * stimulus feature: a random convex mix of the broadband envelope, its onsets
    (half-wave rectified derivative) and three band envelopes;
  * response functions: the canonical P1 / N1 / P2 with latencies within +-25% and
    amplitudes 0.5-1.5x, at times a later component of either sign; the ignored
    talker drives only the early (< 120 ms) part, scaled by 0.1-0.5 (attention
    modulates the later components);
  * spatial map: a fronto-central blob of varying place and spread, at times a
    weaker second source of either sign;
  * noise: one of NOISE_FAMILIES, line noise at 50 or 60 Hz, alpha at 8-12 Hz;
  * SNR drawn from [snr_high - snr_spread, snr_high] dB.
  """
  pos = electrode_positions(channels)
  # A fronto-central auditory topography (its place and spread vary), plus at times a
  # weaker second source of either sign.
  centre = np.array([rng.uniform(-0.4, 0.4), rng.uniform(-0.3, 0.5), 0.9])
  pattern = np.exp(-np.sum((pos - centre / np.linalg.norm(centre)) ** 2, 1) / rng.uniform(0.3, 0.8))
  if rng.random() < 0.5:
    other = rng.standard_normal(3) * np.array([0.6, 0.6, 0.3]) + np.array([0, 0, 0.6])
    pattern += rng.choice([-1, 1]) * rng.uniform(0.2, 0.5) * np.exp(
        -np.sum((pos - other / np.linalg.norm(other)) ** 2, 1) / rng.uniform(0.2, 0.6))
  pattern -= pattern.mean()
  pattern /= np.sqrt(np.mean(pattern ** 2)) + 1e-8
  # The canonical P1 / N1 / P2 with each latency within +-25% and amplitude 0.5-1.5x,
  # and at times a later component (N2 / P3-like) of either sign.
  t = np.arange(int(0.4 * eeg_rate)) / eeg_rate
  components = [(0.05, 0.015, 0.6), (0.10, 0.02, -1.0), (0.20, 0.04, 0.7)]
  if rng.random() < 0.5:
    components.append((rng.uniform(0.25, 0.33), 0.04, rng.choice([-1, 1]) * 0.4))
  trf, early = np.zeros_like(t), np.zeros_like(t)
  for lat, width, amp in components:
    lat *= rng.uniform(0.75, 1.25)
    component = amp * rng.uniform(0.5, 1.5) * np.exp(
        -0.5 * ((t - lat) / (width * rng.uniform(0.7, 1.4))) ** 2)
    trf += component
    if lat < 0.12:
      early += component
  norm = np.sqrt(np.sum(trf ** 2)) + 1e-8
  trf, early = trf / norm, early / norm
  base = make_subject(rng, channels, eeg_rate)
  return Subject(pattern=pattern, trf=trf, mixing=base.mixing, alpha_pattern=base.alpha_pattern,
                 trf_unattended=rng.uniform(0.1, 0.5) * early,
                 feature_weights=rng.dirichlet(np.ones(len(FEATURES))),
                 noise=NOISE_FAMILIES[int(rng.integers(len(NOISE_FAMILIES)))],
                 snr_db=float(rng.uniform(snr_high - snr_spread, snr_high)),
                 line_hz=float(rng.choice([50.0, 60.0])))


def stimulus_features(x: np.ndarray, sr: int, rate: int, length: int) -> np.ndarray:
  """``[len(FEATURES), length]`` z-scored features of audio ``x`` at the EEG rate."""
  env = envelope_at(x, sr, rate, length)
  onset = np.maximum(np.diff(env, prepend=env[0]), 0)
  out = {"broadband": env, "onset": (onset - onset.mean()) / (onset.std() + 1e-8)}
  for name, (lo, hi) in BANDS.items():
    sos = signal.butter(4, [lo, min(hi, 0.45 * sr)], "bandpass", fs=sr, output="sos")
    out[name] = envelope_at(signal.sosfilt(sos, x), sr, rate, length)
  return np.stack([out[k] for k in FEATURES])


def _noise(rng, subject: Subject, c: int, n: int, rate: int) -> np.ndarray:
  """The subject's noise family ``[C, n]``, unit std per channel before mixing."""
  kind = subject.noise
  if kind == "brown":
    x = np.cumsum(rng.standard_normal((c, n)), axis=1)
    x = signal.detrend(x, axis=1)
  elif kind == "ar1":
    x = signal.lfilter([1.0], [1.0, -rng.uniform(0.8, 0.97)], rng.standard_normal((c, n)), axis=1)
  else:
    x = _pink(rng, c, n)
  x = x / (x.std(axis=1, keepdims=True) + 1e-8)
  if kind == "pink_emg":           # broadband muscle bursts on a few channels
    burst = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
      a = int(rng.integers(0, max(n - rate // 4, 1)))
      burst[a:a + rate // 4] = 1.0
    sos = signal.butter(2, min(20, 0.45 * rate), "highpass", fs=rate, output="sos")
    emg = signal.sosfilt(sos, rng.standard_normal((c, n)), axis=1) * burst[None]
    x = x + 2.0 * emg * (rng.random((c, 1)) < 0.3)
  elif kind == "pink_blinks":      # frontal low-frequency blinks
    blinks = np.zeros(n)
    for _ in range(int(rng.integers(0, 3))):
      a = int(rng.integers(0, max(n - rate // 2, 1)))
      blinks[a:a + rate // 2] += np.hanning(rate // 2)[:len(blinks[a:a + rate // 2])]
    x = x + 3.0 * np.clip(subject.mixing[:, :1], 0, None) * blinks[None]
  return x


def _pink(rng, channels, n):
  spec = np.fft.rfft(rng.standard_normal((channels, n)), axis=1)
  f = np.arange(spec.shape[1])
  spec[:, 1:] /= np.sqrt(f[1:])
  spec[:, 0] = 0
  x = np.fft.irfft(spec, n=n, axis=1)
  return x / x.std(axis=1, keepdims=True)


def background(rng, subject: Subject, n: int, rate: int) -> np.ndarray:
  """Background EEG ``[C, n]`` with unit mean channel power."""
  c = subject.pattern.shape[0]
  t = np.arange(n) / rate
  pink = subject.mixing @ _pink(rng, c, n)
  alpha_env = np.clip(np.convolve(rng.standard_normal(n), np.hanning(rate // 2), "same"), 0, None)
  alpha = np.sin(2 * np.pi * rng.uniform(8, 12) * t + rng.uniform(0, 6.3)) * alpha_env
  alpha = subject.alpha_pattern[:, None] * alpha[None] / (alpha.std() + 1e-8)
  line = 0.3 * np.sin(2 * np.pi * 50 * t + rng.uniform(0, 6.3))[None] * rng.uniform(0.5, 1.5, (c, 1))
  sensor = 0.3 * rng.standard_normal((c, n))
  x = pink + 0.7 * alpha + line + sensor
  return x / np.sqrt(np.mean(x ** 2))


def family_background(rng, subject: Subject, n: int, rate: int) -> np.ndarray:
  """Background EEG ``[C, n]`` of the family model, unit mean channel power."""
  c = subject.pattern.shape[0]
  t = np.arange(n) / rate
  x = subject.mixing @ _noise(rng, subject, c, n, rate)
  alpha_env = np.clip(np.convolve(rng.standard_normal(n), np.hanning(rate // 2), "same"), 0, None)
  alpha = np.sin(2 * np.pi * rng.uniform(8, 12) * t + rng.uniform(0, 6.3)) * alpha_env
  x = x + rng.uniform(0.3, 1.0) * subject.alpha_pattern[:, None] * alpha[None] / (alpha.std() + 1e-8)
  if subject.line_hz < rate / 2:
    x = x + rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * subject.line_hz * t)[None] * rng.uniform(
        0.5, 1.5, (c, 1))
  x = x + 0.3 * rng.standard_normal((c, n))
  return x / np.sqrt(np.mean(x ** 2))


def family_drive(subject: Subject, feats_att, feats_unatt) -> np.ndarray:
  """The family model's source time course ``[T_eeg]``: the subject's stimulus feature
  of each talker (``[F, T_eeg]`` features) through its response functions."""
  n = feats_att.shape[1]
  f_att, f_unatt = subject.feature_weights @ feats_att, subject.feature_weights @ feats_unatt
  return (np.convolve(f_att, subject.trf)[:n]
          + np.convolve(f_unatt, subject.trf_unattended)[:n])


def classic_drive(subject: Subject, env_att, env_unatt) -> np.ndarray:
  """The classic model's source time course ``[T_eeg]`` from the talkers' envelopes."""
  n = env_att.shape[0]
  return (np.convolve(env_att, subject.trf)[:n]
          + UNATTENDED_GAIN * np.convolve(env_unatt, subject.trf)[:n])


def family_eeg_trial(rng, subject: Subject, feats_att, feats_unatt, rate: int) -> np.ndarray:
  """EEG ``[T_eeg, C]`` in volts from the talkers' features ``[F, T_eeg]`` (family model)."""
  n = feats_att.shape[1]
  response = subject.pattern[:, None] * family_drive(subject, feats_att, feats_unatt)[None]
  response /= np.sqrt(np.mean(response ** 2)) + 1e-8
  x = 10 ** (subject.snr_db / 20) * response + family_background(rng, subject, n, rate)
  x *= EEG_MICROVOLTS / x.std()
  return (x * 1e-6).T.astype(np.float32)


def eeg_trial(rng, subject: Subject, env_att, env_unatt, snr_db: float,
              rate: int) -> np.ndarray:
  """EEG ``[T_eeg, C]`` in volts for one trial (time-major, as stored)."""
  n = env_att.shape[0]
  response = subject.pattern[:, None] * classic_drive(subject, env_att, env_unatt)[None]
  response /= np.sqrt(np.mean(response ** 2)) + 1e-8
  noise = background(rng, subject, n, rate)
  x = 10 ** (snr_db / 20) * response + noise
  x *= EEG_MICROVOLTS / x.std()
  return (x * 1e-6).T.astype(np.float32)


# ---------------------------------------------------------------- writing ----

def recorded_pair(rng, root: str, split: str, n: int, sample_rate: int):
  """Two ``[n]`` excerpts at unit RMS of two different people's voices in ``split``."""
  from neurocodec_jax.data import speech  # pylint: disable=g-import-not-at-top
  corpus = speech.open_corpus(root)
  if corpus.sample_rate != sample_rate:
    raise ValueError(f"{root}: speech at {corpus.sample_rate} Hz, the dataset at "
                     f"{sample_rate} Hz.")
  voices = corpus.voices(split)
  first = voices[int(rng.integers(len(voices)))]
  others = [v for v in voices if corpus.talker(v) != corpus.talker(first)]
  if not others:
    raise ValueError(f"{root}: the {split} split has one talker's voices only "
                     f"({voices}); trials need two people.")
  second = others[int(rng.integers(len(others)))]
  out = []
  for voice in (first, second):
    x = corpus.segment(rng, split, voice, n).astype(np.float64)
    out.append(x / (np.sqrt(np.mean(x ** 2)) + 1e-8))
  return out


def make_trial(rng, spec: SyntheticSpec, subject: Subject, split: str = "train"):
  """Returns noisy, clean (attended), unattended ``[T]`` and EEG ``[T_eeg, C]``."""
  n = spec.audio_length
  if spec.talkers == "synthetic":
    a, b = talker(rng, n, spec.sample_rate), talker(rng, n, spec.sample_rate)
  else:
    a, b = recorded_pair(rng, spec.talkers, split, n, spec.sample_rate)
  gain = 10 ** (rng.uniform(-spec.level_db, spec.level_db) / 20)
  attended, unattended = a, gain * b        # a is attended; a, b are exchangeable
  mix = attended + unattended
  peak = np.abs(mix).max() / 0.9
  attended, unattended, mix = attended / peak, unattended / peak, mix / peak
  env_a = envelope_at(attended, spec.sample_rate, spec.eeg_rate, spec.eeg_length)
  env_u = envelope_at(unattended, spec.sample_rate, spec.eeg_rate, spec.eeg_length)
  if spec.eeg_model == "family":
    feats = [stimulus_features(x, spec.sample_rate, spec.eeg_rate, spec.eeg_length)
             for x in (attended, unattended)]
    eeg = family_eeg_trial(rng, subject, *feats, spec.eeg_rate)
  elif spec.eeg_model == "classic":
    eeg = eeg_trial(rng, subject, env_a, env_u, spec.eeg_snr_db, spec.eeg_rate)
  else:
    raise ValueError(f"synthetic eeg_model must be 'classic' or 'family', got {spec.eeg_model!r}.")
  if spec.cue == "oracle":
    eeg = (subject.pattern[:, None] * env_a[None] * EEG_MICROVOLTS * 1e-6).T.astype(np.float32)
  elif spec.cue != "eeg":
    raise ValueError(f"synthetic cue must be 'eeg' or 'oracle', got {spec.cue!r}.")
  return mix, attended, unattended, eeg


def _write(path, stem, data):
  with h5py.File(path, "w") as f:
    f.create_dataset(f"{stem}=", data=data)


def subject_pools(spec: SyntheticSpec) -> dict[str, list[int]]:
  """The subject ids of each split. "within": all of them everywhere. "held_out": a
  quarter of the subjects (at least one) for test, as many for val, the rest for
  training, so val and test subjects are never trained on."""
  ids = list(range(spec.subjects))
  if spec.subject_split == "within":
    return {s: ids for s in SPLITS}
  if spec.subject_split != "held_out":
    raise ValueError(f"synthetic subject_split must be 'within' or 'held_out', got "
                     f"{spec.subject_split!r}.")
  k = max(1, spec.subjects // 4)
  if spec.subjects < 2 * k + 1:
    raise ValueError(f"subject_split='held_out' needs at least 3 subjects, got {spec.subjects}.")
  return dict(train=ids[:-2 * k], val=ids[-2 * k:-k], test=ids[-k:])


def _trials(spec: SyntheticSpec, subjects: list[Subject], split_id: int,
            start: int, stop: int) -> dict[str, np.ndarray]:
  """Trials ``start..stop-1`` of a split: each a pure function of (seed, split, index)."""
  t, te, c, n = spec.audio_length, spec.eeg_length, spec.eeg_channels, stop - start
  arrays = dict(noisy=np.zeros((n, t, 1), np.float32),
                clean=np.zeros((n, t, 1), np.float32),
                unattended=np.zeros((n, t, 1), np.float32),
                eegs=np.zeros((n, te, c), np.float32),
                subjects=np.zeros((n,), np.int32))
  pool = subject_pools(spec)[SPLITS[split_id]]
  for j, i in enumerate(range(start, stop)):
    rng = np.random.default_rng([spec.seed, split_id, i])
    s = pool[i % len(pool)]
    mix, att, unatt, eeg = make_trial(rng, spec, subjects[s], SPLITS[split_id])
    arrays["noisy"][j, :, 0], arrays["clean"][j, :, 0] = mix, att
    arrays["unattended"][j, :, 0], arrays["eegs"][j] = unatt, eeg
    arrays["subjects"][j] = s
  return arrays


def default_workers() -> int:
  """Generator processes: one per core this process may use."""
  return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else (os.cpu_count() or 1))


def write_split(out_dir: str, split: str, n: int, spec: SyntheticSpec,
                subjects: list[Subject], split_id: int, progress: bool = True,
                workers: int = 1, chunk: int = 128):
  """Writes ``out_dir/<split>/{noisy,clean,eegs,unattended,subjects}_<split>.h5``.

  ``workers`` > 1 generates chunks of ``chunk`` trials in that many processes
  (spawned, not forked: the caller may hold JAX's threads); every trial is a pure
  function of its ids, so the files are identical for any ``workers``.
  """
  bounds = [(a, min(a + chunk, n)) for a in range(0, n, chunk)] or [(0, 0)]
  parts = []
  with tqdm(total=n, desc=f"synthetic {split}", disable=not progress, unit="trial") as bar:
    if workers > 1 and len(bounds) > 1:
      ctx = multiprocessing.get_context("spawn")
      with concurrent.futures.ProcessPoolExecutor(min(workers, len(bounds)),
                                                  mp_context=ctx) as pool:
        futures = [pool.submit(_trials, spec, subjects, split_id, a, b) for a, b in bounds]
        for (a, b), fut in zip(bounds, futures):
          parts.append(fut.result())
          bar.update(b - a)
    else:
      for a, b in bounds:
        parts.append(_trials(spec, subjects, split_id, a, b))
        bar.update(b - a)
  os.makedirs(os.path.join(out_dir, split), exist_ok=True)
  for stem in ("noisy", "clean", "unattended", "eegs", "subjects"):
    data = np.concatenate([p[stem] for p in parts])
    _write(os.path.join(out_dir, split, f"{stem}_{split}.h5"), f"{stem}_{split}", data)


def make_subjects(spec: SyntheticSpec) -> list[Subject]:
  """The dataset's subjects, a pure function of ``spec`` (its seed, model, sizes)."""
  rng = np.random.default_rng([spec.seed, 999])
  if spec.eeg_model == "family":
    return [make_family_subject(rng, spec.eeg_channels, spec.eeg_rate, spec.eeg_snr_db,
                                spec.snr_spread_db) for _ in range(spec.subjects)]
  return [make_subject(rng, spec.eeg_channels, spec.eeg_rate) for _ in range(spec.subjects)]


def generate(out: str, spec: SyntheticSpec, overwrite: bool = False,
             progress: bool = True, workers: int | None = None) -> str:
  """Generates all splits into ``out`` atomically (temp dir, then rename).

  ``workers``: generator processes (default: one per usable core); the output does
  not depend on it.
  """
  workers = default_workers() if workers is None else workers
  out = os.path.abspath(out)
  with atomic_directory(out, overwrite) as tmp:
    subjects = make_subjects(spec)
    for split_id, (split, n) in enumerate(zip(SPLITS, (spec.n_train, spec.n_val, spec.n_test))):
      write_split(tmp, split, n, spec, subjects, split_id, progress, workers)
    pools = subject_pools(spec)
    manifest = dict(generator="neurocodec_jax.data.synthetic",
                    protocol=dict(name="subject-held-out" if spec.subject_split == "held_out"
                                  else "within-subject", subjects=pools),
                    unattended_gain=UNATTENDED_GAIN, eeg_microvolts=EEG_MICROVOLTS,
                    audio_length=spec.audio_length, eeg_length=spec.eeg_length,
                    **dataclasses.asdict(spec))
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=2)
    with open(os.path.join(tmp, "README"), "w") as f:
      f.write("Synthetic auditory-attention dataset written by "
              "neurocodec_jax.data.synthetic (see its docstring for the model).\n"
              "Settings: manifest.json. Audio (N, T, 1) float32 at "
              f"{spec.sample_rate} Hz; EEG (N, T_eeg, C) float32 in volts at "
              f"{spec.eeg_rate} Hz; subjects (N,) int32.\n")
  return out


def spec_from_config(config) -> SyntheticSpec:
  """The synthetic spec matching a NeuroCodec config (demo preset and tests)."""
  arch = config.codec.arch
  s = config.synthetic
  return SyntheticSpec(
      sample_rate=arch.sample_rate, seconds=config.data.segment_seconds,
      hop_length=codec.hop_length(arch), eeg_rate=config.data.eeg_rate,
      eeg_channels=config.eeg_channels, subjects=s.subjects, n_train=s.n_train,
      n_val=s.n_val, n_test=s.n_test, eeg_snr_db=s.eeg_snr_db, seed=s.seed,
      talkers=s.talkers, eeg_model=s.eeg_model, snr_spread_db=s.snr_spread_db,
      subject_split=s.subject_split)


def mismatch(root: str, spec: SyntheticSpec) -> str | None:
  """Which generator setting of the dataset at ``root`` differs from ``spec``
  (``"field 'n_train' is 4096, expected 12288"``), or None when all agree."""
  path = os.path.join(root, "manifest.json")
  if not os.path.exists(path):
    return "no manifest.json (not a synthetic dataset?)"
  with open(path) as f:
    manifest = json.load(f)
  for field in dataclasses.fields(SyntheticSpec):
    want = getattr(spec, field.name)
    # A field added since the dataset was written: it was generated with the default.
    if manifest.get(field.name, field.default) != want:
      return f"field {field.name!r} is {manifest.get(field.name)!r}, expected {want!r}"
  return None


def summarize(root: str) -> str:
  """A human-readable summary of a generated (or any) dataset in the layout."""
  lines = [f"dataset at {root}"]
  for split in ("train", "val", "test"):
    d = os.path.join(root, split)
    if not os.path.isdir(d):
      continue
    parts = []
    for name in sorted(n for n in os.listdir(d) if n.endswith(".h5")):  # not data_check_*.json
      with h5py.File(os.path.join(d, name), "r") as f:
        for k, v in f.items():
          parts.append(f"{name}[{k}] {v.shape} {v.dtype}")
    lines.append(f"  {split}: " + "; ".join(parts))
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", required=True, help="output folder (created atomically)")
  p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
  for field in dataclasses.fields(SyntheticSpec):
    p.add_argument(f"--{field.name}", type={"int": int, "float": float, "str": str}[field.type],
                   default=None)
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--workers", type=int, default=None,
                 help="generator processes (default: one per core; same files for any)")
  args = p.parse_args(argv)
  spec = dataclasses.replace(PRESETS[args.preset], **{
      f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticSpec)
      if getattr(args, f.name) is not None})
  generate(args.out, spec, overwrite=args.overwrite, workers=args.workers)
  print(summarize(args.out))


if __name__ == "__main__":
  sys.exit(main())
