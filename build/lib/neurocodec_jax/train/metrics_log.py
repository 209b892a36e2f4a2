"""Metrics to ``<workdir>/metrics.jsonl``, and to TensorBoard / W&B when enabled."""

from __future__ import annotations

import json
import logging
import os

import numpy as np

from neurocodec_jax.data import atomic


class MetricsLog:
  """Appends one JSON line per (step, split); mirrors to optional backends.

  ``start``: the step the run resumes from. Rows past it belong to steps being
  redone and are dropped (and rows kept unique per (step, split)), so a resumed
  run's file reads as an uninterrupted one's. The file is opened on the first
  row: a run that fails before logging leaves none.
  """

  def __init__(self, workdir: str, config, start: int = 0):
    self.path = os.path.join(workdir, "metrics.jsonl")
    truncate_after(self.path, start)
    self._file = None
    self._tb = self._wandb = None
    if config.train.tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
      except ImportError:
        logging.warning("train.tensorboard is on but tensorboardX is not installed "
                        "(pip install tensorboardX); logging to metrics.jsonl only.")
    if config.train.wandb:
      try:
        import wandb  # pylint: disable=g-import-not-at-top
        self._wandb = wandb.init(project="neurocodec-jax", config=config.to_dict(),
                                 dir=workdir, resume="allow")
      except ImportError:
        logging.warning("train.wandb is on but wandb is not installed; "
                        "logging to metrics.jsonl only.")

  def write(self, step: int, split: str, metrics: dict, **extra):
    row = {k: float(np.asarray(v)) for k, v in metrics.items()}
    row.update(extra)
    if self._file is None:
      self._file = open(self.path, "a")
    self._file.write(json.dumps(dict(step=step, split=split, **row)) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        self._tb.add_scalar(f"{split}/{k}", v, step)
    if self._wandb is not None:
      self._wandb.log({f"{split}/{k}": v for k, v in row.items()}, step=step)

  def close(self):
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()


def truncate_after(path: str, step: int):
  """Keeps the rows of ``path`` up to ``step``, the last per (step, split); atomic."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  rows = {}
  for line in lines:
    try:
      row = json.loads(line)
    except ValueError:
      continue                       # a line cut short by a kill
    if row.get("step", 0) <= step:
      rows.pop((row.get("step"), row.get("split")), None)
      rows[(row.get("step"), row.get("split"))] = line if line.endswith("\n") else line + "\n"
  kept = list(rows.values())
  if kept == lines:
    return
  atomic.write_text(path, "".join(kept))
