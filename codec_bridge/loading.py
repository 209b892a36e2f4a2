"""Loading the frozen DAC: real weights from a path or DAC's cache, or random for demos.

Real configs never fall back to random weights: without weights the loader stops
with a message saying how to obtain them and where to put them.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import zipfile
from typing import Any

import numpy as np
import torch

from neurocodec_jax.codec_arch import ARCH_KEYS

MODEL_TYPES = ("44khz", "24khz", "16khz")
DAC_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "descript", "dac")
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


def _kwargs_from_metadata(metadata, path: str, form: str) -> dict:
  """DAC's constructor kwargs from ``metadata["kwargs"]`` (as ``BaseModel.save`` writes)."""
  kwargs = metadata.get("kwargs") if isinstance(metadata, dict) else None
  if kwargs is None:      # as before: DAC's defaults; a size mismatch fails load_state_dict
    logging.warning("%s: %s without DAC's metadata {'kwargs': ...}; assuming DAC's default "
                    "sizes.", path, form)
    kwargs = {}
  if not isinstance(kwargs, dict):
    raise ValueError(f"{path}: {form} metadata 'kwargs' (DAC's constructor arguments, "
                     f"as BaseModel.save records them) is {type(kwargs).__name__}, not a dict.")
  out = {}
  for key in ARCH_KEYS + ("quantizer_dropout",):
    if key not in kwargs:
      continue
    value = kwargs[key]
    if isinstance(value, tuple):
      value = list(value)
    ok = (isinstance(value, bool) if key == "quantizer_dropout" else
          (value is None and key == "latent_dim") or
          (isinstance(value, int) and not isinstance(value, bool)) or
          (isinstance(value, list) and key in ("encoder_rates", "decoder_rates", "codebook_dim")
           and all(isinstance(v, int) and not isinstance(v, bool) for v in value)))
    if not ok:
      raise ValueError(f"{path}: {form} metadata kwargs[{key!r}] = {value!r} is not a "
                       f"valid DAC argument.")
    out[key] = value
  return out


def _read_state_dict_file(path: str) -> tuple[dict, dict]:
  """A ``torch.save`` file ``{"state_dict", "metadata": {"kwargs"}}``, weights only."""
  try:
    package = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: not a DAC weights file (expected DAC's torch.save "
                     f"{{'state_dict', 'metadata'}} readable with "
                     f"torch.load(weights_only=True), or DAC's torch.package archive): "
                     f"{e}") from e
  if not isinstance(package, dict) or "state_dict" not in package:
    raise ValueError(f"{path}: expected DAC's format {{'state_dict', 'metadata'}}, "
                     f"found {type(package).__name__} with keys "
                     f"{sorted(map(str, package))[:5] if isinstance(package, dict) else '-'}.")
  return package["state_dict"], _kwargs_from_metadata(package.get("metadata"), path,
                                                      "weights file")


def _read_package(path: str) -> tuple[dict, dict]:
  """A ``torch.package`` archive (``BaseModel.save(package=True)``), read as data.

  The model pickle (``DAC/DAC.pth``) and the metadata pickle (``DAC/DAC.metadata``)
  are unpickled by ``safe_unpickle.RestrictedUnpickler``: no class or function they
  name is imported or called (see ``codec_bridge.safe_unpickle``).
  """
  from codec_bridge import safe_unpickle  # pylint: disable=g-import-not-at-top
  form = "torch.package archive"
  archive = safe_unpickle.PackageArchive(path)
  try:
    models = [r for r in archive.records
              if r.count("/") == 1 and r == f"{r.split('/')[0]}/{r.split('/')[0]}.pth"]
    if "DAC/DAC.pth" in models:
      models = ["DAC/DAC.pth"]
    if len(models) != 1:
      raise ValueError(f"{path}: {form} without exactly one model pickle "
                       f"<Name>/<Name>.pth (BaseModel._save_package's layout, DAC/DAC.pth "
                       f"for DAC), found {models}.")
    name = models[0].split("/")[0]
    try:
      root = archive.load_pickle(models[0])
      state_dict = safe_unpickle.module_state_dict(root)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{path}: {form} whose {models[0]} is not a pickled DAC module "
                       f"readable without running code: {e}") from e
    metadata = None
    if f"{name}/{name}.metadata" in archive.records:
      try:
        metadata = archive.load_pickle(f"{name}/{name}.metadata")
      except Exception as e:  # pylint: disable=broad-except
        logging.warning("%s: unreadable %s/%s.metadata (%s); using the model's own "
                        "metadata.", path, name, name, e)
    if not isinstance(metadata, dict):     # BaseModel.save also sets it on the model
      metadata = (safe_unpickle.stub_dict(root) or {}).get("metadata")
    return state_dict, _kwargs_from_metadata(metadata, path, form)
  finally:
    archive.close()


def _resolve_folder(folder: str) -> str:
  """``save_to_folder``'s layout: ``<folder>/dac/{weights,package}.pth`` (or ``<folder>``
  is that ``dac`` folder); ``weights.pth`` preferred."""
  for base in (folder, os.path.join(folder, "dac")):
    for name in ("weights.pth", "package.pth"):
      if os.path.isfile(os.path.join(base, name)):
        return os.path.join(base, name)
  raise WeightsNotFound(f"{folder} is a folder without DAC weights: expected DAC's "
                        f"save_to_folder layout {os.path.join(folder, 'dac', 'weights.pth')} "
                        f"or {os.path.join(folder, 'dac', 'package.pth')}.")


def read_weights(path: str) -> tuple[dict, dict, str, str]:
  """``(state_dict, kwargs, file, form)`` of any form DAC's ``BaseModel`` saves.

  Forms: ``save(path, package=False)`` (and the release files): a ``torch.save``
  dict, read with ``torch.load(weights_only=True)``; ``save(path)`` /
  ``save(path, package=True)``: a ``torch.package`` zip, read with a restricted
  unpickler; ``save_to_folder(folder)``: ``folder/dac/weights.pth`` (the first form,
  preferred) or ``folder/dac/package.pth``.
  """
  if os.path.isdir(path):
    path = _resolve_folder(path)
  if zipfile.is_zipfile(path):
    with zipfile.ZipFile(path) as z:
      names = z.namelist()
    if any(n.count("/") == 1 and n.endswith("/data.pkl") for n in names):
      form = "state_dict"
    elif any(n.count("/") == 2 and n.endswith("/.data/version") for n in names):
      form = "package"
    else:
      raise ValueError(f"{path}: a zip archive but neither a torch.save file (no "
                       f"<archive>/data.pkl) nor a torch.package archive (no "
                       f"<archive>/.data/version); expected a DAC weights file.")
  else:
    form = "state_dict"          # torch.save's legacy (non-zip) format, or not torch at all
  state_dict, kwargs = (_read_package(path) if form == "package" else
                        _read_state_dict_file(path))
  return state_dict, kwargs, path, form


def load_dac(model_type: str = "44khz", weights: str | None = None,
             random_sizes: dict | None = None, device: str | None = None):
  """Returns the frozen torch DAC (eval mode, no parameter gradients).

  Args:
    model_type: "44khz", "24khz" or "16khz" (where to look in DAC's cache).
    weights: DAC weights in any form DAC saves: a ``.pth`` from ``model.save(path,
      package=False)`` (the release format ``{"state_dict", "metadata": {"kwargs"}}``,
      read with ``torch.load(weights_only=True)``); a ``torch.package`` archive from
      ``model.save(path)`` (the default, ``package=True``); or a folder from
      ``model.save_to_folder(folder)`` (``folder/dac/weights.pth`` preferred, else
      ``folder/dac/package.pth``; ``folder/dac`` itself is accepted too). None looks
      in DAC's cache. No code in the file is ever run: a package is not opened with
      ``torch.package.PackageImporter`` but read as a zip, its pickles unpickled by
      ``safe_unpickle.RestrictedUnpickler``, which turns every class or function they
      name into an inert stand-in (only torch's tensor-rebuild functions, storage
      types, ``set`` and ``OrderedDict`` are real), reads tensors from the archive's
      ``.data/`` entries, and the state dict is collected from the stand-in module
      tree; DAC's constructor kwargs come from the package's ``DAC/DAC.metadata``.
    random_sizes: build DAC with these sizes (``ARCH_KEYS``) and random weights
      (seeded, reproducible) instead of loading; for tests and the demo only.
    device: "auto"/None, "cpu", "cuda", "cuda:1".

  Raises:
    WeightsNotFound: no weights and not random, with how to obtain them.
    ValueError: ``weights`` is not DAC weights in any of these forms (names the file
      and what was expected).
  """
  dev = resolve_device(device)
  if random_sizes is not None:
    with torch.random.fork_rng(devices=[]):
      torch.manual_seed(RANDOM_SEED)
      model = _build(dict(random_sizes))
    model.neurocodec_identity = dict(model_type="random", random=True,
                                     arch=arch_of(model))
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
  state_dict, kwargs, path, form = read_weights(weights)
  try:
    model = _build(kwargs)
    model.load_state_dict(state_dict)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: DAC weights ({form} form) do not fit DAC({kwargs}): "
                     f"{e}") from e
  model.neurocodec_identity = dict(model_type=model_type, random=False,
                                   arch=arch_of(model), weights_path=os.path.abspath(path))
  logging.info("Loaded DAC %s from %s (%s form).", model_type, path, form)
  return _freeze(model, dev)


def load_dac_from_config(codec_config):
  """``load_dac`` per a config's ``codec`` group (random only when ``codec.random``)."""
  if codec_config.random:
    return load_dac(random_sizes=dict(codec_config.arch), device=codec_config.device)
  model = load_dac(codec_config.model_type, codec_config.weights, device=codec_config.device)
  arch = arch_of(model)
  expected = {k: (list(v) if isinstance(v, tuple) else v) for k, v in codec_config.arch.items()}
  if arch != expected:
    diff = {k: (arch.get(k), expected[k]) for k in expected if arch.get(k) != expected[k]}
    raise ValueError(f"DAC weights {model.neurocodec_identity['weights_path']} do not match "
                     f"config codec.arch (loaded, expected): {diff}.")
  return model


def arch_of(model) -> dict:
  """The architecture kwargs of a ``dac.DAC`` (``ARCH_KEYS``; tuples as lists)."""
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
                                                           arch=arch_of(model))))
  ident.pop("weights_path", None)      # where the file lies is not what it is
  ident["weights_sha256"] = model._neurocodec_hash  # pylint: disable=protected-access
  return ident

