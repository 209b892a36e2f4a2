"""A user's own recordings, read into the model's units: a mixture wav and its EEG.

``read_mixture(path, sample_rate)``: wav, flac or ogg at any rate, downmixed and
resampled. ``read_eeg(path, ...)``: ``.npy``, ``.h5``, ``.mat`` and what MNE reads
(``.fif``, ``.edf``, ``.bdf``, ``.set``, ``.vhdr``), with its rate read from the file
(MNE's formats) or given, channels selected by name (MNE's formats), re-referenced,
band-passed and resampled as ``python -m neurocodec_jax.data.prepare`` does
(``prepare.signals.preprocess_eeg``), in microvolts, ``[channels, time]``.

Every problem raises :class:`RecordingError` naming the file, the field and what
was expected, before any model work.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import signal

from neurocodec_jax.data.hdf5 import EEG_UNITS, units_from_std

MNE_FORMATS = {".fif": "read_raw_fif", ".edf": "read_raw_edf", ".bdf": "read_raw_bdf",
               ".set": "read_raw_eeglab", ".vhdr": "read_raw_brainvision"}
ARRAY_FORMATS = (".npy", ".h5", ".hdf5", ".mat")
AUDIO_FORMATS = (".wav", ".flac", ".ogg")


class RecordingError(ValueError):
  """A recording that cannot be used; the message names the file, field and expectation."""


def read_mixture(path: str, sample_rate: int, min_seconds: float = 1.0) -> np.ndarray:
  """``[T]`` float32 mono audio at ``sample_rate``."""
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  ext = os.path.splitext(path)[1].lower()
  if ext not in AUDIO_FORMATS:
    raise RecordingError(f"{path}: mixture format {ext or '(none)'}; expected one of "
                         f"{', '.join(AUDIO_FORMATS)}.")
  if not os.path.exists(path):
    raise RecordingError(f"{path}: no such mixture file.")
  try:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
  except RuntimeError as e:
    raise RecordingError(f"{path}: not a readable audio file ({e}).") from None
  x = x.mean(1)
  if len(x) < min_seconds * rate:
    raise RecordingError(f"{path}: {len(x) / rate:.2f} s of audio; expected at least "
                         f"{min_seconds:g} s.")
  if not np.isfinite(x).all():
    raise RecordingError(f"{path}: the audio holds non-finite samples.")
  if rate != sample_rate:
    g = math.gcd(int(rate), int(sample_rate))
    x = signal.resample_poly(x, sample_rate // g, int(rate) // g)
  return np.asarray(x, np.float32)


def _array(path: str, key: str | None) -> np.ndarray:
  ext = os.path.splitext(path)[1].lower()
  if ext == ".npy":
    return np.load(path)
  if ext in (".h5", ".hdf5"):
    import h5py  # pylint: disable=g-import-not-at-top
    with h5py.File(path, "r") as f:
      names = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
      if key is None and len(names) != 1:
        raise RecordingError(f"{path}: datasets {names}; pass --eeg_key to name the EEG.")
      name = key or names[0]
      if name not in f:
        raise RecordingError(f"{path}: no dataset {name!r} (datasets: {names}).")
      return f[name][()]
  from neurocodec_jax.data.prepare.files import read_mat  # pylint: disable=g-import-not-at-top
  data = {k: v for k, v in read_mat(path).items() if not k.startswith("__")}
  arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray) and v.ndim == 2}
  if key is None and len(arrays) != 1:
    raise RecordingError(f"{path}: 2-D variables {sorted(arrays)}; pass --eeg_key to name "
                         f"the EEG.")
  name = key or next(iter(arrays))
  if name not in data:
    raise RecordingError(f"{path}: no variable {name!r} (variables: {sorted(data)}).")
  return np.asarray(data[name])


def read_eeg(path: str, *, channels: int, eeg_rate: int, rate: float | None = None,
             units: str = "auto", key: str | None = None, pick: list[str] | None = None,
             reference: str = "average", l_freq: float | None = 1.0,
             h_freq: float | None = 32.0) -> np.ndarray:
  """``[channels, time]`` float32 EEG in microvolts at ``eeg_rate``.

  Args:
    path: the EEG file.
    channels: the channel count the model was trained with (checked).
    eeg_rate: the model's EEG rate (the EEG is resampled to it).
    rate: the file's rate; read from MNE's formats, required for arrays.
    units: "auto" (from the median per-channel std, as the data check decides), or
      "volts", "millivolts", "microvolts"; MNE's formats are in volts.
    key: the dataset (.h5) or variable (.mat) holding the EEG when not the only one.
    pick: channel names to keep, in this order (MNE's formats).
    reference, l_freq, h_freq: as ``prepare`` (``prepare.signals.EEGSettings``).
  """
  from neurocodec_jax.data.prepare import signals  # pylint: disable=g-import-not-at-top
  ext = os.path.splitext(path)[1].lower()
  if ext not in MNE_FORMATS and ext not in ARRAY_FORMATS:
    raise RecordingError(f"{path}: EEG format {ext or '(none)'}; expected one of "
                         f"{', '.join(ARRAY_FORMATS + tuple(MNE_FORMATS))}.")
  if not os.path.exists(path):
    raise RecordingError(f"{path}: no such EEG file.")
  names = None
  if ext in MNE_FORMATS:
    import mne  # pylint: disable=g-import-not-at-top
    try:
      raw = getattr(mne.io, MNE_FORMATS[ext])(path, preload=True, verbose=False)
    except Exception as e:  # pylint: disable=broad-except  (MNE raises many kinds)
      raise RecordingError(f"{path}: MNE cannot read it ({e}).") from None
    raw.pick("eeg")
    if pick:
      missing = [c for c in pick if c not in raw.ch_names]
      if missing:
        raise RecordingError(f"{path}: channels {missing} not found (channels: {raw.ch_names}).")
      raw.pick(pick)
    if rate is not None and abs(rate - raw.info["sfreq"]) > 1e-6:
      raise RecordingError(f"{path}: sampling rate {raw.info['sfreq']} Hz in the file, "
                           f"{rate} Hz given.")
    rate, names = float(raw.info["sfreq"]), list(raw.ch_names)
    eeg, scale = raw.get_data().T, EEG_UNITS["volts"]          # [time, channels]
  else:
    if pick:
      raise RecordingError(f"{path}: channel names are known for MNE's formats only; "
                           f"select channels before saving the array.")
    if rate is None:
      raise RecordingError(f"{path}: an array holds no sampling rate; pass --eeg_rate.")
    eeg = np.asarray(_array(path, key), np.float64)
    if eeg.ndim != 2:
      raise RecordingError(f"{path}: EEG of shape {eeg.shape}; expected [channels, time] "
                           f"or [time, channels].")
    if eeg.shape[1] == channels and eeg.shape[0] != channels:
      pass                                                      # [time, channels]
    elif eeg.shape[0] == channels:
      eeg = eeg.T
    else:
      raise RecordingError(f"{path}: EEG of shape {eeg.shape}; the model takes {channels} "
                           f"channels.")
    if units == "auto":
      std = np.median(eeg.std(0))
      units = units_from_std(float(std)) if std > 0 else "microvolts"
    if units not in EEG_UNITS:
      raise RecordingError(f"{path}: units {units!r}; expected auto, volts, millivolts or "
                           f"microvolts.")
    scale = EEG_UNITS[units]
  if eeg.shape[1] != channels:
    raise RecordingError(f"{path}: {eeg.shape[1]} EEG channels; the model was trained with "
                         f"{channels} (select them with --eeg_channels).")
  if not np.isfinite(eeg).all():
    raise RecordingError(f"{path}: the EEG holds non-finite samples.")
  settings = signals.EEGSettings(l_freq=l_freq, h_freq=h_freq, reference=reference)
  try:
    settings.check(eeg_rate)
  except ValueError as e:
    raise RecordingError(f"{path}: {e}") from None
  out = signals.preprocess_eeg(eeg * scale, rate, eeg_rate=eeg_rate, settings=settings,
                               where=path, channel_names=names)
  return np.ascontiguousarray(out.T)
