"""Orbax checkpoints that hold the whole run: state, data iterator and metadata.

``<workdir>/checkpoints/<step>``: the latest ``keep`` checkpoints (every
``train.checkpoint_every`` steps and at the end), each with the train state
pytree, the grain iterator state (so a resumed run sees exactly the batches it
would have seen) and JSON metadata (epoch, best validation loss).
``<workdir>/best/<step>``: the state with the lowest validation loss so far.
Evaluation reads a part of the state (the generator's parameters and batch
statistics: ``restore(..., partial=True)``, :func:`restore_step`), leaving the rest
on disk.

A step is trusted only once it has been read back whole and finite: an
unreadable one (a truncated file, a lost ``_METADATA``) is moved aside to
``<folder>.corrupt/<step>`` (kept, never deleted) and the newest readable step
is used instead, with a warning. A non-finite state is never written.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

TMP_SUFFIX = ".orbax-checkpoint-tmp"     # orbax's folder of a save not yet committed


class CheckpointError(RuntimeError):
  """No readable checkpoint, or one that cannot be written."""


class Checkpoints:
  """The latest-N and best checkpoints of one run.

  ``writable=False`` (evaluation) reads only: it creates no folder, moves no
  step aside and leaves temporary folders alone (a training run may be writing).
  """

  def __init__(self, workdir: str, keep: int = 2, use_async: bool = True,
               writable: bool = True):
    _ignore_closed_loop_errors()
    workdir = os.path.abspath(workdir)
    self.writable = writable
    self.restored_step: int | None = None
    self._pending: dict[str, int] = {}      # folder -> step of the save in flight

    def manager(name, keep):
      return ocp.CheckpointManager(
          os.path.join(workdir, name),
          options=ocp.CheckpointManagerOptions(
              max_to_keep=keep, create=writable, cleanup_tmp_directories=writable,
              enable_async_checkpointing=use_async))

    self.latest = manager("checkpoints", keep)
    self.best = manager("best", 1)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  # ---------------------------------------------------------------- write ----

  def save(self, step: int, state: Any, data_iter, meta: dict, force: bool = False):
    self._before_save(self.latest, step, state)
    self._write(self.latest, step, ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        meta=ocp.args.JsonSave(meta)), force=force)

  def save_best(self, step: int, state: Any, meta: dict):
    self._before_save(self.best, step, state)
    if step in self.best.all_steps():     # re-validated after a resume: replace
      self.best.delete(step)
    self._write(self.best, step, ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def _before_save(self, manager, step: int, state: Any):
    """Surfaces an earlier failed save; refuses a non-finite state or a full disk."""
    self._raise_failed(manager, wait=True)      # orbax waits before a save anyway
    for other in (self.latest, self.best):
      self._raise_failed(other, wait=False)
    if not all_finite(_trained(state)):
      raise FloatingPointError(f"Refusing to write a non-finite state as checkpoint step "
                               f"{step} in {manager.directory}.")
    # Checked before writing: a save that runs out of space fails in orbax's
    # background threads, each printing tracebacks, and leaves temporary folders.
    need = sum(x.nbytes for x in jax.tree.leaves(state)) + (1 << 20)
    free = shutil.disk_usage(_existing_parent(str(manager.directory))).free
    if free < need:
      raise OSError(errno.ENOSPC, f"Not enough disk space for checkpoint step {step} in "
                    f"{manager.directory}: it needs about {need / 1e6:.1f} MB, "
                    f"{free / 1e6:.1f} MB are free. Free space and re-run: "
                    f"{self._resume_hint()}")

  def _write(self, manager, step: int, args, force: bool):
    self._pending[str(manager.directory)] = step
    try:
      manager.save(step, args=args, force=force)
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(manager, e) from None

  def _raise_failed(self, manager, wait: bool):
    """A :class:`CheckpointError` for a background save that failed (e.g. disk full)."""
    try:
      if wait:
        manager.wait_until_finished()
      else:
        manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      raise self._write_error(manager, e) from None

  def _write_error(self, manager, error: Exception) -> Exception:
    step = self._pending.get(str(manager.directory))
    text = str(error)
    full = "No space left on device" in text or "os_error_code='28'" in text
    what = "no space left on device; free space and re-run" if full else reason(error)
    return CheckpointError(f"Writing checkpoint step {step} to {manager.directory} failed "
                           f"({what}): {self._resume_hint(exclude=step)}")

  def _resume_hint(self, exclude: int | None = None) -> str:
    done = [s for s in self.latest.all_steps() if s != exclude]
    return (f"training resumes from step {max(done)}." if done
            else "training starts afresh (no checkpoint yet).")

  # ----------------------------------------------------------------- read ----

  def restore(self, abstract_state: Any, data_iter=None, step: int | None = None,
              best: bool = False, template_trusted: bool = False,
              partial: bool = False) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` (and ``data_iter``'s position, when given).

    Tries ``step``, or every step newest first, and returns the first that reads
    back whole and finite (its number in ``self.restored_step``). Unreadable
    newer steps are moved to ``<folder>.corrupt/`` once a readable one shows the
    template is right (so a changed config never sets good checkpoints aside), or
    at once with ``template_trusted``. Raises :class:`CheckpointError` naming each
    step's fault when none is readable. ``partial``: ``abstract_state`` is a part
    of the state (e.g. ``{"g": {"params", "batch_stats"}}``); only its arrays are read.
    """
    manager = self.best if best else self.latest
    candidates = [step] if step is not None else sorted(manager.all_steps(), reverse=True)
    if not candidates:
      raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
    bad = []
    for s in candidates:
      try:
        state, meta = self._read(manager, s, abstract_state, data_iter, partial)
      except Exception as e:  # pylint: disable=broad-except
        bad.append((s, reason(e)))
        continue
      self._set_aside(manager, bad, f"using step {s} instead")
      self.restored_step = s
      return state, meta
    if template_trusted:
      self._set_aside(manager, bad, "no readable step left")
    faults = "; ".join(f"step {s}: {why}" for s, why in bad)
    raise CheckpointError(
        f"No readable checkpoint in {manager.directory} ({faults}). If the config changed "
        f"since they were written, re-run with the run's own config (config.json); "
        f"otherwise move {manager.directory} away to start afresh.")

  def _read(self, manager, step: int, abstract_state: Any, data_iter,
            partial: bool) -> tuple[Any, dict]:
    # orbax reports a lost tree description as a pytree mismatch: name it.
    for name in ("state/_METADATA",):
      if not os.path.exists(os.path.join(str(manager.directory), str(step), name)):
        raise ValueError(f"{name} is missing")
    items = dict(state=_state_restore(abstract_state, partial), meta=ocp.args.JsonRestore())
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    if not all_finite(_trained(restored.state)):
      raise ValueError("it holds non-finite values")
    return restored.state, restored.meta

  def _set_aside(self, manager, bad: list, then: str):
    """Warns about each unreadable step and (when writable) moves it aside."""
    for s, why in bad:
      src = os.path.join(str(manager.directory), str(s))
      if not self.writable:
        logging.warning("Checkpoint %s is unreadable (%s); %s.", src, why, then)
        continue
      dest = _free_name(os.path.join(str(manager.directory) + ".corrupt", str(s)))
      if jax.process_index() == 0:
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.move(src, dest)
      logging.warning("Checkpoint %s is unreadable (%s); moved to %s; %s.", src, why, dest, then)
    if bad and self.writable:
      manager.reload()

  # ------------------------------------------------------------ lifecycle ----

  def wait(self):
    """Waits for saves in flight; a failed one raises a :class:`CheckpointError`."""
    for manager in (self.latest, self.best):
      self._raise_failed(manager, wait=True)

  def close(self, failed: bool = False):
    """Waits for saves in flight and closes; removes empty folders and leftovers.

    ``failed``: the run is already stopping on an error, the one to report; a save
    that failed too is logged instead of replacing it.
    """
    try:
      self.wait()
    except CheckpointError as e:
      if not failed:
        raise
      logging.error("%s", e)
    finally:
      for manager in (self.latest, self.best):
        try:
          manager.close()
        except Exception:  # pylint: disable=broad-except
          pass                      # a failed save: already reported by wait()
        if self.writable:
          _tidy(str(manager.directory))


def _state_restore(abstract_state: Any, partial: bool):
  """orbax's restore arguments for the ``state`` item (all of it, or a part)."""
  if not partial:
    return ocp.args.StandardRestore(abstract_state)
  return ocp.args.PyTreeRestore(
      abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state),
      partial_restore=True)


def restore_step(step_dir: str, abstract_state: Any) -> Any:
  """The arrays of ``abstract_state`` (a part of the state, e.g. the generator's) read
  from one step folder, ``<workdir>/checkpoints/<step>`` or ``best/<step>``."""
  try:
    return ocp.PyTreeCheckpointer().restore(
        os.path.join(os.path.abspath(step_dir), "state"),
        args=_state_restore(abstract_state, partial=True))
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(f"{step_dir} is not a readable checkpoint of this config "
                          f"({reason(e)}).") from e


def _ignore_closed_loop_errors():
  """Drops "Event loop is closed" reports (installed once, for the process).

  When one read or write of a checkpoint fails, orbax closes its event loop while
  tensorstore's other operations still post their results to it; each reports a
  RuntimeError through ``sys.unraisablehook`` (~100 tracebacks per unreadable
  step, some after the call returned). The failure itself is reported here.
  """
  previous = sys.unraisablehook
  if getattr(previous, "closed_loop_filter", False):
    return

  def hook(unraisable):
    if not (unraisable.exc_type is RuntimeError
            and str(unraisable.exc_value) == "Event loop is closed"):
      previous(unraisable)

  hook.closed_loop_filter = True
  sys.unraisablehook = hook


def all_finite(tree: Any) -> bool:
  """Whether every floating-point leaf of ``tree`` is finite."""
  leaves = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
  return all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)


def _trained(state: Any) -> Any:
  """The models' parameters and optimizer states (the plateau's best starts at inf)."""
  return ({k: state[k] for k in ("g", "d") if k in state}
          if isinstance(state, dict) and "g" in state else state)


def reason(error: BaseException, limit: int = 240) -> str:
  """One line on why ``error`` happened: its root cause, whitespace collapsed."""
  while error.__cause__ is not None:
    error = error.__cause__
  text = " ".join(str(error).split()) or type(error).__name__
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _tidy(folder: str):
  """Removes the temporary folders of unfinished saves, then ``folder`` if empty."""
  if jax.process_index() != 0 or not os.path.isdir(folder):
    return
  for name in os.listdir(folder):
    if TMP_SUFFIX in name:
      shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
  if not os.listdir(folder):
    os.rmdir(folder)


def _free_name(path: str) -> str:
  """``path``, or ``path.1``, ``path.2``... whichever does not exist yet."""
  candidate, n = path, 0
  while os.path.exists(candidate):
    n += 1
    candidate = f"{path}.{n}"
  return candidate


def _existing_parent(path: str) -> str:
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def abstract(tree: Any, sharding=None) -> Any:
  """``jax.ShapeDtypeStruct`` leaves for restoring ``tree`` (optionally sharded)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=sharding if sharding is not None
                                     else getattr(x, "sharding", None)), tree)
