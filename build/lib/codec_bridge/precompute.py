"""Encode a dataset's audio to DAC codes once (the original re-encoded every batch).

``python -m codec_bridge.precompute --config neurocodec_jax/configs/neurocodec.py:demo [--splits train,val]``

Cache file per split: ``<codec.cache_dir or <root>/<split>>/dac_codes_<split>.h5``::

  noisy_codes, clean_codes[, unattended_codes]   int16 [N, n_codebooks, frames]
  noisy_z, clean_z[, unattended_z]               float32 [N, latent_dim, frames]
                                                 (only with codec.store_z)
  noisy_latent                                   float32 [N, latent_dim, frames]: the
                                                 encoder's continuous output of the
                                                 mixture, before quantization (only
                                                 with model.mix_input="continuous")
  clean_latent[, unattended_latent]              the same for the talkers (only with
                                                 model.target_latent="continuous")
  attrs: codec (JSON: model type, sizes, weights SHA-256), sources (JSON: per
         source file its size, mtime and a SHA-256 of 16 sampled 64 KiB chunks —
         a full hash of multi-GB audio would cost minutes), done (rows written)

Written to ``<file>.partial`` in batches (``done`` advances after each), renamed
when complete; an interrupted run resumes from ``done``. A cache whose codec or
sources differ from the current ones is stale: :func:`ensure_codes` recomputes it
(with a message), :func:`check_codes` raises :class:`CacheMismatch`. A cache or
partial that cannot be read (truncated, not HDF5, attributes or rows missing) is
:class:`CorruptCache`: named in a warning, moved aside to ``<file>.corrupt-<time>``
(kept for inspection, never deleted) and recomputed. Computing holds
``<file>.lock`` (pid, host): a second process computing the same split is refused
(:class:`CacheBusy`); a lock whose process is gone is taken over with a warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys
import time

import h5py
import numpy as np
from tqdm import tqdm

from codec_bridge.encode import encode
from codec_bridge.loading import codec_identity, load_dac_from_config
from neurocodec_jax import codec
from neurocodec_jax.data.hdf5 import (AUDIO_KINDS, fingerprint,  # pylint: disable=unused-import
                                      inspect_split_from_config, open_dataset)

# A lock file without readable content younger than this is still being written.
LOCK_GRACE_SECONDS = 60


class CacheMismatch(RuntimeError):
  """A codes cache was computed from other sources or another codec."""


class CorruptCache(RuntimeError):
  """A codes cache or partial cannot be read: truncated, not HDF5, or incomplete."""


class CacheBusy(RuntimeError):
  """Another process is computing the same codes cache."""


def cache_path(config, split: str) -> str:
  folder = config.codec.cache_dir or os.path.dirname(
      inspect_split_from_config(config, split).paths["noisy"])
  return os.path.join(folder, f"dac_codes_{split}.h5")


def _expected(config, split: str, dac_model) -> tuple[dict, dict, list[str]]:
  info = inspect_split_from_config(config, split)
  kinds = [k for k in AUDIO_KINDS if k in info.paths]
  sources = {k: _source(info.paths[k], info.audio_scale[k]) for k in kinds}
  return codec_identity(dac_model), sources, kinds


def _source(path: str, scale: float) -> dict:
  # Integer PCM is encoded scaled; caches from before the scaling lack the key.
  return dict(fingerprint(path), **({} if scale == 1.0 else dict(pcm_scale=scale)))


def read_cache(path: str) -> dict:
  """``codec``, ``sources``, ``done`` and dataset ``shapes`` of a cache or partial.

  Raises :class:`CorruptCache` when it cannot be read, :class:`CacheBusy` when
  another process holds it open for writing.
  """
  if not os.access(path, os.R_OK):
    raise PermissionError(f"{path}: codes cache not readable by this user; fix its "
                          f"permissions or set codec.cache_dir elsewhere.")
  try:
    with h5py.File(path, "r") as f:
      return dict(codec=json.loads(f.attrs["codec"]), sources=json.loads(f.attrs["sources"]),
                  done=int(f.attrs["done"]),
                  shapes={k: f[k].shape for k in f.keys() if isinstance(f[k], h5py.Dataset)})
  except OSError as e:
    if "unable to lock file" in str(e):
      raise CacheBusy(f"{path}: open for writing by another process ({e}); wait for it "
                      f"to finish.") from e
    raise CorruptCache(f"{path}: not a readable HDF5 file ({e}).") from e
  except (KeyError, ValueError, TypeError) as e:
    raise CorruptCache(f"{path}: lacks readable cache attributes codec, sources and done "
                       f"({e!r}).") from e


def check_codes(path: str, identity: dict, sources: dict) -> dict:
  """Raises :class:`CacheMismatch` naming what differs (:class:`CorruptCache` when
  unreadable); returns :func:`read_cache`'s summary when valid."""
  meta = read_cache(path)
  cached_codec, cached_sources = meta["codec"], meta["sources"]
  if cached_codec != identity:
    diff = sorted(k for k in set(identity) | set(cached_codec)
                  if identity.get(k) != cached_codec.get(k))
    raise CacheMismatch(f"{path}: computed with another codec (differs in {diff}).")
  if cached_sources != sources:
    diff = sorted(k for k in set(sources) | set(cached_sources)
                  if sources.get(k) != cached_sources.get(k))
    raise CacheMismatch(f"{path}: its source audio changed since ({diff}).")
  return meta


def required_datasets(config, kinds) -> list[str]:
  """The datasets a cache for ``config`` must hold (see the module docstring)."""
  names = [f"{kind}_codes" for kind in kinds]
  if config.codec.store_z:
    names += [f"{kind}_z" for kind in kinds]
  if config.model.mix_input == "continuous":
    names.append("noisy_latent")
  if config.model.target_latent == "continuous":
    names += [f"{kind}_latent" for kind in kinds if kind != "noisy"]
  return names


# ------------------------------------------------------------------ lock ----

def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True                   # alive, another user's
  return True


def _lock_holder(lock: str) -> tuple[dict | None, str]:
  """The lock's content and its raw text (None when unreadable)."""
  try:
    with open(lock) as f:
      text = f.read()
  except FileNotFoundError:
    return None, ""
  try:
    return json.loads(text), text
  except ValueError:
    return None, text


def _busy(path: str, lock: str, holder: dict | None) -> CacheBusy:
  if holder:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    who = f"pid {holder.get('pid')} on {holder.get('host')}, since {since}"
  else:
    who = "its lock is still being written"
  return CacheBusy(
      f"{path}: another process ({who}) is computing this codes cache; refusing to "
      f"compute it twice. Wait for it to finish (the cache is then reused), or, if that "
      f"process is gone, delete {lock}.")


def _take_over_or_refuse(path: str, lock: str):
  """Removes ``lock`` when its process is gone (warning); raises CacheBusy when alive."""
  holder, text = _lock_holder(lock)
  if holder is None:
    try:
      age = time.time() - os.path.getmtime(lock)
    except FileNotFoundError:
      return                      # released meanwhile: try again
    if age < LOCK_GRACE_SECONDS:
      raise _busy(path, lock, None)
    reason = f"unreadable lock, {age:.0f} s old"
  else:
    local = holder.get("host") == socket.gethostname()
    if not local or _pid_alive(int(holder.get("pid", -1))):
      raise _busy(path, lock, holder)
    reason = f"its process, pid {holder.get('pid')}, is no longer running"
  # Move it aside atomically: of two processes taking over, one wins the rename.
  aside = f"{lock}.stale-{os.getpid()}"
  try:
    os.rename(lock, aside)
  except FileNotFoundError:
    return
  if _lock_holder(aside)[1] != text:          # a fresh lock slipped in: give it back
    os.rename(aside, lock)
    raise _busy(path, lock, _lock_holder(lock)[0])
  os.remove(aside)
  logging.warning("[precompute] Taking over the stale lock %s (%s).", lock, reason)


@contextlib.contextmanager
def codes_lock(path: str):
  """Holds ``<path>.lock`` (created exclusively, holding pid and host) while computing
  ``path``; raises :class:`CacheBusy` when a live process holds it."""
  lock = path + ".lock"
  os.makedirs(os.path.dirname(lock) or ".", exist_ok=True)
  for _ in range(5):
    try:
      fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
      break
    except FileExistsError:
      _take_over_or_refuse(path, lock)
  else:
    raise CacheBusy(f"{path}: could not take {lock} (other processes keep taking it).")
  with os.fdopen(fd, "w") as f:
    json.dump(dict(pid=os.getpid(), host=socket.gethostname(), since=time.time()), f)
  try:
    yield lock
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(lock)


def _move_aside(path: str, error: Exception) -> str:
  """Renames an unreadable ``path`` to ``<path>.corrupt-<time>`` (kept, not deleted)."""
  aside = f"{path}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
  if os.path.exists(aside):
    aside += f"-{os.getpid()}"
  os.replace(path, aside)
  logging.warning("[precompute] %s Moved it aside to %s; recomputing.", error, aside)
  return aside


# --------------------------------------------------------------- compute ----

def precompute_split(config, split: str, dac_model, progress: bool = True,
                     stop_after_batches: int | None = None) -> str:
  """Encodes ``split`` (resuming a ``.partial`` file if it matches); returns the path.

  Holds the split's lock (:func:`codes_lock`). ``stop_after_batches`` simulates an
  interruption (tests).
  """
  with codes_lock(cache_path(config, split)):
    return _precompute_locked(config, split, dac_model, progress, stop_after_batches)


def _precompute_locked(config, split: str, dac_model, progress: bool = True,
                       stop_after_batches: int | None = None) -> str:
  identity, sources, kinds = _expected(config, split, dac_model)
  info = inspect_split_from_config(config, split)
  path = cache_path(config, split)
  partial = path + ".partial"
  n = info.num_examples
  frames = info.audio_length // codec.hop_length(config.codec.arch)
  nq, dim = dac_model.n_codebooks, dac_model.latent_dim
  store_z = config.codec.store_z
  required = sorted(required_datasets(config, kinds))
  latent_kinds = [kind for kind in kinds if f"{kind}_latent" in required]
  if os.path.exists(partial):
    try:
      meta = check_codes(partial, identity, sources)
      held = sorted(meta["shapes"])
      if held != required:
        # Resuming would leave rows of a dataset this run does not write at zero.
        raise CacheMismatch(f"{partial} holds {held}, this run writes {required}")
      rows = {k: shape[0] for k, shape in meta["shapes"].items()}
      if set(rows.values()) != {n} or not 0 <= meta["done"] <= n:
        raise CorruptCache(f"{partial}: datasets of {rows} rows, done={meta['done']}; "
                           f"expected {n} rows (the split's examples).")
    except CacheMismatch as e:
      logging.info("Discarding stale partial cache (%s).", e)
      os.remove(partial)
    except CorruptCache as e:
      _move_aside(partial, e)
  if not os.path.exists(partial):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(partial, "w") as f:
      for kind in kinds:
        f.create_dataset(f"{kind}_codes", (n, nq, frames), np.int16, chunks=(1, nq, frames))
        if store_z:
          f.create_dataset(f"{kind}_z", (n, dim, frames), np.float32, chunks=(1, dim, frames))
      for kind in latent_kinds:
        f.create_dataset(f"{kind}_latent", (n, dim, frames), np.float32,
                         chunks=(1, dim, frames))
      f.attrs.update(codec=json.dumps(identity, sort_keys=True),
                     sources=json.dumps(sources, sort_keys=True), done=0)
  bs = config.codec.precompute_batch_size
  audio = {k: open_dataset(info.paths[k]) for k in kinds}
  try:
    with h5py.File(partial, "a") as f:
      done = int(f.attrs["done"])
      if done:
        logging.info("Resuming %s at row %d of %d.", partial, done, n)
      bar = tqdm(total=n, initial=done, desc=f"precompute {split}", unit="clip",
                 disable=not progress)
      batches = 0
      for start in range(done, n, bs):
        stop = min(start + bs, n)
        for kind in kinds:
          x = np.asarray(audio[kind][start:stop], np.float32).reshape(stop - start, 1, -1)
          x *= np.float32(info.audio_scale[kind])     # integer PCM, as AADSource reads it
          if not np.all(np.isfinite(x)):    # checked when opened; the file changed since?
            raise ValueError(f"{info.paths[kind]} [{info.keys[kind]}]: non-finite audio in "
                             f"rows {start}-{stop - 1}; expected finite values.")
          codes, z, latent = encode(dac_model, x)
          f[f"{kind}_codes"][start:stop] = codes
          if store_z:
            f[f"{kind}_z"][start:stop] = z
          if kind in latent_kinds:
            f[f"{kind}_latent"][start:stop] = latent
        f.attrs["done"] = stop          # rows before `stop` are complete
        f.flush()
        bar.update(stop - start)
        batches += 1
        if stop_after_batches is not None and batches >= stop_after_batches and stop < n:
          bar.close()
          raise KeyboardInterrupt(f"simulated interruption at row {stop}")
      bar.close()
  finally:
    for ds in audio.values():
      ds.file.close()
  os.replace(partial, path)
  return path


def _problem(config, split: str, dac_model, path: str) -> Exception | None:
  """Why the cache at ``path`` cannot serve ``config`` (CorruptCache or CacheMismatch),
  or None when it can."""
  identity, sources, kinds = _expected(config, split, dac_model)
  n = inspect_split_from_config(config, split).num_examples
  try:
    meta = check_codes(path, identity, sources)
  except (CorruptCache, CacheMismatch) as e:
    return e
  rows = {k: shape[0] for k, shape in meta["shapes"].items()}
  if meta["done"] != n or set(rows.values()) != {n}:
    return CorruptCache(f"{path}: incomplete (done={meta['done']}, datasets of {rows} "
                        f"rows; expected {n} rows, the split's examples).")
  missing = [k for k in required_datasets(config, kinds) if k not in rows]
  if missing:
    return CacheMismatch(f"{path}: lacks {missing} (needed by this config).")
  return None


def ensure_codes(config, split: str, dac_model=None, progress: bool = True) -> str:
  """The valid codes cache for ``split``, (re)computing it when missing, stale or
  unreadable (moved aside first)."""
  if dac_model is None:
    dac_model = load_dac_from_config(config.codec)
  path = cache_path(config, split)
  if os.path.exists(path):
    problem = _problem(config, split, dac_model, path)
    if problem is None:
      return path
    if isinstance(problem, CacheMismatch):
      print(f"[precompute] {problem} Recomputing.", file=sys.stderr)
  else:
    print(f"[precompute] no DAC codes for split {split!r} at {path}: encoding once.",
          file=sys.stderr)
  with codes_lock(path):
    # Checked again under the lock: another process may have finished it meanwhile.
    if os.path.exists(path):
      problem = _problem(config, split, dac_model, path)
      if problem is None:
        return path
      if isinstance(problem, CorruptCache):
        _move_aside(path, problem)
    return _precompute_locked(config, split, dac_model, progress=progress)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  dac_model = load_dac_from_config(config.codec)
  for split in flags.FLAGS.splits:
    print(ensure_codes(config, split, dac_model))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", "neurocodec_jax/configs/neurocodec.py", "Config file.")
  flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to encode.")
  logging.getLogger().setLevel(logging.INFO)
  app.run(main)
