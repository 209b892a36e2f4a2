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
expected. Opening a split also reads every value once (:func:`scan_files`, cached
per file version in ``data_check_<split>.json``): non-finite audio or EEG is
reported with its row before training starts, float audio far outside [-1, 1] is
refused, and the EEG's per-channel scale decides its units for the whole dataset
(every split the same, :func:`decide_eeg_units`). Integer PCM audio is scaled by
its range (int16 / 32768), as soundfile and librosa read it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Mapping, Sequence

import h5py
import numpy as np

from neurocodec_jax import codec
from neurocodec_jax.data import atomic

REQUIRED = ("noisy", "clean", "eegs")
OPTIONAL = ("subjects", "unattended")
AUDIO_KINDS = ("noisy", "clean", "unattended")

# Factor from each EEG unit to microvolts (data.eeg_units, or detected).
EEG_UNITS = {"volts": 1e6, "millivolts": 1e3, "microvolts": 1.0}
# Scalp EEG's per-channel std is ~1..100 µV: ~1e-5 in volts, ~1e-2 in millivolts.
# Detection picks the unit putting the data's median per-channel std nearest this
# (in decades): the boundaries fall at 316 µV-equivalent, far from real EEG.
TYPICAL_EEG_MICROVOLTS = 10.0
# Beyond these (in µV, after conversion) no unit fits: refuse rather than guess.
PLAUSIBLE_EEG_MICROVOLTS = (1e-2, 1e4)
# Float audio peaking above this is not [-1, 1] audio (PCM integers stored as floats?).
MAX_AUDIO_PEAK = 4.0
# The data check reads this much per chunk, and lists this many bad rows.
SCAN_CHUNK_BYTES = 16 << 20
LISTED_ROWS = 10
SCAN_VERSION = 1
FINGERPRINT_CHUNK, FINGERPRINT_SAMPLES = 64 * 1024, 16
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


def check_subject_ids(root: str, split: str, subjects: int) -> None:
  """Every trial of ``split`` has a subject id in ``[0, subjects)``: a model that fits
  each subject (``model.encoding_subjects``) would otherwise train only its pooled fit
  on the others, silently."""
  path = find_split_files(root, split).get("subjects")
  if path is None:
    raise DataError(f"Split {split!r} under {root}: no subjects_{split}.h5, but "
                    f"model.encoding_subjects={subjects} fits each subject's trials.")
  ds = open_dataset(path)
  ids = np.asarray(ds[...]).reshape(-1)
  ds.file.close()
  bad = (ids < 0) | (ids >= subjects)
  if bad.any():
    raise DataError(f"{path}: subject ids must lie in [0, {subjects}) "
                    f"(model.encoding_subjects={subjects}); {int(bad.sum())} trials have "
                    f"{sorted(set(ids[bad].tolist()))[:5]}.")


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """What opening a split found: files, keys, sizes, units and scales."""
  split: str
  paths: Mapping[str, str]
  keys: Mapping[str, str]
  num_examples: int
  audio_length: int
  eeg_length: int
  eeg_channels: int
  eeg_scale: float        # multiply raw EEG by this to get microvolts
  # Defaults keep SplitInfos pickled by older code loadable.
  eeg_units: str = "microvolts"
  eeg_std: float | None = None          # median per-channel std, raw units
  eeg_units_from: tuple = ()            # splits pooled (empty: set by data.eeg_units)
  audio_scale: Mapping[str, float] | None = None   # per audio kind; 1 for floats


def _describe(ds: h5py.Dataset) -> str:
  return f"{ds.file.filename} [{ds.name.lstrip('/')}] with shape {ds.shape}"


def fingerprint(path: str) -> dict:
  """Size, mtime and a hash of sampled chunks of ``path`` (a full hash of GBs is slow)."""
  stat = os.stat(path)
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for offset in np.linspace(0, max(stat.st_size - FINGERPRINT_CHUNK, 0),
                              FINGERPRINT_SAMPLES).astype(np.int64):
      f.seek(int(offset))
      h.update(f.read(FINGERPRINT_CHUNK))
  return dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sampled_sha256=h.hexdigest())


# ----------------------------------------------------------------- dtypes ----

def audio_scale(ds: h5py.Dataset) -> float:
  """1 for float audio, ``2**-(bits-1)`` for signed PCM (int16: 1/32768), else DataError."""
  if ds.dtype.kind == "f":
    return 1.0
  if ds.dtype.kind == "i" and ds.dtype.itemsize in (1, 2, 4):
    return 2.0 ** -(8 * ds.dtype.itemsize - 1)
  raise DataError(
      f"{_describe(ds)}: audio dtype {ds.dtype} is not supported; expected float audio "
      f"in [-1, 1] or signed integer PCM (int8, int16, int32: scaled by its range, "
      f"int16 / 32768).")


def _check_eeg_dtype(ds: h5py.Dataset):
  if ds.dtype.kind not in "fiu":
    raise DataError(f"{_describe(ds)}: EEG dtype {ds.dtype} is not numeric; expected "
                    f"floats in volts, millivolts or microvolts.")


# ------------------------------------------------------------- data check ----

def _scan_file(path: str, kind: str) -> dict:
  """One pass over ``path``: rows with non-finite values; the audio's peak; the EEG's
  per-(trial, channel) stds, ignoring flat channels and all-zero trials."""
  ds = open_dataset(path)
  try:
    n = ds.shape[0]
    row_bytes = max(1, int(np.prod(ds.shape[1:])) * ds.dtype.itemsize)
    step = max(1, SCAN_CHUNK_BYTES // row_bytes)
    bad, peak, peak_row, stds, flat, zero_rows = [], 0.0, -1, [], 0, 0
    for start in range(0, n, step):
      x = np.asarray(ds[start:start + step])
      rows = x.reshape(len(x), -1)
      finite = np.isfinite(rows).all(1)
      bad += (start + np.flatnonzero(~finite)).tolist()
      keep = np.flatnonzero(finite)
      if not keep.size:
        continue
      if kind == "eegs":
        x = x[keep]                                     # [rows, T_eeg, C]
        zero_rows += int(np.sum(~rows[keep].any(1)))
        varying = x.max(1) != x.min(1)                  # flat channels carry no scale
        flat += int(np.sum(~varying))
        stds.append(np.std(x, axis=1, dtype=np.float64)[varying])
      else:
        r = rows[keep]
        row_peak = np.maximum(r.max(1).astype(np.float64), -r.min(1).astype(np.float64))
        i = int(np.argmax(row_peak))
        if row_peak[i] > peak:
          peak, peak_row = float(row_peak[i]), int(start + keep[i])
  finally:
    ds.file.close()
  out = dict(rows=n, nonfinite=bad[:LISTED_ROWS], nonfinite_count=len(bad))
  if kind == "eegs":
    stds = np.concatenate(stds) if stds else np.zeros(0)
    out.update(std_median=float(np.median(stds)) if stds.size else None,
               std_count=int(stds.size), flat_channels=flat, zero_trials=zero_rows)
  else:
    out.update(peak=peak, peak_row=peak_row)
  return out


def _load_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    logging.warning("Ignoring unreadable data check cache %s (%s); checking again.", path, e)
    return {}


def _save_json(path: str, data: dict):
  """Atomic write; a read-only folder only costs a re-check."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True))
  except OSError as e:
    logging.warning("Could not save the data check to %s (%s): it runs again next time.",
                    path, e)


def scan_files(paths: Mapping[str, str], cache_file: str | None) -> dict[str, dict]:
  """:func:`_scan_file` of each ``{kind: path}``, reusing ``cache_file``'s results for
  files whose fingerprint is unchanged (so each file version is read once)."""
  stored = _load_json(cache_file) if cache_file else {}
  files = stored.get("files", {}) if stored.get("version") == SCAN_VERSION else {}
  out, changed = {}, False
  for kind, path in paths.items():
    key, fp = os.path.abspath(path), fingerprint(path)
    entry = files.get(key)
    if not entry or entry.get("fingerprint") != fp or entry.get("kind") != kind:
      logging.info("Checking every value of %s once (cached in %s).", path, cache_file)
      entry = files[key] = dict(fingerprint=fp, kind=kind, result=_scan_file(path, kind))
      changed = True
    out[kind] = entry["result"]
  if changed and cache_file:
    _save_json(cache_file, dict(version=SCAN_VERSION, files=files))
  return out


def _check_values(paths: Mapping[str, str], keys: Mapping[str, str],
                  scans: Mapping[str, dict], scales: Mapping[str, float], check_finite: bool):
  """DataError for the first non-finite example, or float audio beyond MAX_AUDIO_PEAK."""
  for kind, scan in scans.items():
    where = f"{paths[kind]} [{keys[kind]}]"
    if check_finite and scan["nonfinite_count"]:
      rows = scan["nonfinite"]
      more = ", ..." if scan["nonfinite_count"] > len(rows) else ""
      raise DataError(
          f"{where} example {rows[0]}: contains non-finite values (NaN or inf) in the "
          f"{'EEG' if kind == 'eegs' else kind + ' audio'}; {scan['nonfinite_count']} of "
          f"{scan['rows']} examples affected (rows {rows}{more}). Expected finite values: "
          f"fix or drop these examples (data.check_finite=False skips this check).")
    if kind != "eegs" and scan["peak"] * scales[kind] > MAX_AUDIO_PEAK:
      raise DataError(
          f"{where} example {scan['peak_row']}: audio peaks at "
          f"{scan['peak'] * scales[kind]:.4g}; expected float audio in [-1, 1] (integer "
          f"PCM stored as floats? divide it by 32768 for 16-bit).")


# -------------------------------------------------------------- EEG units ----

_WARNED = set()


def units_from_std(std: float) -> str:
  """The unit whose typical EEG scale is nearest (in decades) a per-channel std."""
  return min(EEG_UNITS, key=lambda u: abs(np.log10(std * EEG_UNITS[u] / TYPICAL_EEG_MICROVOLTS)))


def _weighted_median(values, weights) -> float:
  order = np.argsort(values)
  cum = np.cumsum(np.asarray(weights, np.float64)[order])
  return float(np.asarray(values)[order][np.searchsorted(cum, cum[-1] / 2)])


def decide_eeg_units(units: str, stats: Mapping[str, tuple[str, dict]]) -> tuple[str, float | None]:
  """``(unit, median per-channel std)`` for a dataset, from ``{split: (path, EEG scan)}``.

  ``units`` is ``data.eeg_units``: ``"auto"`` decides from the pooled statistic (the
  same for every split; splits that disagree are an error), an explicit unit is used
  as is (with a warning when the data looks otherwise).
  """
  if units != "auto" and units not in EEG_UNITS:
    raise ValueError(f"data.eeg_units must be 'auto', 'volts', 'millivolts' or "
                     f"'microvolts', got {units!r}.")
  measured = {s: (p, r) for s, (p, r) in stats.items() if r["std_median"] is not None}
  pooled = (_weighted_median([r["std_median"] for _, r in measured.values()],
                             [r["std_count"] for _, r in measured.values()])
            if measured else None)
  files = ", ".join(p for p, _ in stats.values())
  if units != "auto":
    if pooled is not None and units_from_std(pooled) != units and (units, files) not in _WARNED:
      _WARNED.add((units, files))       # once per process, not on every open
      logging.warning("data.eeg_units=%s, but the EEG's median per-channel std %.3g (%s) "
                      "looks like %s.", units, pooled, files, units_from_std(pooled))
    return units, pooled
  if pooled is None:
    raise DataError(f"Cannot tell the EEG units: every channel of every trial in {files} "
                    f"is flat or non-finite. Set data.eeg_units (volts, millivolts or "
                    f"microvolts).")
  unit = units_from_std(pooled)
  low, high = PLAUSIBLE_EEG_MICROVOLTS
  if not low <= pooled * EEG_UNITS[unit] <= high:
    raise DataError(
        f"Cannot tell the EEG units of {files}: the median per-channel std is {pooled:.3g}, "
        f"not typical of volts (~1e-5), millivolts (~1e-2) or microvolts (~1..100). Set "
        f"data.eeg_units (volts, millivolts or microvolts).")
  per_split = {s: units_from_std(r["std_median"]) for s, (_, r) in measured.items()}
  if len(set(per_split.values())) > 1:
    raise DataError(
        "EEG units differ across splits: " + "; ".join(
            f"{p}: median per-channel std {r['std_median']:.3g} ({per_split[s]})"
            for s, (p, r) in measured.items())
        + ". Expected one unit for the dataset: convert the odd split(s).")
  return unit, pooled


def _dataset_eeg_stats(root: str, split: str, eeg_path: str, eeg_scan: dict,
                       dataset_splits: Sequence[str], cache_dir: str | None):
  """``{split: (EEG path, scan)}`` of the splits present under ``root``, in the order
  of ``dataset_splits`` (``split`` first when not among them)."""
  stats = {}
  for other in ([split] if split not in dataset_splits else []) + list(dataset_splits):
    if other == split:
      stats[split] = (eeg_path, eeg_scan)
      continue
    try:
      other_paths = find_split_files(root, other)
    except DataError:
      continue                    # not part of this dataset
    path = other_paths["eegs"]
    ds = open_dataset(path)
    usable = ds.ndim == 3 and ds.dtype.kind in "fiu"
    ds.file.close()
    if not usable:
      continue                    # reported when that split is opened
    folder = cache_dir or os.path.dirname(other_paths["noisy"])
    scan = scan_files({"eegs": path}, os.path.join(folder, f"data_check_{other}.json"))
    stats[other] = (path, scan["eegs"])
  return stats


def inspect_split(root: str, split: str, *, eeg_channels: int,
                  sample_rate: int | None, eeg_rate: int,
                  segment_seconds: float, hop_length: int | None = None,
                  eeg_units: str = "auto", check_finite: bool = True,
                  dataset_splits: Sequence[str] = ("train", "val", "test"),
                  cache_dir: str | None = None) -> SplitInfo:
  """Opens and validates a split: metadata first, then every value once (cached).

  The EEG units are decided for the dataset: from ``split`` and the
  ``dataset_splits`` present under ``root``. The data check's results are cached in
  ``<cache_dir or the split's folder>/data_check_<split>.json``.

  Raises:
    DataError: missing file or key, wrong rank or dtype, counts that differ across
      files, wrong channel count, lengths that do not match the sample rates
      and ``segment_seconds``, an empty split, non-finite values (with
      ``check_finite``), float audio beyond [-1, 1], EEG units that cannot be told
      or differ across splits.
  """
  if eeg_units != "auto" and eeg_units not in EEG_UNITS:
    raise ValueError(f"data.eeg_units must be 'auto', 'volts', 'millivolts' or "
                     f"'microvolts', got {eeg_units!r}.")
  paths = find_split_files(root, split)
  keys, shapes, scales = {}, {}, {}
  for kind, path in paths.items():
    ds = open_dataset(path)
    keys[kind] = ds.name.lstrip("/")
    shapes[kind] = ds.shape
    if kind in AUDIO_KINDS:
      if not (ds.ndim == 2 or (ds.ndim == 3 and ds.shape[2] == 1)):
        raise DataError(f"{_describe(ds)}: audio must be (N, T, 1) or (N, T).")
      scales[kind] = audio_scale(ds)
    elif kind == "eegs":
      if ds.ndim != 3:
        raise DataError(f"{_describe(ds)}: EEG must be (N, T_eeg, channels).")
      if ds.shape[2] != eeg_channels:
        raise DataError(
            f"{_describe(ds)}: {ds.shape[2]} EEG channels, but the config has "
            f"eeg_channels={eeg_channels} (last axis must be channels).")
      _check_eeg_dtype(ds)
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

  folder = cache_dir or os.path.dirname(paths["noisy"])
  scans = scan_files({k: p for k, p in paths.items() if k != "subjects"},
                     os.path.join(folder, f"data_check_{split}.json"))
  _check_values(paths, keys, scans, scales, check_finite)
  stats = _dataset_eeg_stats(root, split, paths["eegs"], scans["eegs"], dataset_splits,
                             cache_dir)
  unit, std = decide_eeg_units(eeg_units, stats)
  return SplitInfo(split=split, paths=paths, keys=keys, num_examples=n,
                   audio_length=audio_length, eeg_length=eeg_length,
                   eeg_channels=eeg_channels, eeg_scale=EEG_UNITS[unit], eeg_units=unit,
                   eeg_std=std, eeg_units_from=tuple(stats) if eeg_units == "auto" else (),
                   audio_scale=scales)


def inspect_split_from_config(config, split: str) -> SplitInfo:
  """:func:`inspect_split` with the sizes taken from a NeuroCodec config."""
  arch = config.codec.arch
  return inspect_split(
      config.root, split, eeg_channels=config.eeg_channels,
      sample_rate=arch.sample_rate, eeg_rate=config.data.eeg_rate,
      segment_seconds=config.data.segment_seconds, hop_length=codec.hop_length(arch),
      eeg_units=config.data.eeg_units, check_finite=config.data.check_finite,
      dataset_splits=(config.data.train_split, config.data.val_split,
                      config.data.test_split),
      cache_dir=config.codec.cache_dir)


class AADSource:
  """Random-access source over one split (grain ``RandomAccessDataSource``).

  Picklable: HDF5 handles are opened lazily in the process that reads, so grain
  worker processes each open their own. Only the requested ``fields`` are read.

  Example fields (all float32 unless noted):
    ``noisy``, ``clean``, ``unattended``: ``[1, T]`` audio (integer PCM scaled
    to [-1, 1));
    ``eeg``: ``[C, T_eeg]`` in microvolts;
    ``subject``: int32 scalar (-1 when ``subjects_<split>.h5`` is absent);
    ``index``: int32 scalar, the example's row in the split;
    ``noisy_codes``, ``clean_codes``, ``unattended_codes``: int32
    ``[n_codebooks, frames]`` from a precomputed codes file
    (see ``codec_bridge.precompute``);
    ``noisy_latent``, ``clean_latent``, ``unattended_latent``: float32
    ``[latent_dim, frames]``, the continuous encoder output (before quantization) of
    the mixture and of each talker, from the same file.
  """

  AUDIO_FIELDS = ("noisy", "clean", "unattended")
  LATENT_FIELDS = ("noisy_latent", "clean_latent", "unattended_latent")
  CODE_FIELDS = ("noisy_codes", "clean_codes", "unattended_codes") + LATENT_FIELDS

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
          try:
            handles[field] = h5py.File(self.codes_path, "r")[field]
          except (OSError, KeyError) as e:
            raise DataError(f"{self.codes_path} [{field}]: cannot read the codes cache "
                            f"({e}); rerun codec_bridge.precompute.") from e
      self._handles = handles
    return self._handles

  def _audio_scale(self, field: str) -> float:
    return (self.info.audio_scale or {}).get(field, 1.0)

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
        out[field] = self._checked(field, index, x) * np.float32(self._audio_scale(field))
      elif field == "eeg":
        x = np.asarray(handles[field][index], np.float32).T   # [C, T_eeg]
        out[field] = self._checked(field, index, x) * np.float32(self.info.eeg_scale)
      elif field == "subject":
        h = handles.get("subject")
        out[field] = np.int32(-1 if h is None else np.asarray(h[index]).reshape(()))
      elif field == "index":
        out[field] = np.int32(index)
      elif field in self.LATENT_FIELDS:
        out[field] = self._checked(field, index, np.asarray(handles[field][index], np.float32))
      else:
        out[field] = np.asarray(handles[field][index], np.int32)
    return out


def describe_eeg_units(info: SplitInfo) -> str:
  """The EEG unit decision and its grounds, for the log and run manifests."""
  unit = {"volts": "volts -> microvolts (x1e6)", "millivolts": "millivolts -> microvolts "
          "(x1e3)", "microvolts": "microvolts (x1)"}[info.eeg_units]
  std = "no varying channel" if info.eeg_std is None else f"{info.eeg_std:.3g}"
  if info.eeg_units_from:
    return (f"EEG units {unit}, detected for the dataset: median per-channel std {std} "
            f"over splits {', '.join(info.eeg_units_from)} (data.eeg_units=auto)")
  return f"EEG units {unit}, set by data.eeg_units (median per-channel std {std})"


def describe_audio(info: SplitInfo) -> str:
  scaled = {k: s for k, s in (info.audio_scale or {}).items() if s != 1.0}
  return "".join(f", {k} integer PCM scaled by 1/{round(1 / s)}" for k, s in scaled.items())


def open_split(config, split: str, fields: Sequence[str] = ("noisy", "clean", "eeg"),
               codes_path: str | None = None) -> AADSource:
  """Validates ``split`` of ``config.root`` and returns its source; logs the units."""
  info = inspect_split_from_config(config, split)
  logging.info("Split %r: %d examples, audio %d samples%s, EEG %d x %d, %s.", split,
               info.num_examples, info.audio_length, describe_audio(info),
               info.eeg_channels, info.eeg_length, describe_eeg_units(info))
  return AADSource(info, fields=fields, codes_path=codes_path,
                   check_finite=config.data.check_finite)
