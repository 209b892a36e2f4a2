"""Reading a dataset's source files, each failure a DatasetError naming file and field.

``.mat`` files go through pymatreader, which reads MATLAB v5 (scipy) and v7.3 (HDF5)
files into the same nested dicts and lists; wavs through soundfile.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from neurocodec_jax.data.prepare.recording import DatasetError

_MISSING = object()


def read_mat(path: str, variables: list[str] | None = None) -> dict[str, Any]:
  """``{variable: value}`` of a ``.mat`` file (v5 or v7.3): structs as dicts, cell
  arrays as lists, numeric arrays as numpy arrays, char arrays as ``str``."""
  import pymatreader  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise DatasetError(f"{path}: file not found.")
  try:
    data = pymatreader.read_mat(path, variable_names=variables)
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"{path}: cannot read as a MATLAB .mat file (v5 or v7.3): "
                       f"{type(e).__name__}: {e}.") from e
  for name in variables or ():
    if name not in data:
      raise DatasetError(f"{path}: no variable {name!r}; found "
                         f"{sorted(k for k in data if not k.startswith('__'))}.")
  return data


def as_list(value) -> list:
  """A MATLAB cell array or struct array as a list (a 1-element one loads unwrapped)."""
  if isinstance(value, list):
    return value
  if isinstance(value, np.ndarray) and value.dtype == object:
    return list(value.ravel())
  return [value]


def field(struct, dotted: str, where: str, default=_MISSING):
  """``struct["a"]["b"]`` for ``dotted="a.b"``; DatasetError naming ``where`` and the
  field when absent (unless ``default`` is given)."""
  value = struct
  for i, name in enumerate(dotted.split(".")):
    if not isinstance(value, dict) or name not in value:
      if default is not _MISSING:
        return default
      have = sorted(value) if isinstance(value, dict) else type(value).__name__
      parent = ".".join(dotted.split(".")[:i]) or "the struct"
      raise DatasetError(f"{where}: missing field {dotted!r} ({parent} has {have}).")
    value = value[name]
  return value


def scalar(value, what: str, where: str) -> float:
  """A numeric MATLAB scalar as a float; DatasetError otherwise."""
  try:
    arr = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError):
    arr = None
  if arr is None or arr.size != 1:
    raise DatasetError(f"{where}: field {what!r} is {value!r}, expected a number.")
  return float(arr.reshape(()))


def text(value, what: str, where: str) -> str:
  """A MATLAB char array as ``str``; DatasetError otherwise."""
  if isinstance(value, np.ndarray) and value.dtype.kind in "US" and value.size == 1:
    value = value.reshape(())[()]
  if not isinstance(value, str):
    raise DatasetError(f"{where}: field {what!r} is {value!r}, expected text.")
  return value


def read_wav(path: str, where: str) -> tuple[np.ndarray, int]:
  """``(float32 [samples], rate)``: a wav mixed to mono by averaging its channels.

  ``where`` says who asked for the file (e.g. ``"S1.mat: trials{3}.stimuli{1}"``).
  """
  import soundfile  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise DatasetError(f"{where}: stimulus file {path} not found.")
  try:
    audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
  except Exception as e:  # pylint: disable=broad-except
    raise DatasetError(f"{where}: cannot read {path} as audio ({e}).") from e
  if not audio.size:
    raise DatasetError(f"{where}: {path} holds no samples.")
  return audio.mean(axis=1), int(rate)
