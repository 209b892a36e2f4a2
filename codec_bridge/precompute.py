"""Encode a dataset's audio to DAC codes once (the original re-encoded every batch).

``python -m codec_bridge.precompute --config configs/neurocodec.py:demo [--splits train,val]``

Cache file per split: ``<codec.cache_dir or <root>/<split>>/dac_codes_<split>.h5``::

  noisy_codes, clean_codes[, unattended_codes]   int16 [N, n_codebooks, frames]
  noisy_z, clean_z[, unattended_z]               float32 [N, latent_dim, frames]
                                                 (only with codec.store_z)
  noisy_latent                                   float32 [N, latent_dim, frames]: the
                                                 encoder's continuous output of the
                                                 mixture, before quantization (only
                                                 with model.mix_input="continuous")
  attrs: codec (JSON: model type, sizes, weights SHA-256), sources (JSON: per
         source file its size, mtime and a SHA-256 of 16 sampled 64 KiB chunks —
         a full hash of multi-GB audio would cost minutes), done (rows written)

Written to ``<file>.partial`` in batches (``done`` advances after each), renamed
when complete; an interrupted run resumes from ``done``. A cache whose codec or
sources differ from the current ones is stale: :func:`ensure_codes` recomputes it
(with a message), :func:`check_codes` raises :class:`CacheMismatch`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys

import h5py
import numpy as np
import torch
from tqdm import tqdm

from codec_bridge.loading import codec_identity, load_dac_from_config
from neurocodec_jax.data.hdf5 import AUDIO_KINDS, inspect_split_from_config, open_dataset

CHUNK, SAMPLES = 64 * 1024, 16


class CacheMismatch(RuntimeError):
  """A codes cache was computed from other sources or another codec."""


def fingerprint(path: str) -> dict:
  """Size, mtime and a hash of sampled chunks of ``path``."""
  stat = os.stat(path)
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for offset in np.linspace(0, max(stat.st_size - CHUNK, 0), SAMPLES).astype(np.int64):
      f.seek(int(offset))
      h.update(f.read(CHUNK))
  return dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sampled_sha256=h.hexdigest())


def cache_path(config, split: str) -> str:
  folder = config.codec.cache_dir or os.path.dirname(
      inspect_split_from_config(config, split).paths["noisy"])
  return os.path.join(folder, f"dac_codes_{split}.h5")


def _expected(config, split: str, dac_model) -> tuple[dict, dict, list[str]]:
  info = inspect_split_from_config(config, split)
  kinds = [k for k in AUDIO_KINDS if k in info.paths]
  sources = {k: fingerprint(info.paths[k]) for k in kinds}
  return codec_identity(dac_model), sources, kinds


def check_codes(path: str, identity: dict, sources: dict):
  """Raises :class:`CacheMismatch` naming what differs; returns None when valid."""
  with h5py.File(path, "r") as f:
    cached_codec = json.loads(f.attrs.get("codec", "{}"))
    cached_sources = json.loads(f.attrs.get("sources", "{}"))
  if cached_codec != identity:
    diff = sorted(k for k in set(identity) | set(cached_codec)
                  if identity.get(k) != cached_codec.get(k))
    raise CacheMismatch(f"{path}: computed with another codec (differs in {diff}).")
  if cached_sources != sources:
    diff = sorted(k for k in set(sources) | set(cached_sources)
                  if sources.get(k) != cached_sources.get(k))
    raise CacheMismatch(f"{path}: its source audio changed since ({diff}).")


def required_datasets(config, kinds) -> list[str]:
  """The datasets a cache for ``config`` must hold (see the module docstring)."""
  names = [f"{kind}_codes" for kind in kinds]
  if config.codec.store_z:
    names += [f"{kind}_z" for kind in kinds]
  if config.model.mix_input == "continuous":
    names.append("noisy_latent")
  return names


def _encode(dac_model, audio: np.ndarray, sample_rate: int):
  """``(codes int16, quantized z, continuous encoder output)``, as ``DAC.encode`` does."""
  device = next(dac_model.parameters()).device
  x = torch.from_numpy(np.asarray(audio, np.float32)).to(device)
  with torch.inference_mode():
    latent = dac_model.encoder(dac_model.preprocess(x, sample_rate))
    z, codes, *_ = dac_model.quantizer(latent, None)
  return codes.cpu().numpy().astype(np.int16), z.cpu().numpy(), latent.cpu().numpy()


def _missing(path: str, names: list[str]) -> list[str]:
  with h5py.File(path, "r") as f:
    return [name for name in names if name not in f]


def precompute_split(config, split: str, dac_model, progress: bool = True,
                     stop_after_batches: int | None = None) -> str:
  """Encodes ``split`` (resuming a ``.partial`` file if it matches); returns the path.

  ``stop_after_batches`` simulates an interruption (tests).
  """
  identity, sources, kinds = _expected(config, split, dac_model)
  info = inspect_split_from_config(config, split)
  path = cache_path(config, split)
  partial = path + ".partial"
  n = info.num_examples
  frames = info.audio_length // int(np.prod(config.codec.arch.encoder_rates))
  nq, dim = dac_model.n_codebooks, dac_model.latent_dim
  store_z = config.codec.store_z
  required = sorted(required_datasets(config, kinds))
  store_latent = "noisy_latent" in required
  if os.path.exists(partial):
    try:
      check_codes(partial, identity, sources)
      with h5py.File(partial, "r") as f:
        held = sorted(f.keys())
      if held != required:
        # Resuming would leave rows of a dataset this run does not write at zero.
        raise CacheMismatch(f"{partial} holds {held}, this run writes {required}")
    except CacheMismatch as e:
      logging.info("Discarding stale partial cache (%s).", e)
      os.remove(partial)
  if not os.path.exists(partial):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(partial, "w") as f:
      for kind in kinds:
        f.create_dataset(f"{kind}_codes", (n, nq, frames), np.int16, chunks=(1, nq, frames))
        if store_z:
          f.create_dataset(f"{kind}_z", (n, dim, frames), np.float32, chunks=(1, dim, frames))
      if store_latent:
        f.create_dataset("noisy_latent", (n, dim, frames), np.float32, chunks=(1, dim, frames))
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
          if not np.all(np.isfinite(x)):
            raise ValueError(f"{info.paths[kind]}: non-finite audio in rows {start}-{stop}.")
          codes, z, latent = _encode(dac_model, x, config.codec.arch.sample_rate)
          f[f"{kind}_codes"][start:stop] = codes
          if store_z:
            f[f"{kind}_z"][start:stop] = z
          if store_latent and kind == "noisy":
            f["noisy_latent"][start:stop] = latent
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


def ensure_codes(config, split: str, dac_model=None, progress: bool = True) -> str:
  """The valid codes cache for ``split``, (re)computing it when missing or stale."""
  if dac_model is None:
    dac_model = load_dac_from_config(config.codec)
  path = cache_path(config, split)
  if os.path.exists(path):
    identity, sources, kinds = _expected(config, split, dac_model)
    try:
      check_codes(path, identity, sources)
      missing = _missing(path, required_datasets(config, kinds))
      if missing:
        raise CacheMismatch(f"{path}: lacks {missing} (needed by this config).")
      return path
    except CacheMismatch as e:
      print(f"[precompute] {e} Recomputing.", file=sys.stderr)
  else:
    print(f"[precompute] no DAC codes for split {split!r} at {path}: encoding once.",
          file=sys.stderr)
  return precompute_split(config, split, dac_model, progress=progress)


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  dac_model = load_dac_from_config(config.codec)
  for split in flags.FLAGS.splits:
    print(ensure_codes(config, split, dac_model))


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config_flags.DEFINE_config_file("config", "configs/neurocodec.py", "Config file.")
  flags.DEFINE_list("splits", ["train", "val", "test"], "Splits to encode.")
  logging.getLogger().setLevel(logging.INFO)
  app.run(main)
