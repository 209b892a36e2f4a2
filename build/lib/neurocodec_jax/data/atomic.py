"""Atomic writes: a file or a dataset folder is built under a temporary sibling, then renamed."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil


@contextlib.contextmanager
def atomic_directory(out: str, overwrite: bool = False):
  """Yields a temporary folder that replaces ``out`` when the block succeeds.

  The temporary folder sits next to ``out`` (same filesystem, so the rename is
  atomic) and is removed if the block raises: ``out`` is complete or untouched. It
  gets the permissions of any new folder (0777 minus the umask), not mkdtemp's 0700.
  Raises FileExistsError if ``out`` exists and ``overwrite`` is False.
  """
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = _make_temporary(os.path.join(parent, os.path.basename(out) + ".tmp-"))
  try:
    yield tmp
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def _make_temporary(prefix: str) -> str:
  """A new folder ``<prefix><random>``; ``os.mkdir`` applies the umask, like ``mkdir``."""
  for _ in range(100):
    path = prefix + secrets.token_hex(4)
    try:
      os.mkdir(path)
      return path
    except FileExistsError:
      continue
  raise FileExistsError(f"could not create a temporary folder {prefix}*")


def write_text(path: str, text: str):
  """``path`` holds its old text or ``text``, never a part (temporary sibling + rename).

  The temporary name is unique per writer, and removed if the write fails; the new
  file gets the permissions of any new file (0666 minus the umask).
  """
  tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
  try:
    with open(tmp, "x") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
