"""Orbax checkpoints that hold the whole run: state, data iterator and metadata.

``<workdir>/checkpoints/<step>``: the latest ``keep`` checkpoints (every
``train.checkpoint_every`` steps and at the end), each with the train state
pytree, the grain iterator state (so a resumed run sees exactly the batches it
would have seen) and JSON metadata (epoch, best validation loss).
``<workdir>/best/<step>``: the state with the lowest validation loss so far.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp


class Checkpoints:
  """The latest-N and best checkpoints of one run."""

  def __init__(self, workdir: str, keep: int = 2, use_async: bool = True):
    workdir = os.path.abspath(workdir)
    self.latest = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints"),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=use_async))
    self.best = ocp.CheckpointManager(
        os.path.join(workdir, "best"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True,
                                             enable_async_checkpointing=use_async))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save(self, step: int, state: Any, data_iter, meta: dict, force: bool = False):
    self.latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iter),
        meta=ocp.args.JsonSave(meta)), force=force)

  def save_best(self, step: int, state: Any, meta: dict):
    if step in self.best.all_steps():     # re-validated after a resume: replace
      self.best.delete(step)
    self.best.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, data_iter=None, step: int | None = None,
              best: bool = False) -> tuple[Any, dict]:
    """Restores ``(state, meta)`` (and ``data_iter``'s position, when given)."""
    manager = self.best if best else self.latest
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"No checkpoint in {manager.directory}.")
    items = dict(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore())
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = manager.restore(step, args=ocp.args.Composite(**items))
    return restored.state, restored.meta

  def wait(self):
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self):
    self.latest.close()
    self.best.close()


def abstract(tree: Any, sharding=None) -> Any:
  """``jax.ShapeDtypeStruct`` leaves for restoring ``tree`` (optionally sharded)."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=sharding if sharding is not None
                                     else getattr(x, "sharding", None)), tree)
