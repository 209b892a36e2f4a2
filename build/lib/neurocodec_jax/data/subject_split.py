"""Split a pooled dataset into train/val/test by subject (the KUL protocol).

The original's KUL variant holds out whole subjects: the last subject is the
validation split, the second-to-last the test split, every other subject trains.
This tool turns one pooled split (all trials, with ``subjects_<name>.h5``) into the
standard layout, so training, precompute and evaluation read it like any other::

  python -m neurocodec_jax.data.subject_split --src data/kul_pooled --name all \\
      --out data/kul [--val_subjects 16] [--test_subjects 15]

reads ``<src>/<name>/{noisy,clean,eegs,subjects[,unattended]}_<name>.h5`` (or the flat
``<src>/..._<name>.h5``) and writes ``<out>/{train,val,test}/<kind>_<split>.h5``,
rows in their original order, each file's dataset keyed ``<kind>_<split>=``. The
output folder is written to a temporary folder and renamed, so it is complete or
absent; rows are copied in blocks with a progress bar.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import h5py
import numpy as np
from tqdm import tqdm

from neurocodec_jax.data.atomic import atomic_directory
from neurocodec_jax.data.hdf5 import DataError, find_split_files, open_dataset

SPLITS = ("train", "val", "test")
BLOCK_ROWS = 64


def assign(subjects: np.ndarray, val_subjects: Sequence[int] | None = None,
           test_subjects: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """``{split: row indices}``; default val = last subject id, test = second-to-last."""
  ids = np.unique(subjects)
  if val_subjects is None and test_subjects is None:
    if len(ids) < 3:
      raise DataError(f"A subject split needs at least 3 subjects, found {ids.tolist()}.")
    val_subjects, test_subjects = [ids[-1]], [ids[-2]]
  val, test = set(map(int, val_subjects or ())), set(map(int, test_subjects or ()))
  unknown = (val | test) - set(map(int, ids))
  if unknown or val & test or not val or not test:
    raise DataError(f"Bad subject split: val {sorted(val)}, test {sorted(test)} "
                    f"(must be non-empty, disjoint, among {ids.tolist()}).")
  rows = {"val": np.flatnonzero(np.isin(subjects, list(val))),
          "test": np.flatnonzero(np.isin(subjects, list(test)))}
  rows["train"] = np.flatnonzero(~np.isin(subjects, list(val | test)))
  if not len(rows["train"]):
    raise DataError(f"No training subjects left after val {sorted(val)}, test {sorted(test)}.")
  return rows


def split_by_subject(src: str, name: str, out: str, val_subjects=None, test_subjects=None,
                     overwrite: bool = False, progress: bool = True) -> dict[str, int]:
  """Writes the train/val/test layout to ``out``; returns the row count per split."""
  paths = find_split_files(src, name)
  if "subjects" not in paths:
    raise DataError(f"Split {name!r} under {src}: no subjects_{name}.h5; a subject "
                    f"split needs the (N,) subject id of every trial.")
  subjects = np.asarray(open_dataset(paths["subjects"])[...]).reshape(-1)
  rows = assign(subjects, val_subjects, test_subjects)
  with atomic_directory(out, overwrite) as tmp:
    total = len(paths) * len(subjects)
    with tqdm(total=total, desc="subject split", unit="row", disable=not progress) as bar:
      for kind, path in paths.items():
        ds = open_dataset(path)
        for split in SPLITS:
          idx = rows[split]
          os.makedirs(os.path.join(tmp, split), exist_ok=True)
          with h5py.File(os.path.join(tmp, split, f"{kind}_{split}.h5"), "w") as f:
            dst = f.create_dataset(f"{kind}_{split}=", (len(idx),) + ds.shape[1:], ds.dtype)
            for start in range(0, len(idx), BLOCK_ROWS):
              block = idx[start:start + BLOCK_ROWS]
              dst[start:start + len(block)] = ds[block]     # increasing indices
              bar.update(len(block))
        ds.file.close()
  return {split: len(r) for split, r in rows.items()}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--src", required=True, help="folder holding the pooled split")
  p.add_argument("--name", default="all", help="the pooled split's name (files *_<name>.h5)")
  p.add_argument("--out", required=True, help="output root (written atomically)")
  p.add_argument("--val_subjects", type=int, nargs="+", default=None)
  p.add_argument("--test_subjects", type=int, nargs="+", default=None)
  p.add_argument("--overwrite", action="store_true")
  args = p.parse_args(argv)
  counts = split_by_subject(args.src, args.name, args.out, args.val_subjects,
                            args.test_subjects, overwrite=args.overwrite)
  print(f"{args.out}: " + ", ".join(f"{k} {v} trials" for k, v in counts.items()))


if __name__ == "__main__":
  sys.exit(main())
