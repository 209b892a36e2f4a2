"""The original NeuroCodec HDF5 layout: discovery, validation and a random-access source.

Layout (the Cocktail Party release; KUL uses the same files)::

  <root>/<split>/noisy_<split>.h5     audio mixture   (N, T, 1) or (N, T)
  <root>/<split>/clean_<split>.h5     attended talker (N, T, 1) or (N, T)
  <root>/<split>/eegs_<split>.h5      EEG             (N, T_eeg, C), volts or µV
  <root>/<split>/subjects_<split>.h5  optional        (N,) or (N, 1) integer ids
  <root>/<split>/unattended_<split>.h5 optional       competing talker, as audio

A flat ``<root>/noisy_<split>.h5`` is accepted too. Each file holds one dataset,
keyed ``<stem>=`` (as published), ``<stem>``, or the file's only dataset.

Everything that can be checked from metadata is checked when a split is opened,
each failure a :class:`DataError` naming the file, the dataset and what was
expected; non-finite values are checked as examples are read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Mapping, Sequence

import h5py
import numpy as np

REQUIRED = ("noisy", "clean", "eegs")
OPTIONAL = ("subjects", "unattended")
AUDIO_KINDS = ("noisy", "clean", "unattended")

# Scalp EEG is tens of microvolts: in volts its typical magnitude is ~1e-5,
# in microvolts ~1..100. Anything below this median |x| is taken as volts.
VOLTS_THRESHOLD = 1e-2
# Audio length may differ from segment_seconds * sample_rate by this fraction
# (the Cocktail release trims 2 s at 44.1 kHz to 87552 = 171 x 512 samples).
AUDIO_LENGTH_TOLERANCE = 0.01


class DataError(ValueError):
  """A dataset file does not match what the config and the layout expect."""


def find_split_files(root: str, split: str) -> dict[str, str]:
  """Returns ``{kind: path}`` for ``split`` under ``root`` (nested or flat).

  Required kinds are ``noisy``, ``clean``, ``eegs``; ``subjects`` and
  ``unattended`` are included only when present.
  """
  candidates = [os.path.join(root, split), root]
  for base in candidates:
    paths = {k: os.path.join(base, f"{k}_{split}.h5") for k in REQUIRED + OPTIONAL}
    if any(os.path.exists(paths[k]) for k in REQUIRED):
      missing = [paths[k] for k in REQUIRED if not os.path.exists(paths[k])]
      if missing:
        raise DataError(
            f"Split {split!r} under {base}: missing file(s) {missing}; expected "
            f"noisy_{split}.h5, clean_{split}.h5 and eegs_{split}.h5 together.")
      return {k: p for k, p in paths.items() if os.path.exists(p)}
  expected = [os.path.join(b, f"noisy_{split}.h5") for b in candidates]
  raise DataError(
      f"Split {split!r} not found: no {expected[0]} nor {expected[1]} "
      f"(data root {root!r}; set --config.root).")


def dataset_key(h5: h5py.File, stem: str) -> str:
  """The dataset key in ``h5`` for ``stem``: ``<stem>=``, ``<stem>``, or the only one."""
  keys = [k for k in h5.keys() if isinstance(h5[k], h5py.Dataset)]
  named = [k for k in (f"{stem}=", stem) if k in keys]
  if len(named) == 1:
    return named[0]
  if len(named) == 2:
    raise DataError(f"{h5.filename}: ambiguous dataset key, both {named} exist; "
                    f"keep one.")
  if len(keys) == 1:
    return keys[0]
  raise DataError(
      f"{h5.filename}: expected a dataset named {stem + '='!r} or {stem!r} or a "
      f"single dataset, found {sorted(keys) or 'none'}.")


def open_dataset(path: str, stem: str | None = None) -> h5py.Dataset:
  """Opens ``path`` read-only and returns its dataset for ``stem``.

  ``stem`` defaults to the file name without ``.h5`` (``noisy_train``), so the
  key is ``noisy_train=``, ``noisy_train`` or the file's only dataset.
  """
  stem = stem or os.path.splitext(os.path.basename(path))[0]
  try:
    h5 = h5py.File(path, "r")
  except OSError as e:
    raise DataError(f"{path}: cannot open as HDF5 ({e}).") from e
  return h5[dataset_key(h5, stem)]


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """What opening a split found: files, keys, sizes and the EEG scale."""
  split: str
  paths: Mapping[str, str]
  keys: Mapping[str, str]
  num_examples: int
  audio_length: int
  eeg_length: int
  eeg_channels: int
  eeg_scale: float        # multiply raw EEG by this to get microvolts


def _describe(ds: h5py.Dataset) -> str:
  return f"{ds.file.filename} [{ds.name.lstrip('/')}] with shape {ds.shape}"


def detect_eeg_scale(eeg: h5py.Dataset, units: str, max_examples: int = 8) -> float:
  """Returns the factor to microvolts: 1e6 for volts, 1 for microvolts.

  ``units`` is ``"auto"`` (median |x| of the first examples below
  ``VOLTS_THRESHOLD`` means volts), ``"volts"`` or ``"microvolts"``.
  """
  if units == "volts":
    return 1e6
  if units == "microvolts":
    return 1.0
  if units != "auto":
    raise ValueError(f"data.eeg_units must be 'auto', 'volts' or 'microvolts', "
                     f"got {units!r}.")
  sample = np.asarray(eeg[: min(max_examples, eeg.shape[0])], np.float64)
  finite = sample[np.isfinite(sample)]
  magnitude = float(np.median(np.abs(finite))) if finite.size else 0.0
  return 1e6 if magnitude < VOLTS_THRESHOLD else 1.0


def inspect_split(root: str, split: str, *, eeg_channels: int,
                  sample_rate: int | None, eeg_rate: int,
                  segment_seconds: float, hop_length: int | None = None,
                  eeg_units: str = "auto") -> SplitInfo:
  """Opens and validates a split from metadata alone (no audio is read).

  Raises:
    DataError: missing file or key, wrong rank, counts that differ across
      files, wrong channel count, lengths that do not match the sample rates
      and ``segment_seconds``, or an empty split.
  """
  paths = find_split_files(root, split)
  keys, shapes = {}, {}
  for kind, path in paths.items():
    ds = open_dataset(path)
    keys[kind] = ds.name.lstrip("/")
    shapes[kind] = ds.shape
    if kind in AUDIO_KINDS:
      if not (ds.ndim == 2 or (ds.ndim == 3 and ds.shape[2] == 1)):
        raise DataError(f"{_describe(ds)}: audio must be (N, T, 1) or (N, T).")
    elif kind == "eegs":
      if ds.ndim != 3:
        raise DataError(f"{_describe(ds)}: EEG must be (N, T_eeg, channels).")
      if ds.shape[2] != eeg_channels:
        raise DataError(
            f"{_describe(ds)}: {ds.shape[2]} EEG channels, but the config has "
            f"eeg_channels={eeg_channels} (last axis must be channels).")
      scale = detect_eeg_scale(ds, eeg_units)
    elif kind == "subjects":
      if not (ds.ndim == 1 or (ds.ndim == 2 and ds.shape[1] == 1)):
        raise DataError(f"{_describe(ds)}: subjects must be (N,) or (N, 1).")
      if not np.issubdtype(ds.dtype, np.integer):
        raise DataError(f"{_describe(ds)}: subjects must be integers, got {ds.dtype}.")
    ds.file.close()

  counts = {kind: s[0] for kind, s in shapes.items()}
  if len(set(counts.values())) != 1:
    raise DataError(f"Split {split!r}: example counts differ across files: "
                    + ", ".join(f"{paths[k]}: {n}" for k, n in counts.items()))
  n = counts["noisy"]
  if n == 0:
    raise DataError(f"Split {split!r}: {paths['noisy']} holds no examples.")

  audio_length = shapes["noisy"][1]
  for kind in AUDIO_KINDS:
    if kind in shapes and shapes[kind][1] != audio_length:
      raise DataError(f"{paths[kind]}: audio length {shapes[kind][1]} differs from "
                      f"{paths['noisy']} ({audio_length}).")
  if sample_rate is not None:
    expected = segment_seconds * sample_rate
    if abs(audio_length - expected) > AUDIO_LENGTH_TOLERANCE * expected:
      raise DataError(
          f"{paths['noisy']}: audio length {audio_length} samples does not match "
          f"{segment_seconds} s at {sample_rate} Hz (~{expected:.0f}); check the "
          f"codec sample rate and data.segment_seconds.")
    if hop_length and audio_length % hop_length:
      raise DataError(
          f"{paths['noisy']}: audio length {audio_length} is not a multiple of the "
          f"codec hop length {hop_length}.")
  eeg_length = shapes["eegs"][1]
  expected_eeg = segment_seconds * eeg_rate
  if abs(eeg_length - expected_eeg) > 1:
    raise DataError(f"{paths['eegs']}: EEG length {eeg_length} does not match "
                    f"{segment_seconds} s at {eeg_rate} Hz ({expected_eeg:.0f}).")
  return SplitInfo(split=split, paths=paths, keys=keys, num_examples=n,
                   audio_length=audio_length, eeg_length=eeg_length,
                   eeg_channels=eeg_channels, eeg_scale=scale)


def inspect_split_from_config(config, split: str) -> SplitInfo:
  """:func:`inspect_split` with the sizes taken from a NeuroCodec config."""
  arch = config.codec.arch
  hop = int(np.prod(arch.encoder_rates))
  return inspect_split(
      config.root, split, eeg_channels=config.eeg_channels,
      sample_rate=arch.sample_rate, eeg_rate=config.data.eeg_rate,
      segment_seconds=config.data.segment_seconds, hop_length=hop,
      eeg_units=config.data.eeg_units)


class AADSource:
  """Random-access source over one split (grain ``RandomAccessDataSource``).

  Picklable: HDF5 handles are opened lazily in the process that reads, so grain
  worker processes each open their own. Only the requested ``fields`` are read.

  Example fields (all float32 unless noted):
    ``noisy``, ``clean``, ``unattended``: ``[1, T]`` audio;
    ``eeg``: ``[C, T_eeg]`` in microvolts;
    ``subject``: int32 scalar (-1 when ``subjects_<split>.h5`` is absent);
    ``index``: int32 scalar, the example's row in the split;
    ``noisy_codes``, ``clean_codes``, ``unattended_codes``: int32
    ``[n_codebooks, frames]`` from a precomputed codes file
    (see ``codec_bridge.precompute``);
    ``noisy_latent``: float32 ``[latent_dim, frames]``, the mixture's continuous
    encoder output, from the same file.
  """

  AUDIO_FIELDS = ("noisy", "clean", "unattended")
  CODE_FIELDS = ("noisy_codes", "clean_codes", "unattended_codes", "noisy_latent")

  def __init__(self, info: SplitInfo, fields: Sequence[str] = ("noisy", "clean", "eeg"),
               codes_path: str | None = None, check_finite: bool = True):
    known = set(self.AUDIO_FIELDS) | {"eeg", "subject", "index"} | set(self.CODE_FIELDS)
    unknown = set(fields) - known
    if unknown:
      raise ValueError(f"Unknown fields {sorted(unknown)}; known: {sorted(known)}.")
    if "unattended" in fields and "unattended" not in info.paths:
      raise DataError(f"Split {info.split!r} has no unattended_{info.split}.h5.")
    if any(f in self.CODE_FIELDS for f in fields) and not codes_path:
      raise ValueError("Code fields need codes_path (run codec_bridge.precompute).")
    self.info = info
    self.fields = tuple(fields)
    self.codes_path = codes_path
    self.check_finite = check_finite
    self._handles: dict[str, h5py.Dataset] | None = None

  def __len__(self) -> int:
    return self.info.num_examples

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_handles"] = None     # reopened in the reading process
    return state

  def _open(self) -> dict[str, h5py.Dataset]:
    if self._handles is None:
      handles = {}
      for field in self.fields:
        if field in self.AUDIO_FIELDS:
          handles[field] = open_dataset(self.info.paths[field])
        elif field == "eeg":
          handles[field] = open_dataset(self.info.paths["eegs"])
        elif field == "subject" and "subjects" in self.info.paths:
          handles[field] = open_dataset(self.info.paths["subjects"])
        elif field in self.CODE_FIELDS:
          handles[field] = h5py.File(self.codes_path, "r")[field]
      self._handles = handles
    return self._handles

  def _checked(self, field: str, index: int, x: np.ndarray) -> np.ndarray:
    if self.check_finite and not np.all(np.isfinite(x)):
      h = self._open()[field]
      raise DataError(f"{h.file.filename} [{h.name.lstrip('/')}] example {index}: "
                      f"contains non-finite values (NaN or inf).")
    return x

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    index = int(index)
    if not 0 <= index < len(self):
      raise IndexError(f"index {index} out of range for {len(self)} examples")
    handles = self._open()
    out = {}
    for field in self.fields:
      if field in self.AUDIO_FIELDS:
        x = np.asarray(handles[field][index], np.float32).reshape(1, -1)
        out[field] = self._checked(field, index, x)
      elif field == "eeg":
        x = np.asarray(handles[field][index], np.float32).T   # [C, T_eeg]
        out[field] = self._checked(field, index, x) * np.float32(self.info.eeg_scale)
      elif field == "subject":
        h = handles.get("subject")
        out[field] = np.int32(-1 if h is None else np.asarray(h[index]).reshape(()))
      elif field == "index":
        out[field] = np.int32(index)
      elif field == "noisy_latent":
        out[field] = self._checked(field, index, np.asarray(handles[field][index], np.float32))
      else:
        out[field] = np.asarray(handles[field][index], np.int32)
    return out


def open_split(config, split: str, fields: Sequence[str] = ("noisy", "clean", "eeg"),
               codes_path: str | None = None) -> AADSource:
  """Validates ``split`` of ``config.root`` and returns its source; logs the EEG scale."""
  info = inspect_split_from_config(config, split)
  units = "volts -> microvolts (x1e6)" if info.eeg_scale != 1.0 else "microvolts (x1)"
  logging.info("Split %r: %d examples, audio %d samples, EEG %d x %d, EEG units %s "
               "(data.eeg_units=%s).", split, info.num_examples, info.audio_length,
               info.eeg_channels, info.eeg_length, units, config.data.eeg_units)
  return AADSource(info, fields=fields, codes_path=codes_path,
                   check_finite=config.data.check_finite)
