"""Cocktail Party dataset reader (Broderick et al. 2018; Dryad doi:10.5061/dryad.070jc, CC0).

33 subjects each heard up to 30 one-minute runs of two audiobooks at once, one per ear:
*Twenty Thousand Leagues Under the Sea* ("20000") and *Journey to the Centre of the
Earth* ("Journey"), attending to the same book in every run. Source layout (the
stimulus folder is searched recursively, so the Dryad ``Stimuli`` tree and the
original NeuroCodec's ``Stimuli/Full_Audio/{20000,Journey}`` both work)::

  SRC/EEG/Subject<s>/Subject<s>_Run<r>.mat   per run, MATLAB v5 or v7.3:
      eegData   128 BioSemi channels (A1..D32) x time, either orientation
      mastoids  2 (left, right) x time, the same orientation and length
      fs        128
  SRC/Stimuli/**/20000_<r>.wav, SRC/Stimuli/**/Journey_<r>.wav   run r's two books

Verified against (what each source says, and what it does not):

- the Dryad README's Cocktail Party section, quoted verbatim in
  github.com/kevinprinsloo/Semantic_Dissimilarity_Project ``README.md`` (the Dryad
  page itself is not in the stored corpora): ``eegData`` "Channels (128) x Time
  Points", ``mastoids`` "Channels (Left=1 Right=2) x Time Points", ``fs``; "EEG data
  is unfiltered, unreferenced and sampled at 128Hz", time-locked to the onset of
  the speech; no unit is stated. Subjects 1-17 attend "20000" (left ear), 18-33
  "Journey" (right ear).
- the loaders disagree with the README on the orientation: the original's
  ``EEG_preprocessing.m`` (``eegData=[eegData,mastoids]``, a horizontal
  concatenation), mindaffectBCI's ``load_cocktail.py`` (``X0.shape[0]`` samples) and
  CNSP's ``eeg2cnd_LalorNatSpeech.m`` (the same Dryad record's Natural Speech folder,
  same fields, ``eeg.data{run} = eegData`` as time x channels) all read time x
  channels; yet a public Cocktail Party loader's FIXME records the error "operands
  could not be broadcast together with shapes (128, 7681) (2, 1)" from
  ``eegData - mean(mastoids, axis=1)``, i.e. at least one file stored channels x
  time. So both orientations are accepted here: the axis of length 128 (2 for
  ``mastoids``) is the channel axis.
- runs: 30 per subject in the original's scripts (``for i=1:30``), which also
  "detect which runs are missing for each subject"; a public loader's log shows
  ``Subject6_Run8.mat`` absent. Every ``Subject<s>_Run<r>.mat`` present is read.
- stimuli: the README excerpt names no stimulus files. Public loaders read the
  envelopes ``Stimuli/Envelopes/{20000,Journey}/<book>_<r>_env.mat`` (field
  ``envelope``); the wav names ``<book>_<r>.wav`` are those of the original's
  ``data_processing/dataset_generate/preprocessed_to_h5_new.py``
  (``Stimuli/Full_Audio/20000/20000_{n}.wav``). Whether the Dryad archive ships the
  wavs was not confirmed from any stored source: a missing wav is an error naming it.
- units: not stated by the README. BioSemi exports are conventionally microvolts
  and the original's bad-channel step thresholds at +-100 (EEGLAB's microvolts);
  the layout's unit check (``data.eeg_units``) decides from the data at training
  time, so nothing here depends on the unit.

Attended book per subject (:data:`ATTENDED_RULES`), a documented conflict:

- ``readme`` (default, also ``original``): the Dryad README's rule above, which the
  original NeuroCodec follows (``clean_sound = twenty if subject_i <= 17 else
  journey``).
- ``lalor-note``: a per-subject list given as a correction ("So contrary to what
  the dryad read me file says the following subjects (as indexed by their number on
  dryad) listened to twenty and journey") in the README of
  github.com/kevinprinsloo/Semantic_Dissimilarity_Project, a project of the group
  that recorded the data (its introduction: "our group showed ..."): "20000" for
  subjects 3 6 7 8 9 10 13 15 17 18 19 21 24 25 27 31 32, "Journey" for 1 2 4 5 11 12
  14 16 20 22 23 26 28 29 30 33. mindaffectBCI's loader
  (github.com/mindaffect/pymindaffectBCI,
  ``mindaffectBCI/decoder/offline/load_cocktail.py``, ``subids_attended_book``) lists
  the same assignment, without a source. It differs from the README for 16 of the
  33 subjects (1 2 4 5 11 12 14 16 18 19 21 24 25 27 31 32).

Neither can be settled without the recordings; the decisive check is the data
itself (a linear envelope decoder per subject reconstructs the attended book's
envelope better). Any other table: a CSV of ``subject,story`` rows.

Field names are those of the original's MATLAB step (``eegData=[eegData,mastoids]``
in ``data_processing/EEG_preprocessing/EEG_preprocessing.m``) and of mindaffectBCI's
public loader (``data['eegData']``, ``data['fs']``).

Preprocessing follows the original (EEGLAB script + h5 builder), per subject (the
band and the reference give way to the framework's EEG settings when those are
given, see :func:`eeg_settings`):

1. ``[eegData, mastoids]`` (130 channels), band-pass 0.1-45 Hz with MNE's zero-phase
   FIR, whose automatic design reproduces EEGLAB's ``pop_eegfiltnew`` heuristics.
   Each run is filtered on its own: the original filtered the runs merged end to
   end, which smears each junction's step into both runs.
2. Bad channels interpolated by spherical splines on the ``biosemi128`` montage
   (``interpolate_bads``), from the original's per-subject lists (1-based, kept
   in :data:`ORIGINAL_BAD_CHANNELS`) and/or an automatic flat/noisy detection.
3. Re-referenced to the mean of the mastoids (``pop_reref(EEG, {'M1' 'M2'})``); a
   flat mastoid is left out of the mean. The mastoids are then dropped (128 out).
   Not reproduced: the original's manual ICA component rejection (per-subject
   component lists of an ICA that cannot be re-run identically).
4. Audio: both books of the run, each RMS-normalised over the run (the original's
   ``rms_normalize``), the mixture their sum (0 dB), resampled to ``sample_rate``.
   The original then divided each split's audio by the train split's peak; here
   the three signals get one common gain instead (each talker at RMS 0.05, lowered
   if the mixture would clip), so ``noisy == attended + unattended`` holds exactly.
   The original also cut audio into 87552-sample (1.985 s) pieces beside 2 s EEG
   pieces, drifting by 15 ms per piece; here EEG and audio cover the same span.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
from typing import Collection, Iterator, Sequence

import numpy as np

from neurocodec_jax.data.prepare.recording import DatasetError, Recording

SOURCE = dict(name="Cocktail Party (Broderick et al. 2018, Current Biology 28:803)",
              doi="10.5061/dryad.070jc", url="https://doi.org/10.5061/dryad.070jc",
              record="Dryad doi:10.5061/dryad.070jc",
              # The DOI names the Dryad dataset, not one of its versions, and no
              # source read states a version label: none is invented.
              version="unversioned", license="CC0")
PREPROCESSING = (
    "EEG (eegData + mastoids, 128 Hz): 0.1-45 Hz zero-phase FIR per run, bad channels "
    "(the original's per-subject lists and flat/noisy detection) interpolated by "
    "spherical splines on biosemi128, mastoid reference, resampled to the EEG rate; "
    "the band and reference follow the 'eeg' settings only when changed from their "
    "defaults. Audio: both books of the run, each at RMS 0.05 (lowered together if the "
    "sum would pass 0.99), mixture = their sum, resampled to the codec rate, cut to "
    "the shorter of EEG and audio.")
PUBLISHED_EEG_RATE = 128
# Each talker's RMS after scaling (-26 dBFS, as the KUL reader): speech level with
# headroom for the sum; PEAK_LIMIT caps the mixture's peak.
TALKER_RMS = 0.05
PEAK_LIMIT = 0.99
N_CHANNELS = 128
STORIES = ("20000", "Journey")

# The original's bad-channel lists (EEG_preprocessing.m, step 5), 1-based columns of
# eegData. Subjects not listed had none recorded.
ORIGINAL_BAD_CHANNELS = {
    1: [48], 2: [1, 2, 5, 48, 71], 5: [44, 49, 125], 8: [14], 13: [48], 15: [],
    17: [32, 34, 48], 19: [46, 48], 20: [], 21: [1, 2, 3, 5, 48, 71],
    22: [65, 102, 110], 23: [48], 24: [1, 2, 5, 9, 31, 32, 37, 48, 63, 71, 78],
    25: [2, 23, 26, 27, 28, 48], 26: [14, 17, 48, 84, 102, 104],
    28: [11, 14, 16, 21, 22, 26, 29, 38, 40, 48, 50, 65, 67, 100],
    29: [39, 40, 46, 47, 71, 80, 96, 97], 30: [2, 43, 48, 54, 66, 70, 71, 127],
    31: [29, 48, 65, 66, 75, 84, 87, 97, 120, 121, 122],
}

BAD_CHANNEL_MODES = ("both", "original", "auto", "none")
_SUBJECT_RE = re.compile(r"^Subject(\d+)$")
_RUN_RE = re.compile(r"^Subject(\d+)_Run(\d+)\.mat$")


# ---------------------------------------------------------------------------
# Shared helpers (the DTU reader uses them too)
# ---------------------------------------------------------------------------

def read_mat(path: str, variables: Sequence[str] | None = None) -> dict:
  """Reads a MATLAB v5 or v7.3 file (pymatreader: structs -> dicts, cells -> lists)."""
  from pymatreader import read_mat as _read_mat
  try:
    return _read_mat(path, variable_names=list(variables) if variables else None)
  except Exception as e:  # scipy/h5py errors name neither the file nor the cause
    raise DatasetError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e}).") from e


def field(d: dict, name: str, path: str, where: str = "") -> object:
  """``d[name]`` or a DatasetError naming the file and the (dotted) field."""
  if not isinstance(d, dict) or name not in d:
    have = sorted(k for k in d if not k.startswith("__")) if isinstance(d, dict) else type(d).__name__
    raise DatasetError(f"{path}: missing field '{where}{name}' (found {have}).")
  return d[name]


def matrix(value: object, path: str, name: str, columns: int | None = None) -> np.ndarray:
  """A finite float64 ``[time, columns]`` matrix, else a DatasetError."""
  a = np.asarray(value)
  if a.ndim == 1 and columns == 1:
    a = a[:, None]
  if a.ndim != 2 or not np.issubdtype(a.dtype, np.number):
    raise DatasetError(f"{path}: field '{name}' is {a.dtype} {a.shape}, expected a "
                       f"numeric [time, {columns or 'channels'}] matrix.")
  if columns is not None and a.shape[1] != columns:
    raise DatasetError(f"{path}: field '{name}' has {a.shape[1]} columns, expected "
                       f"{columns} ([time, {columns}]).")
  a = a.astype(np.float64)
  if not np.isfinite(a).all():
    raise DatasetError(f"{path}: field '{name}' has non-finite values.")
  return a


def scalar(value: object, path: str, name: str) -> float:
  a = np.asarray(value)
  if a.size != 1 or not np.issubdtype(a.dtype, np.number):
    raise DatasetError(f"{path}: field '{name}' is {a.dtype} {a.shape}, expected a number.")
  return float(a.reshape(()))


def resample(x: np.ndarray, rate_in: float, rate_out: float, axis: int = 0) -> np.ndarray:
  """Polyphase resampling (MNE) from ``rate_in`` to ``rate_out`` along ``axis``."""
  if rate_in == rate_out:
    return x
  import mne
  return mne.filter.resample(x, up=float(rate_out), down=float(rate_in), axis=axis,
                             method="polyphase", verbose="error")


def bandpass(eeg: np.ndarray, rate: float, l_freq: float | None,
             h_freq: float | None) -> np.ndarray:
  """Zero-phase FIR band-pass of ``eeg [time, channels]`` (MNE's automatic design,
  EEGLAB's ``pop_eegfiltnew`` heuristics); a None edge is not filtered."""
  if h_freq is not None and h_freq >= rate / 2:
    h_freq = None  # e.g. 45 Hz on 64 Hz EEG: nothing to remove
  if l_freq is None and h_freq is None:
    return eeg
  import mne
  return mne.filter.filter_data(eeg.T, rate, l_freq, h_freq, method="fir", phase="zero",
                                fir_design="firwin", pad="reflect_limited",
                                verbose="error").T


RECIPE = (0.1, 45.0, "mastoids")  # the original's band-pass and reference


def eeg_settings(eeg: object | None) -> tuple[float | None, float | None, str]:
  """``(l_freq, h_freq, reference)``: the framework's ``EEGSettings`` when given
  (e.g. on the command line), else (None) :data:`RECIPE`."""
  if eeg is None:
    return RECIPE
  return eeg.l_freq, eeg.h_freq, eeg.reference


def detect_bad(eeg: np.ndarray, z: float = 5.0) -> list[int]:
  """0-based channels of ``eeg [time, channels]`` that are flat or far noisier than
  the rest: std below 1% of the median, or a robust z-score of log-std above ``z``."""
  sd = eeg.std(axis=0)
  med = np.median(sd)
  if med <= 0:
    return list(range(eeg.shape[1]))
  logsd = np.log(np.maximum(sd, 1e-12))
  mad = np.median(np.abs(logsd - np.median(logsd))) * 1.4826 or 1e-6
  bad = (sd < 0.01 * med) | ((logsd - np.median(logsd)) / mad > z)
  return [int(i) for i in np.flatnonzero(bad)]


def interpolate(eeg: np.ndarray, rate: float, montage: str, names: Sequence[str],
                bad: Collection[int]) -> np.ndarray:
  """Spherical-spline interpolation of the 0-based ``bad`` channels of
  ``eeg [time, channels]`` (microvolts) whose ``names`` are in MNE's ``montage``."""
  if not bad:
    return eeg
  import mne
  info = mne.create_info(list(names), rate, "eeg")
  raw = mne.io.RawArray(eeg.T * 1e-6, info, verbose="error")  # MNE works in volts
  raw.set_montage(mne.channels.make_standard_montage(montage), verbose="error")
  raw.info["bads"] = [names[i] for i in sorted(bad)]
  raw.interpolate_bads(reset_bads=True, mode="accurate", verbose="error")
  return raw.get_data().T * 1e6


def rereference(eeg: np.ndarray, mastoids: np.ndarray, names: Sequence[str],
                reference: str, path: str, field_name: str) -> tuple[np.ndarray, str]:
  """Re-references ``eeg [time, channels]`` (``names``) using ``mastoids [time, 2]``.

  ``reference``: ``"mastoids"`` (their mean; a flat one, std under 1% of the EEG's
  median std, is left out), ``"average"``, ``"none"`` or a channel name (EEG or
  mastoid). Returns the EEG and a description for the provenance.
  """
  if reference == "mastoids":
    eeg_sd = np.median(eeg.std(axis=0))
    good = [i for i in range(mastoids.shape[1]) if mastoids[:, i].std() > 0.01 * eeg_sd]
    if not good:
      raise DatasetError(f"{path}: field '{field_name}': every mastoid channel is flat, "
                         f"expected at least one to re-reference the EEG to.")
    used = "+".join(names[eeg.shape[1] + i] for i in good)
    return eeg - mastoids[:, good].mean(axis=1, keepdims=True), f"mastoids {used}"
  if reference == "average":
    return eeg - eeg.mean(axis=1, keepdims=True), "average"
  if reference == "none":
    return eeg, "none"
  every = np.concatenate([eeg, mastoids], axis=1)
  if reference not in names:
    raise ValueError(f"EEG reference {reference!r}: expected 'mastoids', 'average', "
                     f"'none' or a channel name of {list(names)}.")
  return eeg - every[:, list(names).index(reference)][:, None], reference


def read_wav(path: str) -> tuple[np.ndarray, int]:
  """Mono float64 samples and the rate of a wav (multi-channel files are averaged)."""
  import soundfile as sf
  try:
    x, sr = sf.read(path, dtype="float64", always_2d=True)
  except Exception as e:
    raise DatasetError(f"{path}: not a readable audio file ({e}).") from e
  if x.shape[0] == 0:
    raise DatasetError(f"{path}: audio has no samples.")
  return x.mean(axis=1), int(sr)


def mix(attended: np.ndarray, unattended: np.ndarray, where: str
        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
  """RMS-normalises each talker, sums them (0 dB) and scales all three by one gain:
  each talker at :data:`TALKER_RMS`, lowered if the mixture would pass
  :data:`PEAK_LIMIT`. Returns float32 ``(attended, unattended, noisy)`` and the
  final talker RMS."""
  out = []
  for name, x in (("attended", attended), ("unattended", unattended)):
    rms = np.sqrt(np.mean(x ** 2))
    if not rms > 0:
      raise DatasetError(f"{where}: the {name} talker is silent.")
    out.append(x / rms)
  a, u = out
  gain = TALKER_RMS
  peak = np.abs(a + u).max() * gain
  if peak > PEAK_LIMIT:
    gain *= PEAK_LIMIT / peak
  a, u = a * gain, u * gain
  return a.astype(np.float32), u.astype(np.float32), (a + u).astype(np.float32), gain


def crop_align(eeg: np.ndarray, eeg_rate: int, audios: Sequence[tuple[np.ndarray, int]],
               sample_rate: int) -> tuple[np.ndarray, list[np.ndarray]]:
  """Crops ``eeg [time, channels]`` and each ``(audio, rate)`` to their common
  duration and resamples the audio to ``sample_rate``: ``round(len(eeg) *
  sample_rate / eeg_rate)`` samples each, sample 0 aligned with EEG sample 0."""
  seconds = min([eeg.shape[0] / eeg_rate] + [len(x) / sr for x, sr in audios])
  n_eeg = int(np.floor(seconds * eeg_rate + 1e-9))
  n_audio = round(n_eeg * sample_rate / eeg_rate)
  out = []
  for x, sr in audios:
    x = x[:int(np.ceil(n_eeg * sr / eeg_rate))]
    y = resample(x, sr, sample_rate)
    if len(y) < n_audio:  # polyphase rounding can leave one sample short
      y = np.pad(y, (0, n_audio - len(y)))
    out.append(y[:n_audio])
  return eeg[:n_eeg], out


# ---------------------------------------------------------------------------
# Cocktail Party
# ---------------------------------------------------------------------------

def original_attended(subject: int) -> str:
  """The Dryad README's (and the original's) attended book: subjects 1-17 "20000",
  18-33 "Journey"."""
  return STORIES[0] if subject <= 17 else STORIES[1]


# The per-subject list of the "lalor-note" rule (module docstring): subjects who
# attended "20000"; every other subject 1-33 attended "Journey".
LALOR_NOTE_20000 = (3, 6, 7, 8, 9, 10, 13, 15, 17, 18, 19, 21, 24, 25, 27, 31, 32)


def lalor_note_attended(subject: int) -> str:
  """The "lalor-note" rule's attended book (module docstring)."""
  if not 1 <= subject <= 33:
    raise DatasetError(f"Subject{subject}: the 'lalor-note' attended-story list covers "
                       f"subjects 1-33; pass a CSV table for other subjects.")
  return STORIES[0] if subject in LALOR_NOTE_20000 else STORIES[1]


# --cocktail_attended's named rules (module docstring); anything else is a CSV path.
ATTENDED_RULES = {"readme": original_attended, "original": original_attended,
                  "lalor-note": lalor_note_attended}


def _attended_table(attended: str):
  """A rule ``subject -> story``: a named one of :data:`ATTENDED_RULES` ("" is
  "readme"), else ``{subject: story}.__getitem__`` from a CSV file."""
  if attended in ("",) or attended in ATTENDED_RULES:
    return ATTENDED_RULES[attended or "readme"]
  if not os.path.isfile(attended):
    raise DatasetError(f"{attended}: attended-story table not found (expected one of "
                       f"{sorted(ATTENDED_RULES)} or a CSV file of 'subject,story' rows).")
  table = {}
  with open(attended, newline="") as f:
    for i, row in enumerate(csv.reader(f), 1):
      if not row or row[0].strip().lower() in ("subject", "") or row[0].startswith("#"):
        continue
      try:
        s = int(re.sub(r"\D", "", row[0]))
        story = {st.lower(): st for st in STORIES}[row[1].strip().lower()]
      except (ValueError, KeyError, IndexError):
        raise DatasetError(f"{attended}: row {i} is {row!r}, expected "
                           f"'subject,story' with story in {STORIES}.") from None
      table[s] = story
  def rule(subject: int) -> str:
    if subject not in table:
      raise DatasetError(f"{attended}: no attended story for subject {subject}.")
    return table[subject]
  return rule


def _subject_dirs(src: str) -> list[tuple[int, str]]:
  eeg_dir = os.path.join(src, "EEG")
  if not os.path.isdir(eeg_dir):
    raise DatasetError(f"{src}: no EEG folder (expected {eeg_dir}/Subject<s>/"
                       f"Subject<s>_Run<r>.mat).")
  out = sorted((int(m.group(1)), os.path.join(eeg_dir, d)) for d in os.listdir(eeg_dir)
               if (m := _SUBJECT_RE.match(d)) and os.path.isdir(os.path.join(eeg_dir, d)))
  if not out:
    raise DatasetError(f"{eeg_dir}: no Subject<s> folders.")
  return out


def list_subjects(src: str, **options) -> list[str]:
  """Subject ids (``"Subject1"``, ...) in the order :func:`iter_recordings` yields."""
  return [f"Subject{s}" for s, _ in _subject_dirs(src)]


def _stimulus_index(src: str) -> dict[str, str]:
  """Lower-cased wav name -> path, for every wav under ``SRC/Stimuli`` (or SRC)."""
  root = os.path.join(src, "Stimuli")
  root = root if os.path.isdir(root) else src
  index = {}
  for dirpath, dirs, files in os.walk(root):
    dirs.sort()  # the first of duplicate names wins, the same on every machine
    for f in sorted(files):
      if f.lower().endswith(".wav"):
        index.setdefault(f.lower(), os.path.join(dirpath, f))
  return index


def time_major(value: object, channels: int) -> tuple[object, bool]:
  """``value`` as ``[time, channels]``: a 2-D array whose first axis (and not its
  second) has ``channels`` entries is transposed. Returns it and whether it was.
  (The Dryad README documents channels x time; the loaders read time x channels.)"""
  a = np.asarray(value)
  if a.ndim == 2 and a.shape[0] == channels and a.shape[1] != channels:
    return a.T, True
  return value, False


def _read_run(path: str) -> tuple[np.ndarray, np.ndarray, bool]:
  """``(eegData [time, 128], mastoids [time, 2], transposed)`` of one run file,
  checked; either orientation is accepted (module docstring)."""
  m = read_mat(path, ["eegData", "mastoids", "fs"])
  fs = scalar(field(m, "fs", path), path, "fs")
  if fs != PUBLISHED_EEG_RATE:
    raise DatasetError(f"{path}: field 'fs' is {fs:g}, expected {PUBLISHED_EEG_RATE} "
                       f"(the Cocktail Party EEG is published at 128 Hz).")
  eeg, transposed = time_major(field(m, "eegData", path), N_CHANNELS)
  eeg = matrix(eeg, path, "eegData", N_CHANNELS)
  mastoids = matrix(time_major(field(m, "mastoids", path), 2)[0], path, "mastoids", 2)
  if mastoids.shape[0] != eeg.shape[0]:
    raise DatasetError(f"{path}: field 'mastoids' has {mastoids.shape[0]} samples, "
                       f"expected {eeg.shape[0]} (as 'eegData').")
  return eeg, mastoids, transposed


def _biosemi128_names() -> list[str]:
  return [f"{b}{i}" for b in "ABCD" for i in range(1, 33)]


def iter_recordings(src: str, *, sample_rate: int, eeg_rate: int,
                    subjects: Collection[str] | None = None,
                    eeg: object | None = None, attended: str = "readme",
                    bad_channels: str = "both", **unused) -> Iterator[Recording]:
  """Yields one :class:`Recording` per run, subjects in numeric order.

  Args:
    src: the dataset folder (holding ``EEG/`` and ``Stimuli/``).
    sample_rate: codec sample rate of the audio out (44100 for ``cocktail``).
    eeg_rate: EEG rate out (128; other rates are resampled after filtering).
    subjects: only these subject ids (``"Subject3"`` or ``"3"``); None for all.
    eeg: the framework's ``EEGSettings`` (band-pass edges, reference: ``average``,
      ``none``, a channel name, or ``mastoids``); None: the original's recipe
      (0.1-45 Hz, mastoids).
    attended: ``"readme"`` (= ``"original"``: subjects 1-17 "20000", 18-33
      "Journey"), ``"lalor-note"`` (the per-subject list of the module docstring) or
      a CSV of ``subject,story`` rows.
    bad_channels: ``both`` (the original's lists and automatic detection),
      ``original``, ``auto`` or ``none``.

  Each recording: ``eeg [time, 128]`` microvolts at ``eeg_rate``; ``attended``,
  ``unattended``, ``noisy [time * sample_rate / eeg_rate]`` float32.
  """
  if bad_channels not in BAD_CHANNEL_MODES:
    raise ValueError(f"bad_channels={bad_channels!r}, expected one of {BAD_CHANNEL_MODES}.")
  l_freq, h_freq, reference = eeg_settings(eeg)
  table = _attended_table(attended)
  wanted = None if subjects is None else {str(s).removeprefix("Subject") for s in subjects}
  wavs = _stimulus_index(src)
  names = _biosemi128_names()
  ref_names = names + ["M1", "M2"]
  for s, folder in _subject_dirs(src):
    if wanted is not None and str(s) not in wanted:
      continue
    subject = f"Subject{s}"
    runs = sorted((int(m.group(2)), os.path.join(folder, f)) for f in os.listdir(folder)
                  if (m := _RUN_RE.match(f)) and int(m.group(1)) == s)
    if not runs:
      raise DatasetError(f"{folder}: no {subject}_Run<r>.mat files.")
    story = table(s)
    other = STORIES[1 - STORIES.index(story)]
    # Runs are read, filtered and referenced one at a time; the automatic bad-channel
    # detection looks at the subject's runs together (first pass) so that every run
    # interpolates the same channels, as the original's merged-data lists do.
    filtered = []
    for r, path in runs:
      x, mastoids, transposed = _read_run(path)
      both = bandpass(np.concatenate([x, mastoids], axis=1), PUBLISHED_EEG_RATE,
                      l_freq, h_freq).astype(np.float32)
      filtered.append((r, path, both[:, :N_CHANNELS], both[:, N_CHANNELS:], transposed))
    bad = set()
    if bad_channels in ("both", "original"):
      bad |= {c - 1 for c in ORIGINAL_BAD_CHANNELS.get(s, [])}
    if bad_channels in ("both", "auto"):
      bad |= set(detect_bad(np.concatenate([f[2] for f in filtered], axis=0)))
    if len(bad) > N_CHANNELS // 2:
      raise DatasetError(f"{folder}: {len(bad)} of {N_CHANNELS} channels of 'eegData' "
                         f"are flat or noisy, too many to interpolate.")
    for r, path, x, mastoids, transposed in filtered:
      x = interpolate(x.astype(np.float64), PUBLISHED_EEG_RATE, "biosemi128", names, bad)
      x, ref = rereference(x, mastoids.astype(np.float64), ref_names, reference, path,
                           "mastoids")
      x = resample(x, PUBLISHED_EEG_RATE, eeg_rate)
      audio = {}
      for st in (story, other):
        key = f"{st}_{r}.wav".lower()
        if key not in wavs:
          raise DatasetError(f"{path}: stimulus '{st}_{r}.wav' of run {r} not found "
                             f"under {os.path.join(src, 'Stimuli')}.")
        audio[st] = read_wav(wavs[key])
      x, (att, unatt) = crop_align(x, eeg_rate, [audio[story], audio[other]],
                                     sample_rate)
      where = f"{path} (run {r})"
      att, unatt, noisy, gain = mix(att, unatt, where)
      yield Recording(
          subject=subject, trial=str(r), eeg=x.astype(np.float32),
          attended=att, unattended=unatt, noisy=noisy,
          stimuli=(f"{story}_{r}", f"{other}_{r}"),
          provenance=dict(
              eeg_file=os.path.relpath(path, src),
              wav_files=[os.path.relpath(wavs[f"{st}_{r}.wav".lower()], src)
                         for st in (story, other)],
              wav_rates=[audio[story][1], audio[other][1]],
              attended_story=story, attended_rule=attended or "readme",
              eeg_layout="channels x time" if transposed else "time x channels",
              bad_channels=[f"{names[c]} ({c + 1})" for c in sorted(bad)],
              reference=ref,
              band_hz=[l_freq, h_freq], talker_gain=float(gain)),
      ).validate(sample_rate=sample_rate, eeg_rate=eeg_rate)


def add_arguments(group: argparse._ArgumentGroup) -> None:
  """The reader's command-line options (``--cocktail_<option>``)."""
  group.add_argument("--cocktail_attended", dest="attended", default="readme",
                     help="attended book per subject: 'readme' (= 'original': the Dryad "
                          "README's 1-17 20000, 18-33 Journey), 'lalor-note' (the "
                          "per-subject list published as a correction of the README; "
                          "see cocktail.py) or a CSV of subject,story rows")
  group.add_argument("--cocktail_bad_channels", dest="bad_channels", default="both",
                     choices=BAD_CHANNEL_MODES,
                     help="channels to interpolate: the original's per-subject lists, "
                          "automatic flat/noisy detection, both, or none")
