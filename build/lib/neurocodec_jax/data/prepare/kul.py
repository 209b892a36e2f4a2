"""KU Leuven AAD dataset (Das, Francart & Bertrand, Zenodo 10.5281/zenodo.4004271).

Source layout (the Zenodo release)::

  <src>/S1.mat ... S16.mat      one MATLAB v5 file per subject, variable ``trials``
  <src>/stimuli/*.wav           part{p}_track{t}_{dry,hrtf}.wav (and rep_ versions)

``trials`` is a cell array of structs, one per trial (20 per subject: 8 of
experiments 1-2 and 12 repetitions of experiment 3). Fields used, as the dataset's
README documents them:

  RawData.EegData         EEG, samples x channels (64, BioSemi order), 128 Hz,
                          high-passed at 0.5 Hz by the authors
  FileHeader.SampleRate   sampling rate of the saved EEG (128)
  attended_ear            'L' or 'R'
  stimuli                 {left-ear wav, right-ear wav} as presented
  attended_track          1 or 2, the attended story track (cross-checked)
  TrialID, condition, experiment, part, repetition   (provenance; ``repetition``
                          selects the main trials)

Verified against:

- the dataset's README (``README.txt`` of the Zenodo record, mirrored in
  github.com/lagooneration/Auditory-Attention-Decoding ``README.txt.txt``): the
  fields above and their meanings ("stimuli{1} and stimuli{2} indicating the name of
  audio files presented in the left ear and the right ear"; "attended_track ... '1'
  for track 1"; "repetition : binary variable"); 20 trials per subject (4 + 4 + 12
  repetitions of the first 2 minutes of experiment 1's parts); wavs named
  ``part{part}_track{track}_{condition}.wav``, "envelopes were extracted only from
  part{part number}_track{tracknumber}_dry.wav"; "high-pass filtered (0.5 Hz cut
  off) and downsampled ... to 128 Hz"; truncate the audio to the EEG.
- the authors' ``preprocess_data.m`` (Neetha Das; public copies in the code index):
  ``trial.stimuli{1}(1:stimname_len)`` with 16 characters for a repetition, else 12
  ("rep_partX_trackX or partX_trackX"), plus ``_dry``: the dry file of each named
  stimulus, for HRTF trials too; envelopes truncated to ``length(EegData)``.
- TorchEEG's loader (torcheeg/datasets/module/auditory_attention/kul.py):
  ``trials`` in ``S<n>.mat``, the first 8 trials as the main ones, ``EegData``
  [samples, 64], channel 48 = Cz, i.e. BioSemi-64 order.

Not verified: the EEG's unit (the README states none; the layout's unit check
decides) and the stimulus wavs' sample rate (read from each file).

What becomes a :class:`Recording`: the EEG preprocessed (``signals``); the attended
talker = the dry stimulus presented to ``attended_ear``, the unattended one the other
ear's; both resampled to the codec rate, cut to the span where EEG and both stories
run (the README: "refer to the length of the EEG recordings to truncate the ends of
the corresponding audio data"), each scaled to the same RMS (the listener heard both
at 60 dBA); the mixture is their sum.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Iterator

import numpy as np

from neurocodec_jax.data.prepare import files, signals
from neurocodec_jax.data.prepare.protocols import natural_key
from neurocodec_jax.data.prepare.recording import DatasetError, Recording

SOURCE = dict(name="Auditory Attention Detection Dataset KULeuven", version="2.0",
              record="Zenodo 4004271", doi="10.5281/zenodo.4004271", url="https://zenodo.org/records/4004271")
PREPROCESSING = ("EEG: the release's 128 Hz EEG (0.5 Hz high-pass by the authors), "
                 "average reference and 1-32 Hz band-pass (or as in 'eeg' when the --eeg_* "
                 "options are given); audio: the dry "
                 "stimulus of each ear resampled to the codec rate, truncated to the EEG "
                 "and the shorter story, both talkers at equal RMS, mixture = their sum.")
EEG_RATE = 128                 # FileHeader.SampleRate of the release
CHANNELS = 64
# Both talkers' RMS after scaling (-26 dBFS: speech level with headroom for the sum).
TALKER_RMS = 0.05
PEAK_LIMIT = 0.99
TRIALS = ("main", "all")
_SUBJECT_FILE = re.compile(r"^S(\d+)\.mat$")
_STIMULUS = re.compile(r"^(?P<stem>.+?)_?(?P<condition>hrtf|dry)\.wav$", re.IGNORECASE)


def add_arguments(group):
  group.add_argument("--kul_trials", dest="trials", choices=TRIALS, default="main",
                     help="main: the 8 trials of experiments 1-2 (each story part once); "
                          "all: also the 12 repetitions of experiment 3")
  group.add_argument("--kul_stimuli", dest="stimuli_dir", default=None,
                     help="folder of the stimulus wavs (default <src>/stimuli)")


@functools.lru_cache(maxsize=1)
def channel_names() -> tuple[str, ...]:
  """BioSemi-64 names in the release's channel order (MNE's ``biosemi64`` montage)."""
  import mne  # pylint: disable=g-import-not-at-top
  return tuple(mne.channels.make_standard_montage("biosemi64").ch_names)


def list_subjects(src: str, **_) -> list[str]:
  """``S1``, ``S2``, ... for the ``S<n>.mat`` files in ``src``, in natural order."""
  names = [n[:-4] for n in os.listdir(src) if _SUBJECT_FILE.match(n)]
  if not names:
    raise DatasetError(f"{src}: no S<n>.mat subject files; expected the KU Leuven "
                       f"release (S1.mat ... S16.mat and stimuli/).")
  return sorted(names, key=natural_key)


def dry_name(presented: str, where: str) -> str:
  """``part1_track2_hrtf.wav`` -> ``part1_track2_dry.wav`` (dry names map to themselves)."""
  m = _STIMULUS.match(os.path.basename(presented))
  if not m:
    raise DatasetError(f"{where}: stimulus {presented!r} is not named "
                       f"part<p>_track<t>_<hrtf|dry>.wav.")
  return f"{m['stem']}_dry.wav"


def stimulus_id(dry: str) -> str:
  """The story part a dry file holds: ``rep_part1_track2_dry.wav`` -> ``part1_track2``
  (a repetition replays the start of the same part)."""
  stem = dry[:-len("_dry.wav")]
  return stem[len("rep_"):] if stem.startswith("rep_") else stem


def _stimulus(path: str, sample_rate: int, where: str) -> tuple[np.ndarray, int]:
  """``(audio at sample_rate, the file's rate)``; ``where`` names the asking field."""
  if not os.path.isfile(path):
    raise DatasetError(f"{where}: stimulus file {path} not found.")
  return _load_stimulus(path, sample_rate)


@functools.lru_cache(maxsize=8)     # the same stories recur across trials and subjects
def _load_stimulus(path: str, sample_rate: int) -> tuple[np.ndarray, int]:
  audio, rate = files.read_wav(path, path)
  return signals.resample_audio(audio, rate, sample_rate), rate


def _is_repetition(trial: dict, where: str) -> bool:
  if "repetition" in trial:
    return bool(files.scalar(trial["repetition"], "repetition", where))
  if "experiment" in trial:
    return files.scalar(trial["experiment"], "experiment", where) == 3
  return False


def iter_recordings(src: str, *, sample_rate: int, eeg_rate: int,
                    eeg: signals.EEGSettings | None = None,
                    subjects=None, trials: str = "main", stimuli_dir: str | None = None,
                    **_) -> Iterator[Recording]:
  """The KUL trials of ``subjects`` (default all) as Recordings, subject by subject
  (``eeg`` None: :class:`~signals.EEGSettings`' defaults, 1-32 Hz, average reference)."""
  eeg = eeg or signals.EEGSettings()
  if trials not in TRIALS:
    raise ValueError(f"kul trials must be one of {TRIALS}, got {trials!r}.")
  stimuli_dir = stimuli_dir or os.path.join(src, "stimuli")
  names = list_subjects(src)
  for subject in names if subjects is None else [s for s in names if s in set(subjects)]:
    path = os.path.join(src, f"{subject}.mat")
    cells = files.as_list(files.read_mat(path, ["trials"])["trials"])
    for i, trial in enumerate(cells):
      where = f"{path}: trials{{{i + 1}}}"
      if not isinstance(trial, dict):
        raise DatasetError(f"{where}: is {type(trial).__name__}, expected a struct.")
      if trials == "main" and _is_repetition(trial, where):
        continue
      yield _recording(trial, subject, i, where, path, stimuli_dir, sample_rate,
                       eeg_rate, eeg)


def _recording(trial: dict, subject: str, i: int, where: str, path: str,
               stimuli_dir: str, sample_rate: int, eeg_rate: int,
               settings: signals.EEGSettings) -> Recording:
  raw = np.asarray(files.field(trial, "RawData.EegData", where))
  if raw.ndim != 2 or raw.shape[1] != CHANNELS or raw.dtype.kind not in "fiu":
    raise DatasetError(f"{where}: field 'RawData.EegData' is {raw.dtype} {raw.shape}, "
                       f"expected numbers of shape [samples, {CHANNELS}].")
  rate = files.scalar(files.field(trial, "FileHeader.SampleRate", where),
                      "FileHeader.SampleRate", where)
  if rate != EEG_RATE:
    raise DatasetError(f"{where}: field 'FileHeader.SampleRate' is {rate:g}, expected "
                       f"{EEG_RATE} (the KU Leuven release is at {EEG_RATE} Hz).")
  ear = files.text(files.field(trial, "attended_ear", where), "attended_ear", where)
  if ear not in ("L", "R"):
    raise DatasetError(f"{where}: field 'attended_ear' is {ear!r}, expected 'L' or 'R'.")
  presented = files.as_list(files.field(trial, "stimuli", where))
  if len(presented) != 2:
    raise DatasetError(f"{where}: field 'stimuli' holds {len(presented)} names, expected "
                       f"2 (left ear, right ear).")
  presented = [files.text(p, f"stimuli{{{k + 1}}}", where) for k, p in enumerate(presented)]
  dry = [dry_name(p, f"{where}.stimuli{{{k + 1}}}") for k, p in enumerate(presented)]
  a, u = (0, 1) if ear == "L" else (1, 0)
  track = None
  if "attended_track" in trial:
    track = int(files.scalar(trial["attended_track"], "attended_track", where))
    if f"track{track}" not in dry[a]:
      raise DatasetError(
          f"{where}: field 'attended_track' is {track}, but 'attended_ear' {ear!r} names "
          f"stimuli{{{a + 1}}} = {presented[a]!r}; expected the attended ear's file to be "
          f"track {track}.")
  audio = []
  for k in (a, u):
    audio.append(_stimulus(os.path.join(stimuli_dir, dry[k]), sample_rate,
                           f"{where}.stimuli{{{k + 1}}} ({presented[k]!r} -> dry {dry[k]!r})"))
  eeg = signals.preprocess_eeg(raw, rate, eeg_rate=eeg_rate, settings=settings,
                               where=f"{where}.RawData.EegData",
                               channel_names=channel_names())
  # Keep the span where the EEG and both stories run (stories differ in length).
  n_eeg = min(eeg.shape[0], *(len(x) * eeg_rate // sample_rate for x, _ in audio))
  n_audio = round(n_eeg * sample_rate / eeg_rate)
  att, unatt = (x[:n_audio].astype(np.float64) for x, _ in audio)
  gains = []
  for x in (att, unatt):
    rms = float(np.sqrt(np.mean(x ** 2)))
    if rms == 0:
      raise DatasetError(f"{where}: a stimulus is silent over the trial ({dry}).")
    gains.append(TALKER_RMS / rms)
  att, unatt = att * gains[0], unatt * gains[1]
  noisy = att + unatt
  peak = float(np.abs(noisy).max())
  limit = min(1.0, PEAK_LIMIT / peak)
  provenance = dict(
      file=os.path.basename(path), cell=i + 1, attended_ear=ear, attended_track=track,
      presented=presented, dry=[dry[a], dry[u]],
      wav_rates=[audio[0][1], audio[1][1]], gains=[g * limit for g in gains],
      eeg_seconds=raw.shape[0] / rate, kept_seconds=n_eeg / eeg_rate)
  for key in ("TrialID", "condition", "experiment", "part", "repetition"):
    if key in trial:
      value = trial[key]
      provenance[key] = value if isinstance(value, str) else files.scalar(value, key, where)
  trial_id = provenance.get("TrialID")
  return Recording(
      subject=subject, trial=str(int(trial_id)) if trial_id is not None else str(i + 1),
      eeg=np.ascontiguousarray(eeg[:n_eeg]),
      attended=(att * limit).astype(np.float32), unattended=(unatt * limit).astype(np.float32),
      noisy=(noisy * limit).astype(np.float32),
      stimuli=(stimulus_id(dry[a]), stimulus_id(dry[u])), provenance=provenance)
