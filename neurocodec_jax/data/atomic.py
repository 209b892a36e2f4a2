"""Writing a dataset folder atomically: build it in a temporary sibling, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_directory(out: str, overwrite: bool = False):
  """Yields a temporary folder that replaces ``out`` when the block succeeds.

  The temporary folder sits next to ``out`` (same filesystem, so the rename is
  atomic) and is removed if the block raises: ``out`` is complete or untouched.
  Raises FileExistsError if ``out`` exists and ``overwrite`` is False.
  """
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp-", dir=parent)
  try:
    yield tmp
    if os.path.exists(out):
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
