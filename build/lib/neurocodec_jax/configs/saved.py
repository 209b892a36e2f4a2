"""A run's saved config (``<workdir>/config.json``) read back as a locked ConfigDict
on its preset, for evaluation and analysis of a finished run."""

from __future__ import annotations

import json
import logging
import os

from neurocodec_jax.configs import neurocodec


def load_run_config(workdir: str):
  """The config a run saved in ``<workdir>/config.json``, as a locked ConfigDict."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir? "
                            f"Otherwise pass --checkpoint and --config.")
  with open(path) as f:
    saved = json.load(f)
  config = neurocodec.get_config(saved.get("preset", "cocktail"))
  _update(config, saved, path)
  # A key the saved run lacks is an option added since: that run trained without it,
  # i.e. with the option's base default (the original behaviour), not the preset's.
  base = neurocodec.get_config("cocktail")
  for key in _absent(config, saved):
    node, base_node = config, base
    *parents, leaf = key.split(".")
    for p in parents:
      node, base_node = node[p], base_node[p]
    if node[leaf] != base_node[leaf]:
      logging.warning("%s has no %r (a run from before that option): using its base "
                      "default %r, not the preset's %r.", path, key, base_node[leaf], node[leaf])
      node[leaf] = base_node[leaf]
  return config


def _absent(config, values: dict, prefix: str = "") -> list[str]:
  """Dotted keys of ``config`` missing from the saved ``values`` (``arch`` is whole)."""
  out = []
  for key in config.keys():
    current = config[key]
    if key not in values:
      out.append(prefix + key)
    elif hasattr(current, "keys") and isinstance(values[key], dict) and key != "arch":
      out += _absent(current, values[key], prefix + key + ".")
  return out


def _update(config, values: dict, path: str, prefix: str = ""):
  for key, value in values.items():
    if key not in config:
      raise KeyError(f"{path}: unknown config key {prefix + key!r}.")
    current = config[key]
    if hasattr(current, "keys") and isinstance(value, dict):
      if key == "arch":            # a plain dict field: replace whole
        config[key] = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
      else:
        _update(current, value, path, prefix + key + ".")
    else:
      config[key] = _as_tuple(value) if isinstance(current, tuple) else value


def _as_tuple(value):
  return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value
