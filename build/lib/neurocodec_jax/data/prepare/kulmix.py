"""KUL-mix: the KU Leuven mixtures behind NeuroHeed's and the original NeuroCodec's
published KUL extraction numbers.

Source layout (paths configurable)::

  <src>/mixture_data_list_2mix.csv   the mixture list, no header (the recipe keeps it
                                     in ClearerVoice-Studio,
                                     train/target_speaker_extraction/data/KUL/)
  <src>/eeg/S<subject>Tra<trial>.npy EEG of a whole trial, 64 channels at 128 Hz,
                                     [time, 64] (a [64, time] array is accepted)
  <src>/audio/<wav> or <src>/audio_8k/<wav>   the stimulus wavs the list names

List columns: split (train/val/test), subject, trial, target wav, target start (s;
also where the EEG starts), unused, interferer wav, interferer start (s), SNR (dB),
duration (s). Every row is one mixture of ``duration`` seconds.

Verified against:

- the recipe's own loader, ClearerVoice-Studio
  ``train/target_speaker_extraction/dataloader/dataset_eeg.py`` (NeuroHeed's code,
  github.com/modelscope/ClearerVoice-Studio): rows split on ``,`` and filtered on
  column 1; the EEG of ``f"{reference_direc}S{subject}Tra{trial}.npy"``, loaded for
  subjects 1-16 and trials 1-8 only, indexed ``eeg[int(col5 * 128) : ..., :]``
  (time-major); the target read from ``int(col5 * audio_sr)``, the interferer from
  ``int(col8 * audio_sr)`` (sample offsets at the config's rate: the wavs must be at
  ``audio_sr``); the mixing of :func:`recipe_mix`. Its
  ``config/config_KUL_eeg_neuroheed_2spk.yaml``: ``audio_direc: .../KUL_eeg/audio_8k/``,
  ``reference_direc: .../KUL_eeg/eeg/``, ``audio_sr: 8000``, ``ref_sr: 128``,
  ``max_length: 10``; the list at ``./data/KUL/mixture_data_list_2mix.csv`` (its blob
  is over the snapshot's size limit: no row of it was read here).
- the original NeuroCodec's ``kul_mixcsv_to_lmdb.py`` (github.com/JulianSilva2001/
  NeuroCodec, branch ``neurodataa``), which documents the columns above ("4 target
  start time (sec) -> also EEG start", "5 unused"), accepts EEG as [64, T] or
  [T, 64], and mixes with the same ``snr_mix``.

Not verified (no stored source; the dataset card at
huggingface.co/datasets/alibabasglab/KUL-mix was not in the corpora): the release's
own folder names (this reader defaults to ``audio/`` and tries ``audio_8k/``, the
recipe config's, when ``audio/`` is absent), the EEG's preprocessing and units
inside the ``.npy`` (used as published, so the layout's unit check decides), and the
list's contents.

Mixing, exactly as the recipe's loader does it (:func:`recipe_mix`): for a non-zero
SNR the interferer is scaled to the target's power, then both are divided by
``max(1, g)`` and the interferer multiplied by ``g = 10 ** (snr / 20)`` (so the
interferer ends ``snr`` dB above the target); at SNR 0 the two are added as stored
(``--kulmix_mixing neurocodec``: power-matched at 0 dB too, as the original
NeuroCodec's script did). A mixture peaking above 1 is scaled down with its
sources. Powers and peaks are taken over the whole row (the original NeuroCodec's
choice; NeuroHeed's loader took them over a batch's shortest row, at most 10 s).
Audio is cut at the wav's own rate (the same samples as the recipe's when the wavs
are at 8 kHz) and resampled to the codec rate before mixing; a row's EEG is the
trial's EEG from the target start, as published (the recipe's preprocessing;
``--kulmix_eeg preprocess`` applies ``--eeg_*`` to the whole trial first).
"""

from __future__ import annotations

import csv
import functools
import os
from typing import Iterator

import numpy as np

from neurocodec_jax.data.prepare import files, signals
from neurocodec_jax.data.prepare.protocols import SPLITS, natural_key
from neurocodec_jax.data.prepare.recording import DatasetError, Recording

SOURCE = dict(name="KUL-mix (NeuroHeed's KU Leuven mixtures)",
              url="https://huggingface.co/datasets/alibabasglab/KUL-mix",
              recipe="https://github.com/modelscope/ClearerVoice-Studio "
                     "(train/target_speaker_extraction, dataloader/dataset_eeg.py)",
              based_on="KU Leuven AAD dataset, doi 10.5281/zenodo.4004271",
              record="huggingface.co/datasets/alibabasglab/KUL-mix",
              # Neither the recipe nor the release states a version or revision.
              version="unversioned")
PREPROCESSING = ("Mixtures built per list row as the recipe defines (see kulmix.py), "
                 "audio resampled to the codec rate; EEG as published unless "
                 "--kulmix_eeg preprocess.")
EEG_UNITS = "as published"
EEG_RATE = 128
CHANNELS = 64
COLUMNS = ("split", "subject", "trial", "target wav", "target start", "unused",
           "interferer wav", "interferer start", "SNR", "duration")
MIXING = ("neuroheed", "neurocodec")
EEG_MODES = ("as-published", "preprocess")
# A row may reach past its wav's end by this much (rounding of listed times): padded.
SLACK_SECONDS = 0.01


def add_arguments(group):
  group.add_argument("--kulmix_list", dest="list_path", default=None,
                     help="mixture list (default <src>/mixture_data_list_2mix.csv)")
  group.add_argument("--kulmix_eeg_dir", dest="eeg_dir", default=None,
                     help="folder of S<s>Tra<t>.npy (default <src>/eeg)")
  group.add_argument("--kulmix_audio_dir", dest="audio_dir", default=None,
                     help="folder of the wavs (default <src>/audio, else "
                          "<src>/audio_8k)")
  group.add_argument("--kulmix_mixing", dest="mixing", choices=MIXING, default="neuroheed",
                     help="neuroheed: the recipe's loader; neurocodec: power-matched "
                          "at 0 dB too")
  group.add_argument("--kulmix_eeg", dest="eeg_mode", choices=EEG_MODES,
                     default="as-published")


def recipe_mix(target: np.ndarray, interferer: np.ndarray, snr_db: float,
               mixing: str = "neuroheed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(mixture, target, interferer)`` as the recipe mixes them (module docstring);
  float64 ``[samples]`` each, mixture = target + interferer."""
  target, interferer = np.asarray(target, np.float64), np.asarray(interferer, np.float64)
  if snr_db != 0 or mixing == "neurocodec":
    target_power = np.mean(target ** 2)
    interferer_power = np.mean(interferer ** 2)
    if interferer_power > 0:
      interferer = interferer * np.sqrt(target_power / interferer_power)
    gain = 10 ** (snr_db / 20)
    top = max(1.0, gain)
    target, interferer = target / top, interferer / top * gain
  mixture = target + interferer
  peak = np.max(np.abs(mixture)) if mixture.size else 0.0
  if peak > 1:
    mixture, target, interferer = mixture / peak, target / peak, interferer / peak
  return mixture, target, interferer


AUDIO_DIRS = ("audio", "audio_8k")   # this reader's default; the recipe config's


def _paths(src, list_path=None, eeg_dir=None, audio_dir=None):
  if not audio_dir:
    found = [d for d in AUDIO_DIRS if os.path.isdir(os.path.join(src, d))]
    audio_dir = os.path.join(src, (found or AUDIO_DIRS)[0])
  return (list_path or os.path.join(src, "mixture_data_list_2mix.csv"),
          eeg_dir or os.path.join(src, "eeg"), audio_dir)


def read_list(path: str) -> list[dict]:
  """The mixture list's rows as dicts (``line``: 1-based line number)."""
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: mixture list not found (the CSV without header: "
                       f"{', '.join(COLUMNS)}; the recipe's is ClearerVoice-Studio's "
                       f"train/target_speaker_extraction/data/KUL/"
                       f"mixture_data_list_2mix.csv: pass it with --kulmix_list).")
  rows = []
  with open(path, newline="") as f:
    for line, parts in enumerate(csv.reader(f), start=1):
      if not parts or not "".join(parts).strip():
        continue
      where = f"{path} line {line}"
      if len(parts) < len(COLUMNS):
        raise DatasetError(f"{where}: {len(parts)} columns, expected {len(COLUMNS)} "
                           f"({', '.join(COLUMNS)}).")
      row = dict(line=line, split=parts[0].strip().lower(), unused=parts[5].strip(),
                 target=parts[3].strip(), interferer=parts[6].strip())
      for key, column, kind in (("subject", 1, int), ("trial", 2, int),
                                ("target_start", 4, float), ("interferer_start", 7, float),
                                ("snr", 8, float), ("duration", 9, float)):
        try:
          row[key] = kind(parts[column])
        except ValueError:
          raise DatasetError(f"{where}: column {column + 1} ({COLUMNS[column]}) is "
                             f"{parts[column]!r}, expected {'an integer' if kind is int else 'a number'}.") from None
      if row["split"] not in SPLITS:
        raise DatasetError(f"{where}: column 1 (split) is {parts[0]!r}, expected one of "
                           f"{SPLITS}.")
      if row["duration"] <= 0 or row["target_start"] < 0 or row["interferer_start"] < 0:
        raise DatasetError(f"{where}: starts must be >= 0 and the duration > 0 (columns "
                           f"5, 8, 10).")
      rows.append(row)
  if not rows:
    raise DatasetError(f"{path}: the mixture list has no rows.")
  return rows


def list_subjects(src: str, list_path=None, **_) -> list[str]:
  rows = read_list(_paths(src, list_path)[0])
  return sorted({f"S{r['subject']}" for r in rows}, key=natural_key)


@functools.lru_cache(maxsize=8)
def _wav(path: str) -> tuple[np.ndarray, int]:
  return files.read_wav(path, path)


def _slice(path: str, start: float, duration: float, sample_rate: int, where: str):
  if not os.path.isfile(path):
    raise DatasetError(f"{where}: wav {path} not found.")
  audio, rate = _wav(path)
  begin, n = int(start * rate), int(duration * rate)
  piece = audio[begin:begin + n]
  if n - len(piece) > SLACK_SECONDS * rate:
    raise DatasetError(f"{where}: {path} has {len(audio) / rate:.3f} s, the row needs "
                       f"{start:g} + {duration:g} s.")
  piece = np.pad(piece, (0, n - len(piece)))
  return signals.resample_audio(piece, rate, sample_rate), rate


def _trial_eeg(path: str, eeg_rate: int, settings: signals.EEGSettings | None) -> np.ndarray:
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: EEG file not found (expected S<subject>Tra<trial>.npy "
                       f"for a row of the mixture list).")
  try:
    eeg = np.load(path)
  except (OSError, ValueError) as e:
    raise DatasetError(f"{path}: cannot read as .npy ({e}).") from e
  if eeg.ndim == 2 and eeg.shape[1] != CHANNELS and eeg.shape[0] == CHANNELS:
    eeg = eeg.T
  if eeg.ndim != 2 or eeg.shape[1] != CHANNELS or eeg.dtype.kind not in "fiu":
    raise DatasetError(f"{path}: EEG array is {eeg.dtype} {eeg.shape}, expected numbers "
                       f"of shape [time, {CHANNELS}] at {EEG_RATE} Hz.")
  settings = settings or signals.EEGSettings(l_freq=None, h_freq=None, reference="none")
  if settings == signals.EEGSettings(None, None, "none") and eeg_rate == EEG_RATE:
    if not np.isfinite(eeg).all():
      raise DatasetError(f"{path}: EEG holds non-finite values; expected finite samples.")
    return eeg.astype(np.float32)
  return signals.preprocess_eeg(eeg, EEG_RATE, eeg_rate=eeg_rate, settings=settings,
                                where=path)


def iter_recordings(src: str, *, sample_rate: int, eeg_rate: int,
                    eeg: signals.EEGSettings | None = None, subjects=None,
                    list_path=None, eeg_dir=None, audio_dir=None, mixing: str = "neuroheed",
                    eeg_mode: str = "as-published", **_) -> Iterator[Recording]:
  """One Recording per list row (``trial`` = ``<trial>-row<line>``, ``group`` = the
  KUL trial, ``split`` = the row's), subject by subject."""
  if mixing not in MIXING or eeg_mode not in EEG_MODES:
    raise ValueError(f"kulmix mixing must be one of {MIXING} and eeg one of {EEG_MODES}.")
  list_path, eeg_dir, audio_dir = _paths(src, list_path, eeg_dir, audio_dir)
  rows = read_list(list_path)
  wanted = None if subjects is None else set(subjects)
  by_subject: dict[str, list[dict]] = {}
  for r in rows:
    by_subject.setdefault(f"S{r['subject']}", []).append(r)
  for subject in sorted(by_subject, key=natural_key):
    if wanted is not None and subject not in wanted:
      continue
    trial_eeg = {}
    for r in sorted(by_subject[subject], key=lambda r: (r["trial"], r["target_start"], r["line"])):
      where = f"{list_path} line {r['line']}"
      eeg_path = os.path.join(eeg_dir, f"S{r['subject']}Tra{r['trial']}.npy")
      if r["trial"] not in trial_eeg:
        trial_eeg.clear()          # rows are sorted by trial: keep one trial's EEG
        settings = (eeg or signals.EEGSettings()) if eeg_mode == "preprocess" else None
        trial_eeg[r["trial"]] = _trial_eeg(eeg_path, eeg_rate, settings)
      full = trial_eeg[r["trial"]]
      e0, n_eeg = int(r["target_start"] * eeg_rate), int(r["duration"] * eeg_rate)
      if e0 + n_eeg > full.shape[0] + SLACK_SECONDS * eeg_rate:
        raise DatasetError(f"{where}: {eeg_path} has {full.shape[0] / eeg_rate:.3f} s of "
                           f"EEG, the row needs {r['target_start']:g} + {r['duration']:g} s "
                           f"(columns 5 and 10).")
      seg = full[e0:e0 + n_eeg]
      seg = np.pad(seg, ((0, n_eeg - len(seg)), (0, 0)))
      target, t_rate = _slice(os.path.join(audio_dir, r["target"]), r["target_start"],
                              r["duration"], sample_rate, f"{where} column 4 (target wav)")
      other, i_rate = _slice(os.path.join(audio_dir, r["interferer"]), r["interferer_start"],
                             r["duration"], sample_rate, f"{where} column 7 (interferer wav)")
      n_audio = round(n_eeg * sample_rate / eeg_rate)
      target, other = (np.pad(x, (0, max(0, n_audio - len(x))))[:n_audio] for x in (target, other))
      mixture, target, other = recipe_mix(target, other, r["snr"], mixing)
      yield Recording(
          subject=subject, trial=f"{r['trial']}-row{r['line']}",
          eeg=np.ascontiguousarray(seg, np.float32), attended=target.astype(np.float32),
          unattended=other.astype(np.float32), noisy=mixture.astype(np.float32),
          stimuli=(os.path.splitext(r["target"])[0], os.path.splitext(r["interferer"])[0]),
          provenance=dict(list=os.path.basename(list_path), line=r["line"],
                          eeg_file=os.path.basename(eeg_path), target=r["target"],
                          target_start=r["target_start"], interferer=r["interferer"],
                          interferer_start=r["interferer_start"], snr_db=r["snr"],
                          duration=r["duration"], unused=r["unused"],
                          wav_rates=[t_rate, i_rate], mixing=mixing, eeg=eeg_mode),
          group=str(r["trial"]), split=r["split"])
