"""Small fixture datasets in the published formats, from synthetic signals.

Shared by the tests of ``neurocodec_jax.data.prepare`` readers: speech-like talkers
(``data.synthetic.talker``), EEG-like noise in microvolts, and writers for each
format (``.mat`` v5 via scipy, v7.3 via h5py in MATLAB's layout, MATLAB objects
such as tables that Python cannot decode, wavs via soundfile, ``.npy``, CSV lists),
and the two-step training every prepared layout gets.
"""

from __future__ import annotations

import itertools
import os
import struct

import h5py
import numpy as np
import scipy.io
import soundfile

from neurocodec_jax.data import synthetic


def speech(rng: np.random.Generator, seconds: float, rate: int, rms: float = 0.1) -> np.ndarray:
  """float32 ``[seconds * rate]`` speech-like audio at ``rms``."""
  return (rms * synthetic.talker(rng, int(round(seconds * rate)), rate)).astype(np.float32)


def write_wav(path: str, audio: np.ndarray, rate: int):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  soundfile.write(path, audio, rate, subtype="PCM_16")


def eeg_noise(rng: np.random.Generator, seconds: float, rate: float, channels: int,
              microvolts: float = 10.0) -> np.ndarray:
  """float64 ``[time, channels]``: smoothed noise plus a slow drift, in microvolts."""
  n = int(round(seconds * rate))
  x = rng.standard_normal((n, channels))
  x = np.cumsum(x, axis=0) * 0.05 + x                  # some low-frequency power
  x += 20 * np.sin(2 * np.pi * 0.1 * np.arange(n) / rate)[:, None]
  return microvolts * x / x.std()


def cell(items) -> np.ndarray:
  """A MATLAB 1 x N cell array for scipy.io.savemat."""
  out = np.empty((1, len(items)), dtype=object)
  for i, item in enumerate(items):
    out[0, i] = item
  return out


# ------------------------------------------------------------ MATLAB formats ----

class StructArray(list):
  """A MATLAB 1 x N struct array (dicts with the same fields), for :func:`savemat73`."""


class MatlabObject:
  """A MATLAB class instance (e.g. a ``table``): stored, as MATLAB stores it, as a
  reference into the file's subsystem data, which no Python reader decodes."""

  def __init__(self, class_name: str):
    self.class_name = class_name


_OBJECT_ID = np.array([0xDD000000, 2, 1, 1, 1, 1], np.uint32)  # MATLAB's object reference


def savemat73(path: str, variables: dict):
  """A MATLAB v7.3 file (HDF5 with MATLAB's 512-byte header) as MATLAB writes it:
  numbers ``double`` (column-major, so a ``[time, channels]`` array is stored
  transposed), ``str`` as ``char``, dicts as structs (groups), lists as cells and
  :class:`StructArray` as struct arrays (references into ``#refs#``),
  :class:`MatlabObject` as an object reference (``MATLAB_object_decode`` 3)."""
  names = (f"r{i}" for i in itertools.count())
  with h5py.File(path, "w", userblock_size=512) as f:
    refs = f.create_group("#refs#")

    def ref(value):
      name = next(names)
      put(refs, name, value)
      return refs[name].ref

    def put(group, name, value):
      if isinstance(value, StructArray):
        g = group.create_group(name)
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        for key in value[0]:
          refs_of = np.array([[ref(v[key])] for v in value], dtype=h5py.ref_dtype)
          g.create_dataset(key, data=refs_of)
      elif isinstance(value, dict):
        g = group.create_group(name)
        g.attrs["MATLAB_class"] = np.bytes_("struct")
        for key, v in value.items():
          put(g, key, v)
      elif isinstance(value, list):
        d = group.create_dataset(name, data=np.array([[ref(v)] for v in value],
                                                     dtype=h5py.ref_dtype))
        d.attrs["MATLAB_class"] = np.bytes_("cell")
      elif isinstance(value, MatlabObject):
        d = group.create_dataset(name, data=_OBJECT_ID[None, :])
        d.attrs["MATLAB_class"] = np.bytes_(value.class_name)
        d.attrs["MATLAB_object_decode"] = np.int32(3)
      elif isinstance(value, str):
        if value:
          d = group.create_dataset(name, data=np.array([[ord(c)] for c in value], np.uint16))
          d.attrs["MATLAB_int_decode"] = np.int32(2)
        else:            # MATLAB stores an empty array's dimensions, flagged empty
          d = group.create_dataset(name, data=np.zeros(2, np.uint64))
          d.attrs["MATLAB_empty"] = np.uint8(1)
        d.attrs["MATLAB_class"] = np.bytes_("char")
      else:
        a = np.atleast_2d(np.asarray(value, np.float64))
        group.create_dataset(name, data=a.T).attrs["MATLAB_class"] = np.bytes_("double")

    for name, value in variables.items():
      put(f, name, value)
    if any(isinstance(v, MatlabObject) for v in variables.values()):
      # Where MATLAB keeps the objects' contents (opaque bytes here, as to any reader).
      blob = refs.create_dataset(next(names), data=np.zeros((1, 64), np.uint8))
      mcos = f.create_group("#subsystem#").create_dataset(
          "MCOS", data=np.array([[blob.ref]], dtype=h5py.ref_dtype))
      mcos.attrs["MATLAB_class"] = np.bytes_("FileWrapper__")
      mcos.attrs["MATLAB_object_decode"] = np.int32(3)
  header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: tests HDF5 schema 1.00 ."
  with open(path, "r+b") as f:
    f.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


def _element(dtype: int, payload: bytes) -> bytes:
  """A MAT v5 data element: tag (type, bytes) and the payload padded to 8 bytes."""
  return struct.pack("<II", dtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def append_matlab_object_v5(path: str, name: str, class_name: str):
  """Appends to a v5 ``.mat`` the variable ``name``, a MATLAB object of
  ``class_name`` as MATLAB saves one (an mxOPAQUE_CLASS element naming the ``MCOS``
  type system and the class, holding an object reference; the object's contents
  would be in the subsystem data). scipy reads it as a ``MatlabOpaque`` under the
  key ``'None'``, its name in field ``s0``: all a Python reader gets of a table."""
  mi_int8, mi_int32, mi_uint32, mi_matrix = 1, 5, 6, 14
  mx_opaque, mx_uint32 = 17, 13
  reference = _element(mi_matrix, _element(mi_uint32, struct.pack("<II", mx_uint32, 0))
                       + _element(mi_int32, struct.pack("<ii", len(_OBJECT_ID), 1))
                       + _element(mi_int8, b"") + _element(mi_uint32, _OBJECT_ID.tobytes()))
  body = (_element(mi_uint32, struct.pack("<II", mx_opaque, 0)) + _element(mi_int8, name.encode())
          + _element(mi_int8, b"MCOS") + _element(mi_int8, class_name.encode()) + reference)
  with open(path, "ab") as f:
    f.write(_element(mi_matrix, body))


# ------------------------------------------------------------------ KU Leuven ----

KUL_PARTS, KUL_TRACKS = (1, 2), (1, 2)


def kul_trial(rng, *, trial_id: int, part: int, attended_track: int, attended_ear: str,
              condition: str, seconds: float, repetition: bool = False,
              channels: int = 64, rate: int = 128) -> dict:
  """One ``trials{i}`` struct as the release stores it (see data/prepare/kul.py)."""
  prefix = "rep_" if repetition else ""
  other = 3 - attended_track
  files = {attended_track: f"{prefix}part{part}_track{attended_track}_{condition}.wav",
           other: f"{prefix}part{part}_track{other}_{condition}.wav"}
  left, right = ((files[attended_track], files[other]) if attended_ear == "L"
                 else (files[other], files[attended_track]))
  return {
      "RawData": {"Channels": np.arange(1, channels + 1, dtype=np.float64),
                  "EegData": eeg_noise(rng, seconds, rate, channels)},
      "FileHeader": {"SampleRate": float(rate), "ChannelCount": float(channels)},
      "TrialID": float(trial_id), "attended_ear": attended_ear,
      "stimuli": cell([left, right]).reshape(2, 1), "condition": condition,
      "experiment": 3.0 if repetition else 1.0, "part": float(part),
      "attended_track": float(attended_track), "repetition": float(repetition),
  }


def write_kul(src: str, *, subjects: int = 3, seconds: float = 6.0, wav_rate: int = 22050,
              story_seconds: tuple[float, float] = (7.0, 6.5), repetition: bool = True,
              edit=None, seed: int = 0) -> str:
  """A KU Leuven release in miniature under ``src``: ``S<n>.mat`` with 4 main trials
  (parts 1-2 x attended track 1-2, ears alternating, both conditions) and optionally
  one repetition trial each, and ``stimuli/`` dry and hrtf wavs of every part/track.
  ``edit(subject, trial_index, struct)`` may change a trial before it is saved."""
  rng = np.random.default_rng(seed)
  stimuli = os.path.join(src, "stimuli")
  for prefix in ("", "rep_"):
    for part in KUL_PARTS:
      for track in KUL_TRACKS:
        audio = speech(rng, story_seconds[track - 1], wav_rate)
        for condition in ("dry", "hrtf"):
          write_wav(os.path.join(stimuli, f"{prefix}part{part}_track{track}_{condition}.wav"),
                    audio, wav_rate)
  for s in range(1, subjects + 1):
    trials = []
    for k, (part, track) in enumerate([(1, 1), (2, 1), (1, 2), (2, 2)]):
      trials.append(kul_trial(rng, trial_id=k + 1, part=part, attended_track=track,
                              attended_ear="LR"[(k + s) % 2],
                              condition=("dry", "hrtf")[k % 2], seconds=seconds))
    if repetition:
      trials.append(kul_trial(rng, trial_id=9, part=1, attended_track=1, attended_ear="R",
                              condition="hrtf", seconds=seconds, repetition=True))
    if edit is not None:
      for i, t in enumerate(trials):
        edit(s, i, t)
    scipy.io.savemat(os.path.join(src, f"S{s}.mat"), {"trials": cell(trials)})
  return src


# ------------------------------------------------------------------- KUL-mix ----

def write_kulmix(src: str, *, subjects: int = 3, trials: int = 2, seconds: float = 8.0,
                 wav_rate: int = 8000, eeg_time_major: bool = True, seed: int = 0,
                 rows=None, audio_dir: str = "audio") -> str:
  """KUL-mix in miniature: ``mixture_data_list_2mix.csv`` (no header; split, subject,
  trial, target wav, target start, unused, interferer wav, interferer start, SNR dB,
  duration), ``eeg/S<s>Tra<t>.npy`` (64 channels at 128 Hz) and ``audio/*.wav``.
  Default rows per trial: train 0-4 s at 0 dB, val 4-6 s at 3 dB, test 6-8 s at -3 dB."""
  rng = np.random.default_rng(seed)
  for part in range(1, trials + 1):
    for track in (1, 2):
      write_wav(os.path.join(src, audio_dir, f"part{part}_track{track}_dry.wav"),
                speech(rng, seconds + 1, wav_rate), wav_rate)
  os.makedirs(os.path.join(src, "eeg"), exist_ok=True)
  lines = []
  for s in range(1, subjects + 1):
    for t in range(1, trials + 1):
      eeg = eeg_noise(rng, seconds, 128, 64).astype(np.float32)
      np.save(os.path.join(src, "eeg", f"S{s}Tra{t}.npy"), eeg if eeg_time_major else eeg.T)
      target, other = f"part{t}_track{1 + (s + t) % 2}_dry.wav", f"part{t}_track{2 - (s + t) % 2}_dry.wav"
      for split, start, snr, dur in rows or (("train", 0, 0, 4), ("val", 4, 3, 2),
                                             ("test", 6, -3, 2)):
        lines.append(f"{split},{s},{t},{target},{start},0,{other},{start},{snr},{dur}")
  with open(os.path.join(src, "mixture_data_list_2mix.csv"), "w") as f:
    f.write("\n".join(lines) + "\n")
  return src


# ------------------------------------------------------------ prepared layouts ----

def nothing_left(out) -> bool:
  """Neither ``out`` nor anything named after it (``out.partial``, a temporary
  sibling) exists: what a failed ``prepare`` must leave."""
  out = str(out)
  parent = os.path.dirname(out)
  return not [n for n in os.listdir(parent) if n.startswith(os.path.basename(out))]


def train_two_steps(root: str, workdir: str, eeg_channels: int, reuse=None):
  """Two steps of the tiny model on a prepared folder, latent losses only (as
  test_reliability_train), checked: the loop reached step 2 with finite parameters.
  Returns ``(config, result)``; ``reuse``: an earlier result's ``"run"`` whose
  compiled programs fit (same shapes), to skip compiling again."""
  import jax  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import training as loop  # pylint: disable=g-import-not-at-top
  from tests.test_reliability_train import config_for  # pylint: disable=g-import-not-at-top
  config = config_for(root, eeg_channels=eeg_channels, **{"train.max_steps": 2})
  result = loop.train_and_evaluate(config, workdir, reuse=reuse)
  assert result["step"] == 2
  assert all(np.isfinite(np.asarray(x)).all()
             for x in jax.tree.leaves(result["state"]["g"]["params"]))
  return config, result
