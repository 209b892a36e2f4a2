"""Metrics to ``<workdir>/metrics.jsonl``, and to TensorBoard / W&B when enabled."""

from __future__ import annotations

import json
import logging
import os

import numpy as np


class MetricsLog:
  """Appends one JSON line per (step, split); mirrors to optional backends."""

  def __init__(self, workdir: str, config):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._file = open(self.path, "a")
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
    self._file.write(json.dumps(dict(step=step, split=split, **row)) + "\n")
    self._file.flush()
    if self._tb is not None:
      for k, v in row.items():
        self._tb.add_scalar(f"{split}/{k}", v, step)
    if self._wandb is not None:
      self._wandb.log({f"{split}/{k}": v for k, v in row.items()}, step=step)

  def close(self):
    self._file.close()
    if self._tb is not None:
      self._tb.close()
    if self._wandb is not None:
      self._wandb.finish()
