"""Windows of recordings, written in the project's HDF5 layout with a manifest.

Layout (what ``neurocodec_jax.data.hdf5`` reads; as ``data.synthetic`` writes it)::

  <out>/<split>/noisy_<split>.h5       noisy_<split>=       (N, T, 1) float32 mixture
  <out>/<split>/clean_<split>.h5       clean_<split>=       (N, T, 1) float32 attended
  <out>/<split>/unattended_<split>.h5  unattended_<split>=  (N, T, 1) float32 competing
  <out>/<split>/eegs_<split>.h5        eegs_<split>=        (N, T_eeg, C) float32, µV
  <out>/<split>/subjects_<split>.h5    subjects_<split>=    (N,) int32 subject index
  <out>/manifest.json                  source, preprocessing, protocol, per-window provenance

``T = floor(segment_seconds * sample_rate / hop) * hop`` (a whole number of codec
frames), ``T_eeg = round(segment_seconds * eeg_rate)``. Windows do not overlap and
start every ``segment_seconds`` from each recording's start; a recording's tail
shorter than a window is dropped.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Mapping, Sequence

import h5py
import numpy as np
from tqdm import tqdm

from neurocodec_jax.data.prepare.protocols import SPLITS, Window, natural_key

KINDS = ("noisy", "clean", "unattended", "eegs", "subjects")
MANIFEST_VERSION = 1


def window_sizes(segment_seconds: float, sample_rate: int, eeg_rate: int,
                 hop: int) -> tuple[int, int]:
  """``(audio samples, EEG samples)`` of one window."""
  audio = int(segment_seconds * sample_rate) // hop * hop
  if audio <= 0:
    raise ValueError(f"segment_seconds={segment_seconds} is shorter than one codec frame "
                     f"({hop} samples at {sample_rate} Hz).")
  return audio, int(round(segment_seconds * eeg_rate))


def segment(recordings: Sequence, *, segment_seconds: float, sample_rate: int,
            eeg_rate: int, hop: int) -> list[Window]:
  """The windows of ``recordings`` (objects with subject, trial, unit, split, stimuli,
  ``eeg_length`` and ``audio_length``), in recording order, then by onset."""
  audio_len, eeg_len = window_sizes(segment_seconds, sample_rate, eeg_rate, hop)
  windows = []
  for r_index, r in enumerate(recordings):
    k = 0
    while True:
      onset = k * segment_seconds
      eeg_start, audio_start = round(onset * eeg_rate), round(onset * sample_rate)
      if eeg_start + eeg_len > r.eeg_length or audio_start + audio_len > r.audio_length:
        break
      windows.append(Window(recording=r_index, subject=r.subject, trial=r.trial,
                            unit=r.unit, onset=round(onset, 6), eeg_start=eeg_start,
                            audio_start=audio_start, stimuli=tuple(r.stimuli),
                            source_split=r.split))
      k += 1
  return windows


def subject_indices(windows: Sequence[Window]) -> dict[str, int]:
  """Subject id -> the int32 stored in ``subjects_<split>.h5`` (natural order)."""
  return {s: i for i, s in enumerate(sorted({w.subject for w in windows}, key=natural_key))}


def write_splits(folder: str, windows: Sequence[Window], splits: Sequence[str | None],
                 load: Callable[[int], Mapping[str, np.ndarray]], *, audio_length: int,
                 eeg_length: int, channels: int, progress: bool = True) -> dict[str, list[int]]:
  """Writes the five files of every split into ``folder``; returns each split's window
  indices in row order.

  ``load(recording)`` returns the recording's arrays: ``eeg`` ``[time, C]``,
  ``attended``, ``unattended``, ``noisy`` ``[samples]`` (memory-mapped is fine).
  """
  ids = subject_indices(windows)
  rows = {s: [i for i, x in enumerate(splits) if x == s] for s in SPLITS}
  files, data = {}, {}
  try:
    for split in SPLITS:
      n = len(rows[split])
      os.makedirs(os.path.join(folder, split), exist_ok=True)
      shapes = dict(noisy=(n, audio_length, 1), clean=(n, audio_length, 1),
                    unattended=(n, audio_length, 1), eegs=(n, eeg_length, channels),
                    subjects=(n,))
      for kind in KINDS:
        f = h5py.File(os.path.join(folder, split, f"{kind}_{split}.h5"), "w")
        files[split, kind] = f
        data[split, kind] = f.create_dataset(
            f"{kind}_{split}=", shapes[kind], np.int32 if kind == "subjects" else np.float32)
    position = {i: (s, k) for s in SPLITS for k, i in enumerate(rows[s])}
    kept = [i for i in range(len(windows)) if splits[i] is not None]
    by_recording: dict[int, list[int]] = {}
    for i in kept:
      by_recording.setdefault(windows[i].recording, []).append(i)
    with tqdm(total=len(kept), desc="writing windows", unit="window",
              disable=not progress) as bar:
      for r_index, members in by_recording.items():
        arrays = load(r_index)
        for i in members:
          w, (split, row) = windows[i], position[i]
          a0, e0 = w.audio_start, w.eeg_start
          data[split, "noisy"][row, :, 0] = arrays["noisy"][a0:a0 + audio_length]
          data[split, "clean"][row, :, 0] = arrays["attended"][a0:a0 + audio_length]
          data[split, "unattended"][row, :, 0] = arrays["unattended"][a0:a0 + audio_length]
          data[split, "eegs"][row] = arrays["eeg"][e0:e0 + eeg_length]
          data[split, "subjects"][row] = ids[w.subject]
        bar.update(len(members))
  finally:
    for f in files.values():
      f.close()
  return rows


def window_provenance(windows: Sequence[Window], rows: Sequence[int]) -> dict[str, list]:
  """Columns ``subject``, ``trial``, ``onset`` (seconds) of a split's rows, in order."""
  return dict(subject=[windows[i].subject for i in rows],
              trial=[windows[i].trial for i in rows],
              onset=[windows[i].onset for i in rows])


def write_manifest(folder: str, manifest: dict):
  with open(os.path.join(folder, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
