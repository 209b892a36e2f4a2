"""DTU dataset reader (Fuglsang, Dau & Hjortkjaer 2017, NeuroImage 156; Zenodo 1199011).

18 subjects, 60 two-talker trials of ~50 s each (plus single-talker trials), a male
and a female Danish talker at +-60 degrees in three acoustic conditions, attending
to one of them per trial; 64-channel BioSemi EEG at 512 Hz. Source layout::

  SRC/EEG/S<n>.mat       continuous raw EEG (MATLAB v5 or v7.3: both read by
                         pymatreader, both in the tests' fixtures), variables:
      data.eeg           {1x1 cell} [time, 73] 64 EEG (A1..B32 = Fp1..O2), EXG1,
                         EXG2 (mastoids), EXG3-EXG8 (EOG, unused), Status;
                         microvolts (FieldTrip's BioSemi convention; no source read
                         states it: the reader checks the scale)
      data.fsample.eeg   512 (any other rate is an error naming the field)
      data.dim.chan.eeg  channel labels (optional; positions are used without)
      data.event.eeg     struct array: .sample (1-based sample), .value (trigger);
                         onsets (values = expinfo.trigger, in row order) alternate
                         with trial offsets
      expinfo            a MATLAB table, one row per trial: trigger, n_speakers,
                         wavfile_male, wavfile_female, attend_mf (1 male, 2 female),
                         attend_lr, acoustic_condition
  SRC/AUDIO/*.wav        the talkers' stories (44.1 kHz), named by expinfo
  SRC/DATA_preproc/S<n>_data_preproc.mat   optional, used only as a check (below)

Verified against:

- ``preproc_data.m``, the COCOHA-toolbox script that writes ``DATA_preproc``'s
  ``S<n>_data_preproc.mat`` from ``EEG/S<n>.mat`` and ``AUDIO`` (a public copy found
  in the code index; the Zenodo record's own copy was not seen): ``events = cat(1,data.event.eeg.value{:})``
  with ``events(1:2:end) == expinfo.trigger`` (every other event is a trial onset,
  in expinfo's row order; the ones between are offsets); ``data.fsample.eeg``;
  channels ``EXG3``-``EXG8`` and ``Status`` dropped, ``EXG3/5`` and ``EXG4/7`` as EOG;
  ``story_names = [expinfo.wavfile_male expinfo.wavfile_female]`` indexed by
  ``attend_mf`` (1 male, 2 female) for the attended talker; single-talker rows have
  an empty ``wavfile_female``.
- TorchEEG's ``DTUDataset`` (torcheeg/datasets/module/auditory_attention/dtu.py):
  ``data.eeg``, ``data.fsample.eeg``, ``data.dim.chan.eeg`` (names incl. ``EXG1``..
  ``EXG8``, ``Status``), ``data.event.eeg.sample/value``; each trial runs from the
  event matching its ``expinfo.trigger`` to the next offset (191; 192 for subject 8);
  rows with an empty ``wavfile_female`` skipped; ``expinfo`` read from
  ``S<n>.csv`` written by ``writetable(expinfo, 'S<n>.csv')``. Its
  ``DTUProcessedDataset`` docstring: channel 65 right, 66 left mastoid.
- Public Python loaders of ``EEG/S<n>.mat`` (73 columns: 64 EEG + 8 EXG + Status).

Here each trial runs from its onset to the next event after it (the offset), cut
to the shorter of that and its two wavs.

``expinfo`` is a MATLAB *table*, which neither scipy nor pymatreader can decode. It
is taken, in order, from: the .mat when it is a plain struct (e.g. after
``expinfo = table2struct(expinfo)``); a sidecar next to the .mat,
``EEG/S<n>_expinfo.csv`` (or ``.txt``/``.tsv``; comma, tab or single-space separated
as writetable writes them, a header row with the column names; lower-case
``s<n>_expinfo.txt`` too) or
TorchEEG's ``EEG/S<n>.csv``, written once in MATLAB with ``load('S1.mat','expinfo');
writetable(expinfo,'S1_expinfo.csv')``; else mat-io (``pip install mat-io``), whose
``matio.load_from_mat`` documents reading MATLAB tables as pandas DataFrames (not
tried on the published files: mat-io is not installed here). Python sees the table
only as MATLAB's object reference (scipy: a ``MatlabOpaque`` under the key
``'None'`` naming ``expinfo``, class ``table``; pymatreader on v7.3: the uint32
reference, its dataset's ``MATLAB_class`` ``table``): with neither an export nor
mat-io, the error names the file and the variable and gives the export above.

A Python-readable copy of the attended talker exists in ``DATA_preproc``:
``preproc_data.m`` overwrites each onset's event value with ``expinfo.attend_mf``,
keeps the events of value 1 or 2, and drops the single-talker trials, so
``data.event.eeg(k).value`` of ``S<n>_data_preproc.mat`` is the attend_mf of the
k-th two-talker row, and ``wavA``/``wavB`` are the attended/unattended talkers'
*envelopes* at 64 Hz (``co_auditoryfilterbank``, ``.^0.3``), not audio. The wav
names are not in that file, so it cannot replace expinfo; when present it checks
the expinfo's attend_mf (a mismatch is an error naming both files; events that are
not one value per two-talker row skip the check, noted in the provenance, since
that layout is inferred from the script, not seen).

Preprocessing, the same recipe as the Cocktail Party reader (:mod:`.cocktail`): the
continuous recording is resampled to ``eeg_rate`` (polyphase, with its anti-alias
filter), band-passed 0.1-45 Hz (zero-phase FIR), flat/noisy channels interpolated
by spherical splines on the ``biosemi64`` montage, re-referenced to the mean of the
mastoids (EXG1, EXG2), then cut at each two-talker trial's onset to the shorter of
the trial (up to its next event) and its two wavs. Filtering the continuous record
before cutting keeps filter edges out of the trials. The two wavs are each
RMS-normalised and summed (0 dB): the dry talkers, without the room acoustics of
the presentation (``acoustic_condition`` is kept in the provenance).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import warnings
from typing import Collection, Iterator

import numpy as np

from neurocodec_jax.data.prepare.cocktail import (
    bandpass, crop_align, detect_bad, eeg_settings, field, interpolate, matrix, mix,
    read_mat, read_wav, rereference, resample, scalar)
from neurocodec_jax.data.prepare.recording import DatasetError, Recording

SOURCE = dict(name="EEG and audio dataset for auditory attention decoding (Fuglsang, "
                   "Dau & Hjortkjaer 2017, NeuroImage 156:435)",
              doi="10.5281/zenodo.1199011", url="https://zenodo.org/records/1199011",
              # A Zenodo record id names one published version of a record; no other
              # version label was seen in the sources read.
              record="Zenodo 1199011", version="Zenodo record 1199011 (as published)")
PREPROCESSING = (
    "EEG (EEG/S<n>.mat, 512 Hz): resampled to the EEG rate, 0.1-45 Hz zero-phase FIR, "
    "flat/noisy channels interpolated by spherical splines on biosemi64, mastoid "
    "(EXG1, EXG2) reference, cut at each two-talker trial's trigger; the band and "
    "reference follow the 'eeg' settings only when changed from their defaults. Audio: "
    "the dry male and female wavs of expinfo, each at RMS 0.05 (lowered together if "
    "the sum would pass 0.99), mixture = their sum, resampled to the codec rate.")
N_EEG = 64
RAW_RATE = 512              # data.fsample.eeg of the release's EEG/S<n>.mat (BioSemi)
MASTOID_COLUMNS = (64, 65)  # 0-based EXG1, EXG2
EXPINFO_COLUMNS = ("trigger", "wavfile_male", "wavfile_female", "attend_mf")
_SUBJECT_RE = re.compile(r"^S(\d+)\.mat$")


def _subject_files(src: str) -> list[tuple[int, str]]:
  eeg_dir = os.path.join(src, "EEG")
  if not os.path.isdir(eeg_dir):
    raise DatasetError(f"{src}: no EEG folder (expected {eeg_dir}/S<n>.mat).")
  out = sorted((int(m.group(1)), os.path.join(eeg_dir, f)) for f in os.listdir(eeg_dir)
               if (m := _SUBJECT_RE.match(f)))
  if not out:
    raise DatasetError(f"{eeg_dir}: no S<n>.mat files.")
  return out


def list_subjects(src: str, **options) -> list[str]:
  """Subject ids (``"S1"``, ...) in the order :func:`iter_recordings` yields."""
  return [f"S{n}" for n, _ in _subject_files(src)]


def _text(v: object) -> str:
  """A MATLAB char/cell entry as a str ('' for empty arrays and NaN)."""
  if isinstance(v, str):
    return v.strip()
  a = np.asarray(v)
  if a.size == 0 or (a.dtype.kind == "f" and np.isnan(a).all()):
    return ""
  return str(a.reshape(-1)[0]).strip() if a.size == 1 else "".join(map(str, a.reshape(-1)))


def _sidecar(path: str) -> str | None:
  """The exported expinfo next to ``EEG/S<n>.mat``: ``S<n>_expinfo.{csv,txt,tsv}``
  (also lower-case ``s<n>_expinfo.txt``, the space-separated name a public TFDS
  builder reads) or ``S<n>.csv`` (TorchEEG's ``writetable(expinfo, 'S<n>.csv')``)."""
  stem = os.path.splitext(path)[0]
  for ext in (".csv", ".txt", ".tsv"):
    for cand in (stem + "_expinfo" + ext,
                 os.path.join(os.path.dirname(stem), os.path.basename(stem).lower()
                              + "_expinfo" + ext)):
      if os.path.isfile(cand):
        return cand
  return stem + ".csv" if os.path.isfile(stem + ".csv") else None


def _frame_columns(table: object) -> dict[str, list] | None:
  """A pandas-like DataFrame's columns as lists (None for anything else)."""
  if not hasattr(table, "columns") or not hasattr(table, "__getitem__"):
    return None
  return {str(c): list(table[c]) for c in table.columns}


def _expinfo_via_matio(path: str) -> dict[str, list] | None:
  """``expinfo`` decoded by mat-io (``pip install mat-io``; ``matio.load_from_mat``
  returns MATLAB tables as pandas DataFrames, per its documentation), or None when
  mat-io is not installed or cannot read it. Not exercised on the published files."""
  try:
    import matio  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  try:
    table = matio.load_from_mat(path, variable_names=["expinfo"]).get("expinfo")
  except Exception:  # pylint: disable=broad-except
    return None
  return _frame_columns(table)


def _read_sidecar(path: str) -> dict[str, list]:
  with open(path, newline="") as f:
    text = f.read()
  lines = [ln for ln in text.splitlines() if ln.strip()]
  if not lines:
    raise DatasetError(f"{path}: empty expinfo table.")
  # One character separates fields, as writetable writes them (and pandas'
  # read_csv(delimiter=' ') reads them): two spaces in a row enclose an empty field,
  # e.g. a single-talker row's empty wavfile_female.
  delim = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else " ")
  rows = list(csv.reader(lines, delimiter=delim))
  header = [h.strip().strip('"') for h in rows[0]]
  cols: dict[str, list] = {h: [] for h in header}
  for row in rows[1:]:
    row = row + [""] * (len(header) - len(row))  # trailing empty wav names
    for h, v in zip(header, row):
      cols[h].append(v.strip().strip('"'))
  return cols


# Set in a .mat's variables when the file was readable only without expinfo.
_UNREADABLE = "__expinfo_unreadable__"


def _matlab_object(value: object) -> tuple[str | None, str | None] | None:
  """``(variable name, class)`` of a MATLAB class instance as pymatreader passes on
  scipy's ``MatlabOpaque`` (a dict of its record: scipy < 1.18 ``s0`` name, ``s1``
  ``'MCOS'``, ``s2`` class; scipy >= 1.18 ``_TypeSystem``, ``_Class``, no name, per
  pymatreader's ``_get_mcos_class_name``), else None."""
  if not isinstance(value, dict):
    return None
  def text(v):
    v = v[0] if isinstance(v, (list, tuple)) and v else v
    return v.decode(errors="replace") if isinstance(v, bytes) else (None if v is None else str(v))
  if text(value.get("s1")) == "MCOS":
    return text(value.get("s0")), text(value.get("s2"))
  if text(value.get("_TypeSystem")) == "MCOS":
    return None, text(value.get("_Class"))
  return None


def _expinfo_class(path: str, m: dict) -> str | None:
  """The MATLAB class of ``expinfo`` when the .mat holds it as an object (the
  published table), else None. scipy files a v5 object under the key ``'None'``,
  its name in the record; pymatreader reads a v7.3 object as its uint32 reference,
  so there the class is the dataset's ``MATLAB_class`` attribute."""
  e = m.get("expinfo")
  for v in [e] if e is not None else m.values():
    obj = _matlab_object(v)
    if obj is not None and obj[0] in ("expinfo", None):
      return obj[1] or "object"
  if isinstance(e, np.ndarray) and e.dtype.kind in "ui":
    try:
      import h5py  # pylint: disable=g-import-not-at-top
      with h5py.File(path, "r") as f:
        cls = f["expinfo"].attrs.get("MATLAB_class")
        decode = f["expinfo"].attrs.get("MATLAB_object_decode")
    except Exception:  # pylint: disable=broad-except   # not HDF5 (v5): a plain array
      return None
    if decode is not None and cls is not None:
      return cls.decode() if isinstance(cls, bytes) else str(cls)
  return None


def _table_error(path: str, what: str) -> DatasetError:
  """The error for an ``expinfo`` no Python reader here can decode, saying what to do."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return DatasetError(
      f"{path}: variable 'expinfo' is {what}: the published expinfo is a MATLAB table, "
      f"which scipy and pymatreader cannot decode, and no exported copy was found "
      f"(expected {os.path.splitext(path)[0]}_expinfo.csv or {stem}.csv). Export it once "
      f"per subject in MATLAB (README, Data: DTU): load('{stem}.mat','expinfo'); "
      f"writetable(expinfo,'{stem}_expinfo.csv'), saved next to the .mat; or install "
      f"mat-io, which documents reading MATLAB tables.")


def _expinfo(path: str, m: dict) -> tuple[dict[str, list], str]:
  """The trial table as columns, from the .mat's ``expinfo`` or the sidecar."""
  side = _sidecar(path)
  e = m.get("expinfo")
  object_class = _expinfo_class(path, m)
  is_object = object_class is not None
  unreadable = bool(m.get(_UNREADABLE))
  if is_object or unreadable:
    e = None                 # a reference to undecodable subsystem data, not a struct
  if isinstance(e, list) and e and all(isinstance(r, dict) for r in e):  # struct array
    e = {k: [r.get(k) for r in e] for k in e[0]}
  if isinstance(e, dict) and all(c in e for c in EXPINFO_COLUMNS):
    cols, origin = e, f"{path}: expinfo"
  elif side is not None:
    cols, origin = _read_sidecar(side), side
  elif isinstance(e, dict):  # a struct lacking columns: the check below names them
    cols, origin = e, f"{path}: expinfo"
  elif ((e is not None or is_object or unreadable) and
        (matio_cols := _frame_columns(e) or _expinfo_via_matio(path)) is not None):
    cols, origin = matio_cols, f"{path}: expinfo"
  elif is_object or unreadable:
    raise _table_error(path, f"a MATLAB {object_class} object" if is_object else
                      "unreadable (the file reads only without it)")
  elif e is None:
    raise DatasetError(f"{path}: missing variable 'expinfo' and no sidecar "
                       f"{os.path.splitext(path)[0]}_expinfo.csv.")
  else:
    raise _table_error(path, f"not readable as a struct ({type(e).__name__})")
  for c in EXPINFO_COLUMNS:
    if c not in cols:
      raise DatasetError(f"{origin}: missing column '{c}' (found {sorted(cols)}).")
  cols = {k: v if isinstance(v, list) else list(np.atleast_1d(np.asarray(v, dtype=object))
                                                 .reshape(-1)) for k, v in cols.items()}
  n = len(cols["trigger"])
  for c in EXPINFO_COLUMNS:
    if len(cols[c]) != n:
      raise DatasetError(f"{origin}: column '{c}' has {len(cols[c])} rows, expected {n}.")
  return cols, origin


def _attended(cols: dict[str, list], origin: str) -> dict[int, int]:
  """``{row index: attend_mf}`` (1 male, 2 female) of the two-talker rows."""
  out = {}
  for i in range(len(cols["trigger"])):
    if not _text(cols["wavfile_male"][i]) or not _text(cols["wavfile_female"][i]):
      continue  # single-talker trial
    try:
      attend = int(float(_text(cols["attend_mf"][i]) or "nan"))
    except ValueError:
      attend = 0
    if attend not in (1, 2):
      raise DatasetError(f"{origin}: row {i + 1} 'attend_mf' is "
                         f"{cols['attend_mf'][i]!r}, expected 1 (male) or 2 (female).")
    out[i] = attend
  return out


def _numbers(value: object) -> list[float]:
  """The numbers of a MATLAB cell/struct-array field as read (nested lists/arrays,
  one number per element)."""
  out = []
  for v in np.atleast_1d(np.asarray(value, dtype=object)).reshape(-1):
    while isinstance(v, (list, tuple)) or (isinstance(v, np.ndarray) and v.size == 1
                                           and v.dtype == object):
      v = v[0] if not isinstance(v, np.ndarray) else v.reshape(-1)[0]
    out.append(float(np.asarray(v, dtype=np.float64).reshape(-1)[0]))
  return out


def _check_preproc(src: str, n: int, attends: dict[int, int], origin: str) -> str | None:
  """Checks the expinfo's attend_mf against ``DATA_preproc/S<n>_data_preproc.mat``
  when that file is present; returns its path relative to ``src`` (None if absent;
  with "not checked (why)" when its events are not one value per two-talker row).
  Different values are an error.

  The dataset's ``preproc_data.m`` sets each trial onset's event value to
  ``expinfo.attend_mf``, keeps the events of value 1 or 2, cuts the trials there and
  drops the single-talker ones: ``data.event.eeg(k).value`` is the attend_mf of the
  k-th two-talker expinfo row (a Python-readable copy of the attended talker; the
  wav names are not in that file)."""
  rel = os.path.join("DATA_preproc", f"S{n}_data_preproc.mat")
  path = os.path.join(src, rel)
  if not os.path.isfile(path):
    return None
  data = field(read_mat(path, ["data"]), "data", path)
  ev = field(field(data, "event", path, "data."), "eeg", path, "data.event.")
  if isinstance(ev, list):  # a struct array read as a list of structs
    ev = {"value": [e.get("value") if isinstance(e, dict) else None for e in ev]}
  expected = [attends[i] for i in sorted(attends)]
  try:
    values = _numbers(field(ev, "value", path, "data.event.eeg."))
  except (TypeError, ValueError, IndexError, DatasetError) as e:
    # The layout is inferred from the script, not seen: an unexpected one skips the
    # check rather than blocking the data.
    return f"{rel}: not checked (data.event.eeg.value unreadable: {e})"
  if len(values) != len(expected):
    return (f"{rel}: not checked ({len(values)} event values for {len(expected)} "
            f"two-talker rows)")
  got = [int(v) if v == v else None for v in values]
  if got != expected:
    raise DatasetError(
        f"{path}: field 'data.event.eeg.value' (the attended talker of each two-talker "
        f"trial, 1 male, 2 female) is {got}, but {origin} gives "
        f"attend_mf {expected} for its two-talker rows: the expinfo table does not "
        f"belong to this subject, or is out of order.")
  return rel


def _events(path: str, data: dict) -> tuple[np.ndarray, np.ndarray]:
  ev = field(field(data, "event", path, "data."), "eeg", path, "data.event.")
  try:
    sample = np.asarray(field(ev, "sample", path, "data.event.eeg."),
                        dtype=np.float64).reshape(-1)
    value = np.asarray([float(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size else np.nan
                        for v in np.atleast_1d(np.asarray(
                            field(ev, "value", path, "data.event.eeg."), dtype=object))])
  except (TypeError, ValueError) as e:
    raise DatasetError(f"{path}: fields 'data.event.eeg.sample'/'value' are not numeric "
                       f"({e}); expected sample numbers and trigger codes.") from None
  if sample.shape != value.shape:
    raise DatasetError(f"{path}: field 'data.event.eeg.sample' has {sample.size} entries, "
                       f"'data.event.eeg.value' {value.size}; expected one each per event.")
  return sample - 1, value  # MATLAB samples are 1-based


def _channel_names(path: str, data: dict, n_cols: int) -> list[str] | None:
  chan = data
  for key in ("dim", "chan", "eeg"):
    chan = chan.get(key) if isinstance(chan, dict) else None
  if chan is None:
    return None
  if isinstance(chan, list) and chan and isinstance(chan[0], list):
    chan = chan[0]
  names = [_text(c) for c in np.atleast_1d(np.asarray(chan, dtype=object)).reshape(-1)]
  if len(names) != n_cols:
    raise DatasetError(f"{path}: field 'data.dim.chan.eeg' has {len(names)} labels, "
                       f"expected {n_cols} (one per column of 'data.eeg').")
  return names


def _read_subject(path: str, m: dict, eeg_rate: int, l_freq: float | None,
                  h_freq: float | None, reference: str, z: float):
  """Continuous preprocessed EEG ``[time, 64]`` at ``eeg_rate``, event samples
  rescaled to it, event values, and facts for the provenance."""
  data = field(m, "data", path)
  eeg = field(data, "eeg", path, "data.")
  if isinstance(eeg, list):  # 1x1 cell holding the continuous recording
    if len(eeg) != 1:
      raise DatasetError(f"{path}: field 'data.eeg' is a cell of {len(eeg)} entries, "
                         f"expected one continuous recording (EEG/S<n>.mat).")
    eeg = eeg[0]
  eeg = matrix(eeg, path, "data.eeg")
  if eeg.shape[1] < 66:
    raise DatasetError(f"{path}: field 'data.eeg' has {eeg.shape[1]} columns, expected "
                       f"at least 66 (64 EEG, EXG1 and EXG2 mastoids).")
  rate = scalar(field(field(data, "fsample", path, "data."), "eeg", path,
                      "data.fsample."), path, "data.fsample.eeg")
  # Any rate would resample, but EEG/S<n>.mat is published at one rate: another
  # means another file (e.g. a re-saved or DATA_preproc's 64 Hz one), not this layout.
  if rate != RAW_RATE:
    raise DatasetError(f"{path}: field 'data.fsample.eeg' is {rate:g}, expected "
                       f"{RAW_RATE} (the DTU release's raw EEG rate, EEG/S<n>.mat).")
  names = _channel_names(path, data, eeg.shape[1])
  mastoid_cols = list(MASTOID_COLUMNS)
  if names is not None and {"EXG1", "EXG2"} <= {n.upper() for n in names}:
    upper = [n.upper() for n in names]
    mastoid_cols = [upper.index("EXG1"), upper.index("EXG2")]
  sample, value = _events(path, data)
  import mne
  montage_names = mne.channels.make_standard_montage("biosemi64").ch_names
  x = np.concatenate([eeg[:, :N_EEG], eeg[:, mastoid_cols]], axis=1)
  del eeg
  data["eeg"] = None  # ~1 GB per subject as float64: keep one copy alive, not three
  x = x - x.mean(axis=0)  # BioSemi DC offsets: keep them out of the resampler's edges
  x = bandpass(resample(x, rate, eeg_rate), eeg_rate, l_freq, h_freq)
  brain, mastoids = x[:, :N_EEG], x[:, N_EEG:]
  sd = np.median(brain.std(axis=0))
  if not 0.1 <= sd <= 1000:
    raise DatasetError(f"{path}: field 'data.eeg' has a median channel std of {sd:.3g} "
                       f"after filtering, expected microvolts (0.1-1000).")
  bad = detect_bad(brain, z) if z > 0 else []
  if len(bad) > N_EEG // 2:
    raise DatasetError(f"{path}: {len(bad)} of {N_EEG} channels of 'data.eeg' are flat "
                       f"or noisy, too many to interpolate.")
  brain = interpolate(brain, eeg_rate, "biosemi64", montage_names, bad)
  brain, ref = rereference(brain, mastoids, montage_names + ["EXG1", "EXG2"], reference,
                           path, "data.eeg (EXG1, EXG2)")
  facts = dict(raw_rate=rate, bad_channels=[montage_names[c] for c in bad], reference=ref)
  return brain, sample * eeg_rate / rate, value, facts


def iter_recordings(src: str, *, sample_rate: int, eeg_rate: int,
                    subjects: Collection[str] | None = None, eeg: object | None = None,
                    bad_z: float = 5.0, **unused) -> Iterator[Recording]:
  """Yields one :class:`Recording` per two-talker trial, subjects in numeric order.

  Args:
    src: the dataset folder (holding ``EEG/`` and ``AUDIO/``).
    sample_rate: codec sample rate of the audio out.
    eeg_rate: EEG rate out (128).
    subjects: only these subject ids (``"S3"`` or ``"3"``); None for all.
    eeg: the framework's ``EEGSettings`` (band-pass edges, reference: ``average``,
      ``none``, a channel name, or ``mastoids``); None: the Cocktail Party
      recipe (0.1-45 Hz, mastoids).
    bad_z: robust z-score of a channel's log-std above which it is interpolated
      (flat channels always are); 0 disables the detection.

  Each recording: ``eeg [time, 64]`` microvolts at ``eeg_rate`` (BioSemi order,
  Fp1..O2); ``attended``, ``unattended``, ``noisy [time * sample_rate / eeg_rate]``.
  """
  l_freq, h_freq, reference = eeg_settings(eeg)
  wanted = None if subjects is None else {str(s).removeprefix("S") for s in subjects}
  audio_dir = os.path.join(src, "AUDIO")
  for n, path in _subject_files(src):
    if wanted is not None and str(n) not in wanted:
      continue
    # With a sidecar the (undecodable) table is not read at all; without one, a file
    # the reader chokes on as a whole is read again without it, so that the error
    # explains the table rather than failing on it.
    side = _sidecar(path)
    try:
      with warnings.catch_warnings():   # pymatreader's note on the table: explained below
        warnings.filterwarnings("ignore", "Complex objects", UserWarning)
        m = read_mat(path, ["data"] if side else None)
    except DatasetError:
      if side:
        raise
      m = dict(read_mat(path, ["data"]), **{_UNREADABLE: True})
    cols, origin = _expinfo(path, m)
    attends = _attended(cols, origin)
    checked = _check_preproc(src, n, attends, origin)
    x, onsets, values, facts = _read_subject(path, m, eeg_rate, l_freq, h_freq, reference,
                                             bad_z)
    if checked:
      facts["attend_mf_checked_against"] = checked
    cursor = 0
    for i in range(len(cols["trigger"])):
      male, female = _text(cols["wavfile_male"][i]), _text(cols["wavfile_female"][i])
      trigger = float(cols["trigger"][i])
      # Onsets are matched in order: the i-th row's onset is the next event whose
      # value is its trigger (unlisted events, e.g. offsets, are skipped).
      hits = np.flatnonzero(values[cursor:] == trigger)
      if not hits.size:
        raise DatasetError(f"{path}: no event in 'data.event.eeg.value' matches "
                           f"{origin} row {i + 1} trigger {trigger:g} (after event "
                           f"{cursor}).")
      k = cursor + int(hits[0])
      cursor = k + 1
      if not male or not female:
        continue  # single-talker trial
      attend = attends[i]
      start = int(round(onsets[k]))
      later = onsets[k + 1:][onsets[k + 1:] > onsets[k]]
      stop = int(round(later[0])) if later.size else x.shape[0]
      audio = {}
      for name in (male, female):
        wav = os.path.join(audio_dir, name)
        if not os.path.isfile(wav):
          raise DatasetError(f"{origin}: row {i + 1} names stimulus '{name}', not found "
                             f"in {audio_dir}.")
        audio[name] = read_wav(wav)
      att, unatt = (male, female) if attend == 1 else (female, male)
      seg, (a, u) = crop_align(x[start:stop], eeg_rate, [audio[att], audio[unatt]],
                               sample_rate)
      a, u, noisy, gain = mix(a, u, f"{path} trial {i + 1}")
      extra = {k2: _text(cols[k2][i]) for k2 in ("attend_lr", "acoustic_condition")
               if k2 in cols}
      yield Recording(
          subject=f"S{n}", trial=str(i + 1), eeg=seg.astype(np.float32),
          attended=a, unattended=u, noisy=noisy,
          stimuli=(os.path.splitext(att)[0], os.path.splitext(unatt)[0]),
          provenance=dict(
              eeg_file=os.path.relpath(path, src),
              expinfo=os.path.relpath(origin.split(":")[0], src),
              wav_files=[f"AUDIO/{att}", f"AUDIO/{unatt}"],
              wav_rates=[audio[att][1], audio[unatt][1]],
              attended_talker="male" if attend == 1 else "female",
              trigger=trigger, onset_s=round(start / eeg_rate, 4),
              band_hz=[l_freq, h_freq], talker_gain=float(gain), **facts, **extra),
      ).validate(sample_rate=sample_rate, eeg_rate=eeg_rate)


def add_arguments(group: argparse._ArgumentGroup) -> None:
  """The reader's command-line options (``--dtu_<option>``)."""
  group.add_argument("--dtu_bad_z", dest="bad_z", type=float, default=5.0,
                     help="interpolate channels whose robust z-score of log-std exceeds "
                          "this (flat ones always); 0 disables")
