"""Evaluation protocols: which windows go to train, val and test.

* ``within-trial``: each trial's windows split by time (train first, then val, then
  test). The field's common split, and a leaky one: train and test share the trial
  (session, stimulus, attended side), which deep models exploit (Rotaru et al. 2024,
  J. Neural Eng. 21:016017; the KU Leuven dataset's authors warn about it too).
  Allowed, with a warning.
* ``trial-held-out``: whole trials held out; every subject appears in every split.
* ``subject-held-out``: whole subjects held out (KUL's original protocol: the last
  subject validates, the second-to-last tests).
* ``recipe``: the split the source assigns itself (KUL-mix's mixture list).

``--exclude_repeated`` then drops windows whose speech (attended or unattended
stimulus id) is also heard in a held-out split: test stimuli leave val and train,
val stimuli leave train.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Sequence

import numpy as np

SPLITS = ("train", "val", "test")
PROTOCOLS = ("within-trial", "trial-held-out", "subject-held-out", "recipe")
LEAKY_WARNING = (
    "splits windows of the same trials between train and test: they share the "
    "session, the stimulus and the attended talker, which inflates scores (Rotaru et "
    "al. 2024, J. Neural Eng. 21:016017). Prefer --protocol trial-held-out or "
    "subject-held-out for results you report.")


@dataclasses.dataclass(frozen=True)
class Window:
  """One ``segment_seconds`` window of a recording (index ``recording``)."""
  recording: int
  subject: str
  trial: str
  unit: str                 # what trial-held-out keeps whole (Recording.unit)
  onset: float              # seconds from the recording's start
  eeg_start: int            # sample at the EEG rate
  audio_start: int          # sample at the codec rate
  stimuli: tuple[str, str]
  source_split: str | None = None


@dataclasses.dataclass(frozen=True)
class Protocol:
  """A protocol and its sizes; saved in ``manifest.json``.

  Held-out sizes: ``val_count``/``test_count`` trials per subject (trial-held-out) or
  subjects (subject-held-out) when set, else the fractions (of each trial's windows,
  of each subject's trials, or of the subjects; at least one). ``val_subjects`` /
  ``test_subjects`` name the held-out subjects of subject-held-out explicitly.
  """
  name: str = "trial-held-out"
  val_fraction: float = 0.1
  test_fraction: float = 0.1
  val_count: int | None = None
  test_count: int | None = None
  val_subjects: tuple[str, ...] = ()
  test_subjects: tuple[str, ...] = ()
  seed: int = 0
  exclude_repeated: bool = False

  def check(self):
    if self.name not in PROTOCOLS:
      raise ValueError(f"Unknown protocol {self.name!r}; expected one of {PROTOCOLS}.")
    for name in ("val_fraction", "test_fraction"):
      if not 0 <= getattr(self, name) < 1:
        raise ValueError(f"--{name} must be in [0, 1), got {getattr(self, name)}.")
    if self.val_fraction + self.test_fraction >= 1:
      raise ValueError("--val_fraction + --test_fraction must be below 1.")
    if (self.val_subjects or self.test_subjects) and self.name != "subject-held-out":
      raise ValueError("--val_subjects/--test_subjects need --protocol subject-held-out.")
    counts = (self.val_count, self.test_count)
    if any(c is not None for c in counts) and self.name not in ("trial-held-out",
                                                                 "subject-held-out"):
      raise ValueError("--val_count/--test_count (held-out trials or subjects) need "
                       "--protocol trial-held-out or subject-held-out.")
    if any(c is not None and c < 0 for c in counts):
      raise ValueError(f"--val_count/--test_count must be >= 0, got {counts}.")


def natural_key(text: str):
  """Sorts ``S2`` before ``S10``."""
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def _held_out_count(n: int, count: int | None, fraction: float) -> int:
  if count is not None:
    return int(count)
  return max(1, int(round(fraction * n))) if fraction > 0 else 0


def _within_trial(windows: Sequence[Window], p: Protocol) -> list[str]:
  out = [""] * len(windows)
  by_trial: dict[tuple[str, str], list[int]] = {}
  for i, w in enumerate(windows):
    by_trial.setdefault((w.subject, w.trial), []).append(i)
  for rows in by_trial.values():
    rows = sorted(rows, key=lambda i: windows[i].onset)
    n = len(rows)
    n_test = int(round(p.test_fraction * n))
    n_val = int(round(p.val_fraction * n))
    if n >= 3:      # a trial long enough gives each held-out split a window
      n_test = max(n_test, int(p.test_fraction > 0))
      n_val = max(n_val, int(p.val_fraction > 0))
    n_train = max(n - n_val - n_test, 0)
    for k, i in enumerate(rows):
      out[i] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
  logging.warning("Protocol within-trial %s", LEAKY_WARNING)
  return out


def _trial_held_out(windows: Sequence[Window], p: Protocol) -> tuple[list[str], dict]:
  subjects = sorted({w.subject for w in windows}, key=natural_key)
  chosen = {}
  for s_index, subject in enumerate(subjects):
    units = sorted({w.unit for w in windows if w.subject == subject}, key=natural_key)
    n_test = _held_out_count(len(units), p.test_count, p.test_fraction)
    n_val = _held_out_count(len(units), p.val_count, p.val_fraction)
    if len(units) < n_test + n_val + 1:
      raise ValueError(
          f"trial-held-out: subject {subject!r} has {len(units)} trial(s) {units}, "
          f"fewer than {n_test} test + {n_val} val + 1 training trial(s); lower the "
          f"held-out counts or use --protocol subject-held-out.")
    order = np.random.default_rng([p.seed, s_index]).permutation(len(units))
    shuffled = [units[i] for i in order]
    chosen[subject] = dict(test=sorted(shuffled[:n_test], key=natural_key),
                           val=sorted(shuffled[n_test:n_test + n_val], key=natural_key))
  out = []
  for w in windows:
    held = chosen[w.subject]
    out.append("test" if w.unit in held["test"] else "val" if w.unit in held["val"] else "train")
  return out, {"held_out_trials": chosen}


def _subject_held_out(windows: Sequence[Window], p: Protocol) -> tuple[list[str], dict]:
  subjects = sorted({w.subject for w in windows}, key=natural_key)
  if p.val_subjects or p.test_subjects:
    val, test = list(p.val_subjects), list(p.test_subjects)
  else:
    n_val = _held_out_count(len(subjects), p.val_count, p.val_fraction)
    n_test = _held_out_count(len(subjects), p.test_count, p.test_fraction)
    # The original's convention: the last subject(s) validate, the ones before test.
    val = subjects[len(subjects) - n_val:] if n_val else []
    test = subjects[len(subjects) - n_val - n_test:len(subjects) - n_val] if n_test else []
  unknown = sorted(set(val + test) - set(subjects), key=natural_key)
  train = [s for s in subjects if s not in val and s not in test]
  if unknown or set(val) & set(test) or not train:
    raise ValueError(f"subject-held-out: val {val}, test {test} must be disjoint subjects "
                     f"among {subjects}, leaving at least one for training.")
  out = ["test" if w.subject in test else "val" if w.subject in val else "train"
         for w in windows]
  return out, {"val_subjects": val, "test_subjects": test, "train_subjects": train}


def _recipe(windows: Sequence[Window]) -> list[str]:
  out = []
  for w in windows:
    if w.source_split is None:
      raise ValueError("--protocol recipe needs a dataset that assigns its own splits "
                       "(kulmix); this one does not.")
    if w.source_split not in SPLITS:
      raise ValueError(f"--protocol recipe: split {w.source_split!r} of subject "
                       f"{w.subject!r} trial {w.trial!r} is not one of {SPLITS}.")
    out.append(w.source_split)
  spans = {}
  for w, s in zip(windows, out):
    spans.setdefault((w.subject, w.unit), set()).add(s)
  mixed = sum(len(v) > 1 for v in spans.values())
  if mixed:
    logging.warning("Protocol recipe: %d of %d trials appear in more than one split; it %s",
                    mixed, len(spans), LEAKY_WARNING)
  return out


def exclude_repeated(windows: Sequence[Window], splits: list[str]) -> tuple[list[str | None], dict]:
  """Drops (``None``) windows whose stimuli are heard in a held-out split."""
  out: list[str | None] = list(splits)
  dropped = {s: 0 for s in SPLITS}
  heard: set[str] = set()
  for split in ("test", "val", "train"):    # test keeps everything, then val, then train
    for i, w in enumerate(windows):
      if out[i] == split and heard & set(w.stimuli):
        out[i] = None
        dropped[split] += 1
    heard |= {s for i, w in enumerate(windows) if out[i] == split for s in w.stimuli}
  return out, {"dropped_windows": dropped}


def assign(windows: Sequence[Window], p: Protocol) -> tuple[list[str | None], dict]:
  """The split of every window (None: dropped by ``exclude_repeated``) and what was
  chosen (held-out subjects or trials, dropped counts) for the manifest.

  Raises ValueError when a split ends up empty.
  """
  p.check()
  details: dict = {}
  if p.name == "within-trial":
    splits = _within_trial(windows, p)
  elif p.name == "trial-held-out":
    splits, details = _trial_held_out(windows, p)
  elif p.name == "subject-held-out":
    splits, details = _subject_held_out(windows, p)
  else:
    splits = _recipe(windows)
  if p.exclude_repeated:
    splits, more = exclude_repeated(windows, splits)
    details.update(more)
  counts = {s: sum(x == s for x in splits) for s in SPLITS}
  empty = [s for s, n in counts.items() if not n]
  if empty:
    raise ValueError(f"Protocol {p.name} leaves split(s) {empty} without windows "
                     f"(windows per split: {counts}); adjust the held-out sizes"
                     + (" or drop --exclude_repeated" if p.exclude_repeated else "") + ".")
  return splits, details
