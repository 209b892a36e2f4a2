"""Loading the frozen DAC: real weights from a path or DAC's cache, or random for demos.

Real configs never fall back to random weights: without weights the loader stops
with a message saying how to obtain them and where to put them.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from typing import Any

import numpy as np
import torch

MODEL_TYPES = ("44khz", "24khz", "16khz")
DAC_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "descript", "dac")
ARCH_KEYS = ("sample_rate", "encoder_dim", "encoder_rates", "latent_dim", "decoder_dim",
             "decoder_rates", "n_codebooks", "codebook_size", "codebook_dim")
RANDOM_SEED = 0        # random codecs are reproducible, so their caches stay valid


class WeightsNotFound(FileNotFoundError):
  """No DAC weights at the given path or in DAC's cache."""


def resolve_device(device: str | None) -> torch.device:
  """``None``/``"auto"``: cuda when available, else cpu."""
  if device in (None, "auto"):
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
  return torch.device(device)


def cached_weights(model_type: str) -> list[str]:
  """DAC's download cache entries for ``model_type`` (newest tag last)."""
  return sorted(glob.glob(os.path.join(DAC_CACHE, f"weights_{model_type}_*.pth")))


def _missing_weights_message(model_type: str, weights: str | None) -> str:
  where = f"{weights!r} does not exist" if weights else (
      f"no weights_{model_type}_*.pth in DAC's cache {DAC_CACHE}")
  return (f"DAC {model_type} weights not found: {where}. This machine cannot download "
          f"them. On a machine with internet run `python -m dac download --model_type "
          f"{model_type}` (or fetch the release file weights_{model_type}*.pth from the "
          f"descript-audio-codec GitHub releases), then copy it into {DAC_CACHE}/ or pass "
          f"--config.codec.weights=/path/to/weights.pth. For a demo or tests without "
          f"real weights set --config.codec.random=True (random weights: not a real codec).")


def _build(arch: dict):
  import dac  # pylint: disable=g-import-not-at-top
  kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in arch.items()}
  return dac.DAC(**kwargs)


def _freeze(model, device: torch.device):
  model = model.to(device).eval()
  for p in model.parameters():
    p.requires_grad_(False)
  return model


def load_dac(model_type: str = "44khz", weights: str | None = None,
             random_sizes: dict | None = None, device: str | None = None):
  """Returns the frozen torch DAC (eval mode, no parameter gradients).

  Args:
    model_type: "44khz", "24khz" or "16khz" (where to look in DAC's cache).
    weights: a DAC ``.pth`` (the release format: ``{"state_dict", "metadata":
      {"kwargs"}}``); None looks in DAC's cache.
    random_sizes: build DAC with these sizes (``ARCH_KEYS``) and random weights
      (seeded, reproducible) instead of loading; for tests and the demo only.
    device: "auto"/None, "cpu", "cuda", "cuda:1".

  Raises:
    WeightsNotFound: no weights and not random, with how to obtain them.
  """
  dev = resolve_device(device)
  if random_sizes is not None:
    with torch.random.fork_rng(devices=[]):
      torch.manual_seed(RANDOM_SEED)
      model = _build(dict(random_sizes))
    model.neurocodec_identity = dict(model_type="random", random=True,
                                     arch=_arch_of(model))
    logging.warning("=" * 72 + "\nRANDOM-WEIGHT DAC (%s): a codec for tests and the demo, "
                    "not a real model. Its audio is not speech quality.\n" + "=" * 72,
                    {k: random_sizes[k] for k in ARCH_KEYS if k in random_sizes})
    return _freeze(model, dev)
  if model_type not in MODEL_TYPES:
    raise ValueError(f"codec.model_type must be one of {MODEL_TYPES}, got {model_type!r}.")
  if weights is None:
    found = cached_weights(model_type)
    if not found:
      raise WeightsNotFound(_missing_weights_message(model_type, None))
    weights = found[-1]
  if not os.path.exists(weights):
    raise WeightsNotFound(_missing_weights_message(model_type, weights))
  try:
    package = torch.load(weights, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{weights}: not a DAC weights file readable with "
                     f"torch.load(weights_only=True) ({e}).") from e
  if not isinstance(package, dict) or "state_dict" not in package:
    raise ValueError(f"{weights}: expected DAC's format {{'state_dict', 'metadata'}}, "
                     f"found {type(package).__name__} with keys "
                     f"{sorted(package)[:5] if isinstance(package, dict) else '-'}.")
  kwargs = dict(package.get("metadata", {}).get("kwargs", {}))
  model = _build({k: v for k, v in kwargs.items() if k in ARCH_KEYS or k == "quantizer_dropout"})
  model.load_state_dict(package["state_dict"])
  model.neurocodec_identity = dict(model_type=model_type, random=False,
                                   arch=_arch_of(model), weights_path=os.path.abspath(weights))
  logging.info("Loaded DAC %s from %s.", model_type, weights)
  return _freeze(model, dev)


def load_dac_from_config(codec_config):
  """``load_dac`` per a config's ``codec`` group (random only when ``codec.random``)."""
  if codec_config.random:
    return load_dac(random_sizes=dict(codec_config.arch), device=codec_config.device)
  model = load_dac(codec_config.model_type, codec_config.weights, device=codec_config.device)
  arch = _arch_of(model)
  expected = {k: (list(v) if isinstance(v, tuple) else v) for k, v in codec_config.arch.items()}
  if arch != expected:
    diff = {k: (arch.get(k), expected[k]) for k in expected if arch.get(k) != expected[k]}
    raise ValueError(f"DAC weights {model.neurocodec_identity['weights_path']} do not match "
                     f"config codec.arch (loaded, expected): {diff}.")
  return model


def _arch_of(model) -> dict:
  return dict(sample_rate=int(model.sample_rate), encoder_dim=int(model.encoder_dim),
              encoder_rates=[int(r) for r in model.encoder_rates],
              latent_dim=int(model.latent_dim), decoder_dim=int(model.decoder_dim),
              decoder_rates=[int(r) for r in model.decoder_rates],
              n_codebooks=int(model.n_codebooks), codebook_size=int(model.codebook_size),
              codebook_dim=model.codebook_dim if isinstance(model.codebook_dim, int)
              else list(model.codebook_dim))


def weights_hash(model) -> str:
  """SHA-256 over the state dict (sorted keys, raw float32 bytes)."""
  h = hashlib.sha256()
  for key, value in sorted(model.state_dict().items()):
    h.update(key.encode())
    h.update(np.ascontiguousarray(value.detach().cpu().numpy()).tobytes())
  return h.hexdigest()


def codec_identity(model) -> dict[str, Any]:
  """Model type, sizes and weights hash: recorded with everything computed from it."""
  if not hasattr(model, "_neurocodec_hash"):
    model._neurocodec_hash = weights_hash(model)  # pylint: disable=protected-access
  ident = dict(getattr(model, "neurocodec_identity", dict(model_type="unknown",
                                                           arch=_arch_of(model))))
  ident.pop("weights_path", None)      # where the file lies is not what it is
  ident["weights_sha256"] = model._neurocodec_hash  # pylint: disable=protected-access
  return ident


def hop_length(model) -> int:
  return int(np.prod(model.encoder_rates))
