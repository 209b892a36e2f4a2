"""Prepare a dataset: read (resumably, per subject), cut windows, split, write atomically.

Work happens in ``<out>.partial/``: each subject's preprocessed recordings are cached
there as ``.npy`` files once the subject is complete, so an interrupted run resumes
with the next subject (the cache is keyed on the dataset, the source folder and
every setting; a change starts afresh). The layout is then written into a temporary
sibling of ``<out>`` and renamed (``atomic.atomic_directory``), and the cache
removed: ``<out>`` is complete or absent. An input error (:class:`DatasetError`)
removes the cache too, leaving nothing behind; a protocol that cannot be met (a
ValueError once the recordings are read) keeps it, for a rerun with other protocol
or window settings.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
from typing import Any, Iterator, Mapping

import numpy as np
from tqdm import tqdm

from neurocodec_jax.data.atomic import atomic_directory, write_text
from neurocodec_jax.data.prepare import layout, protocols, signals
from neurocodec_jax.data.prepare.recording import DatasetError, Recording

# Dataset name -> reader module (see the package docstring for the contract).
READERS = {
    "kul": "neurocodec_jax.data.prepare.kul",
    "kulmix": "neurocodec_jax.data.prepare.kulmix",
    "cocktail": "neurocodec_jax.data.prepare.cocktail",
    "dtu": "neurocodec_jax.data.prepare.dtu",
}
CACHE_VERSION = 1
ARRAYS = ("eeg", "attended", "unattended", "noisy")


def reader_module(dataset: str):
  """The reader module of ``dataset`` (a module path in READERS, or a module)."""
  if dataset not in READERS:
    raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(READERS)}.")
  target = READERS[dataset]
  return importlib.import_module(target) if isinstance(target, str) else target


@dataclasses.dataclass
class CachedRecording:
  """A recording's metadata in the cache; :meth:`load` maps its arrays."""
  folder: str
  index: int
  subject: str
  trial: str
  unit: str
  split: str | None
  stimuli: tuple[str, str]
  provenance: dict
  eeg_length: int
  audio_length: int
  channels: int

  def load(self) -> dict[str, np.ndarray]:
    return {k: np.load(os.path.join(self.folder, f"{self.index}_{k}.npy"), mmap_mode="r")
            for k in ARRAYS}


def _safe(subject: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]", "_", subject)


class Cache:
  """Per-subject cache of preprocessed recordings under ``folder``."""

  def __init__(self, folder: str, key: dict):
    self.folder = folder
    key_file = os.path.join(folder, "cache_key.json")
    key = dict(key, version=CACHE_VERSION)
    if os.path.isdir(folder):
      try:
        with open(key_file) as f:
          stale = json.load(f) != key
      except (OSError, ValueError):
        stale = True
      if stale:
        logging.info("Settings changed since %s was cached: starting afresh.", folder)
        shutil.rmtree(folder)
    os.makedirs(folder, exist_ok=True)
    if not os.path.exists(key_file):
      write_text(key_file, json.dumps(key, indent=1, sort_keys=True))

  def done(self) -> dict[str, list[CachedRecording]]:
    """``{subject: recordings}`` of the complete subjects."""
    out = {}
    for name in sorted(os.listdir(self.folder)):
      meta = os.path.join(self.folder, name, "recordings.json")
      if name.endswith(".partial") or not os.path.isfile(meta):
        continue
      with open(meta) as f:
        entries = json.load(f)
      folder = os.path.join(self.folder, name)
      recs = [CachedRecording(folder=folder, stimuli=tuple(e.pop("stimuli")), **e)
              for e in entries]
      if recs:
        out[recs[0].subject] = recs
    return out

  def begin(self, subject: str) -> "SubjectWriter":
    """A writer for one subject's recordings, complete once ``finish`` is called."""
    return SubjectWriter(os.path.join(self.folder, _safe(subject)))


class SubjectWriter:
  """Writes recordings into ``<final>.partial``, renamed to ``<final>`` by ``finish``
  (so a subject is cached whole or not at all)."""

  def __init__(self, final: str):
    self.final, self.partial = final, final + ".partial"
    shutil.rmtree(self.partial, ignore_errors=True)
    os.makedirs(self.partial)
    self.entries = []

  def add(self, r: Recording):
    i = len(self.entries)
    for k in ARRAYS:
      np.save(os.path.join(self.partial, f"{i}_{k}.npy"), getattr(r, k))
    self.entries.append(dict(
        index=i, subject=r.subject, trial=r.trial, unit=r.unit, split=r.split,
        stimuli=list(r.stimuli), provenance=json.loads(json.dumps(r.provenance, default=_jsonable)),
        eeg_length=int(r.eeg.shape[0]), audio_length=int(len(r.attended)),
        channels=int(r.eeg.shape[1])))

  def finish(self):
    with open(os.path.join(self.partial, "recordings.json"), "w") as f:
      json.dump(self.entries, f)
    shutil.rmtree(self.final, ignore_errors=True)
    os.replace(self.partial, self.final)


def _jsonable(x):
  if isinstance(x, np.generic):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  if dataclasses.is_dataclass(x):
    return dataclasses.asdict(x)
  return str(x)


def _checked(recordings: Iterator[Recording], sample_rate: int, eeg_rate: int,
             dataset: str) -> Iterator[tuple[Recording, bool]]:
  """``(recording, first of its subject)``, checking the reader's contract: valid
  recordings, each subject's together, unique trial ids within a subject."""
  seen, subject, trials = set(), None, set()
  for r in recordings:
    r.validate(sample_rate=sample_rate, eeg_rate=eeg_rate)
    first = r.subject != subject
    if first:
      if r.subject in seen:
        raise DatasetError(f"reader {dataset!r} yielded subject {r.subject!r} again after "
                           f"other subjects; expected each subject's recordings together.")
      seen.add(r.subject)
      subject, trials = r.subject, set()
    if r.trial in trials:
      raise DatasetError(f"reader {dataset!r}: subject {r.subject!r} has two recordings "
                         f"with trial id {r.trial!r}; expected unique trial ids.")
    trials.add(r.trial)
    yield r, first


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything besides the reader's own options that decides the output."""
  sample_rate: int = 16000
  eeg_rate: int = 128
  segment_seconds: float = 2.0
  hop_length: int | None = None          # None: DAC's hop for the sample rate
  eeg: signals.EEGSettings | None = None  # None: the reader's recipe (its PREPROCESSING)


def _eeg_record(eeg: signals.EEGSettings | None):
  """What the manifest and the cache key record of the EEG settings."""
  return "the reader's recipe (preprocessing.reader)" if eeg is None else dataclasses.asdict(eeg)


def prepare(dataset: str, src: str, out: str, *, settings: Settings = Settings(),
            protocol: protocols.Protocol = protocols.Protocol(),
            options: Mapping[str, Any] | None = None, overwrite: bool = False,
            progress: bool = True) -> dict:
  """Builds the layout of ``dataset`` from ``src`` into ``out``; returns the manifest.

  Raises:
    DatasetError: a malformed source file (nothing is left behind).
    ValueError: bad settings, or a protocol that leaves a split empty.
    FileExistsError: ``out`` exists and ``overwrite`` is False.
  """
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} exists; pass --overwrite to replace it.")
  if not os.path.isdir(src):
    raise DatasetError(f"{src}: source folder not found.")
  protocol.check()
  if settings.eeg is not None:
    settings.eeg.check(settings.eeg_rate)
  hop = signals.hop_length(settings.sample_rate, settings.hop_length)
  audio_length, eeg_length = layout.window_sizes(
      settings.segment_seconds, settings.sample_rate, settings.eeg_rate, hop)
  module = reader_module(dataset)
  options = dict(options or {})
  # Only what the recordings depend on keys the cache (not the protocol or windows).
  key = dict(dataset=dataset, src=os.path.abspath(src), sample_rate=settings.sample_rate,
             eeg_rate=settings.eeg_rate, eeg=_eeg_record(settings.eeg),
             options=json.loads(json.dumps(options, default=_jsonable, sort_keys=True)))
  work = out + ".partial"
  try:
    cache = Cache(work, key)
    _read(module, dataset, src, cache, settings, options, progress)
    done = cache.done()
    recordings = [r for s in sorted(done, key=protocols.natural_key) for r in done[s]]
    if not recordings:
      raise DatasetError(f"{src}: the {dataset} reader found no recordings.")
    channels = {r.channels for r in recordings}
    if len(channels) != 1:
      raise DatasetError(f"{src}: recordings have different EEG channel counts "
                         f"{sorted(channels)}; expected one montage.")
    windows = layout.segment(recordings, segment_seconds=settings.segment_seconds,
                             sample_rate=settings.sample_rate, eeg_rate=settings.eeg_rate,
                             hop=hop)
    splits, details = protocols.assign(windows, protocol)
    with atomic_directory(out, overwrite) as tmp:
      rows = layout.write_splits(tmp, windows, splits, lambda i: recordings[i].load(),
                                 audio_length=audio_length, eeg_length=eeg_length,
                                 channels=channels.pop(), progress=progress)
      manifest = _manifest(module, dataset, src, settings, hop, audio_length, eeg_length,
                           protocol, details, windows, rows, recordings, options)
      layout.write_manifest(tmp, manifest)
  except DatasetError:
    shutil.rmtree(work, ignore_errors=True)     # an input error: leave nothing behind
    raise
  except ValueError:
    if os.path.isdir(work):
      logging.error("The preprocessed recordings stay in %s: a rerun with other protocol "
                    "or window settings reuses them.", work)
    raise
  shutil.rmtree(work, ignore_errors=True)
  return manifest


def _read(module, dataset, src, cache: Cache, settings: Settings, options, progress):
  """Runs the reader for the subjects not cached yet, caching each when complete.

  A reader with ``list_subjects`` and a ``subjects`` keyword is run once per subject
  (so a subject is cached as soon as it is read); otherwise once, a subject being
  complete when the next one starts.
  """
  done = set(cache.done())
  kwargs = dict(options, sample_rate=settings.sample_rate, eeg_rate=settings.eeg_rate,
                eeg=settings.eeg)
  subjects = (list(module.list_subjects(src, **options))
              if hasattr(module, "list_subjects") else None)
  if subjects is not None and not set(subjects) - done:
    return
  if done:
    logging.info("Resuming: %d subject(s) already prepared in %s.", len(done), cache.folder)
  per_subject = (subjects is not None and
                 "subjects" in inspect.signature(module.iter_recordings).parameters)
  runs = ([dict(kwargs, subjects=[s]) for s in subjects if s not in done] if per_subject
          else [kwargs])
  with tqdm(total=len(subjects) if subjects is not None else None, initial=len(done),
            desc=f"{dataset} subjects", unit="subject", disable=not progress) as bar:
    for run in runs:
      writer = None
      for r, first in _checked(module.iter_recordings(src, **run), settings.sample_rate,
                               settings.eeg_rate, dataset):
        if per_subject and r.subject not in run["subjects"]:
          raise DatasetError(f"reader {dataset!r} yielded subject {r.subject!r} when asked "
                             f"for {run['subjects']}.")
        if first:
          if writer is not None:
            writer.finish()
            bar.update(1)
          writer = None if r.subject in done else cache.begin(r.subject)
        if writer is not None:
          writer.add(r)
      if writer is not None:
        writer.finish()
        bar.update(1)


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_SOURCE_TREE = os.path.dirname(_PACKAGE_DIR)   # the checkout holding neurocodec_jax/


def _package_version() -> str | None:
  """The version of the neurocodec_jax that runs: the ``version=`` of the setup.py
  beside it (a source checkout, possibly not the one installed), else the installed
  distribution's metadata, else None."""
  setup = os.path.join(_SOURCE_TREE, "setup.py")
  if os.path.isfile(setup):
    with open(setup) as f:
      match = re.search(r"\bversion\s*=\s*[\"']([^\"']+)[\"']", f.read())
    if match:
      return match.group(1)
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version("neurocodec-jax")
  except Exception:  # pylint: disable=broad-except   # not installed either
    return None


def _git(*args: str) -> str | None:
  """``git -C <source tree> args`` stripped, or None (no git, not a checkout, error)."""
  try:
    run = subprocess.run(["git", "-C", _SOURCE_TREE, *args], capture_output=True,
                         text=True, timeout=10, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return run.stdout.strip() if run.returncode == 0 else None


def code_version() -> dict:
  """What code wrote a dataset: ``{"package", "version", "git_commit", "git_dirty"}``.

  ``git_commit``/``git_dirty`` are None unless the source tree holding
  neurocodec_jax is itself a git checkout's top level (an installed copy inside
  some other repository, e.g. a venv in a checkout, must not report that
  repository's commit); ``git_dirty``: tracked files differ from the commit.
  """
  commit = dirty = None
  top = _git("rev-parse", "--show-toplevel")
  if top is not None and os.path.realpath(top) == os.path.realpath(_SOURCE_TREE):
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    dirty = None if commit is None or status is None else bool(status)
  return dict(package="neurocodec-jax", version=_package_version(), git_commit=commit,
              git_dirty=dirty)


def _manifest(module, dataset, src, settings, hop, audio_length, eeg_length, protocol,
              details, windows, rows, recordings, options) -> dict:
  return dict(
      version=layout.MANIFEST_VERSION,
      generator="neurocodec_jax.data.prepare",
      code=code_version(),
      dataset=dataset,
      source=dict(getattr(module, "SOURCE", {}), folder=os.path.abspath(src)),
      preprocessing=dict(
          sample_rate=settings.sample_rate, eeg_rate=settings.eeg_rate,
          segment_seconds=settings.segment_seconds, hop_length=hop,
          audio_length=audio_length, eeg_length=eeg_length,
          eeg_units=getattr(module, "EEG_UNITS", "microvolts"),
          eeg=_eeg_record(settings.eeg), reader=getattr(module, "PREPROCESSING", ""),
          options=json.loads(json.dumps(options, default=_jsonable))),
      protocol=dict(dataclasses.asdict(protocol), **details,
                    counts={s: len(r) for s, r in rows.items()}),
      subjects=layout.subject_indices(windows),
      recordings=[dict(subject=r.subject, trial=r.trial, unit=r.unit, split=r.split,
                       stimuli=list(r.stimuli), seconds=r.eeg_length / settings.eeg_rate,
                       provenance=r.provenance) for r in recordings],
      windows={s: layout.window_provenance(windows, r) for s, r in rows.items()},
  )
