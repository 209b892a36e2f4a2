"""A spectral mask refiner: the mixture's STFT and both decoded streams in, a mask out.

The streams' ratio mask (``mixture_mask.ratio_mask``) decides each bin from two
codec resyntheses, which smear the harmonics that tell two voices apart. The refiner
reads the mixture's own spectrum beside them and corrects the mask's logits:

  mask = sigmoid(logit(M0) + f(log|X|, log|A|, log|B|, M0))

with ``M0`` the streams' floored ratio mask and ``f`` a stack of non-causal dilated
convolutions over frames whose last layer starts at zero, so an untrained refiner
outputs exactly the streams' mask. Offline, like the mask it refines.
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import serialization
from neurocodec_jax import mixture_mask
from neurocodec_jax.mixture_mask import HOP, istft, stft

_EPS = 1e-5      # log-magnitude floor (-100 dB re full scale)


def _log_mag(spec: jax.Array) -> jax.Array:
  return 0.5 * jnp.log(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + _EPS ** 2)


class MaskRefiner(nn.Module):
  """``__call__(mixture, selected, competing)``: each ``[B, T]`` -> the refined output
  ``[B, T]``. ``floor`` and ``power`` are the streams' mask's (``model.mask_floor``,
  ``model.mask_power``)."""
  width: int = 128
  layers: int = 6
  kernel: int = 5
  floor: float = 0.2
  power: float = 0.5

  @nn.compact
  def __call__(self, mixture: jax.Array, selected: jax.Array, competing: jax.Array) -> jax.Array:
    X, A, B = stft(mixture), stft(selected), stft(competing)
    m0 = mixture_mask.stream_mask(A, B, self.power, self.floor)         # [B, F, N]
    logs = [_log_mag(S) for S in (X, A, B)]
    ref = jnp.mean(logs[0], axis=(1, 2), keepdims=True)                 # the trial's level
    feats = jnp.concatenate([l - ref for l in logs] + [m0], axis=1)     # [B, 4F, N]
    h = nn.Dense(self.width)(jnp.swapaxes(feats, 1, 2))                 # [B, N, W]
    for i in range(self.layers):
      r = nn.LayerNorm()(h)
      r = nn.Conv(self.width, (self.kernel,), kernel_dilation=2 ** (i % 4), padding="SAME")(r)
      h = h + nn.Dense(self.width)(nn.gelu(r))
    delta = nn.Dense(m0.shape[1], kernel_init=nn.initializers.zeros)(nn.LayerNorm()(h))
    m0c = jnp.clip(m0, 1e-6, 1 - 1e-6)                                  # finite logits
    logit0 = jnp.log(m0c) - jnp.log1p(-m0c)
    mask = jax.nn.sigmoid(logit0 + jnp.swapaxes(delta, 1, 2))
    return istft(mask * X, mixture.shape[-1]).astype(mixture.dtype)


def compressed_spectral_distance(estimate: jax.Array, target: jax.Array) -> jax.Array:
  """Mean ``||E|^0.3 - |S|^0.3|`` over bins and frames, relative to the target's mean
  ``|S|^0.3`` (scale-aware, level-normalized): a magnitude loss closer to what STOI
  weighs than SI-SDR. ``[B, T]`` each -> a scalar."""
  e, s = (mixture_mask.magnitude(stft(x), 0.3) for x in (estimate, target))
  return jnp.mean(jnp.abs(e - s)) / jnp.mean(s)


_FIELDS = ("width", "layers", "kernel", "floor", "power")


def save(path: str, params, model: MaskRefiner, back_off: dict | None = None) -> None:
  """``path`` (msgpack) and ``path + '.json'`` (the module's fields and, when given,
  the ``back_off`` chosen for it: ``{"unsure_margin", "unsure_mix", ...}``), each
  written whole (temporary name, then rename)."""
  meta = {k: getattr(model, k) for k in _FIELDS}
  if back_off is not None:
    meta["back_off"] = back_off
  for p, data in ((path, serialization.to_bytes(params)),
                  (path + ".json", json.dumps(meta).encode())):
    with open(p + ".tmp", "wb") as f:
      f.write(data)
    os.replace(p + ".tmp", p)


def _meta(path: str) -> dict:
  for p in (path, path + ".json"):
    if not os.path.isfile(p):
      raise FileNotFoundError(f"{p}: no such file (a refiner is saved as the pair "
                              f"{path} and {path}.json by refiner.save)")
  with open(path + ".json") as f:
    return json.load(f)


def load_module(path: str) -> MaskRefiner:
  """The module (its sizes) of the refiner saved at ``path``, from ``path + '.json'``."""
  meta = _meta(path)
  return MaskRefiner(**{k: meta[k] for k in _FIELDS})


def chosen_back_off(path: str) -> dict | None:
  """The back-off saved with the refiner at ``path`` (``{"unsure_margin",
  "unsure_mix", ...}``, chosen on val by ``refining.choose_back_off``), or None."""
  return _meta(path).get("back_off")


def load(path: str) -> tuple[MaskRefiner, dict]:
  """The refiner saved at ``path``: ``(module, params)``."""
  model = load_module(path)
  with open(path, "rb") as f:
    return model, serialization.from_bytes(init_params(model), f.read())


def init_params(model: MaskRefiner, seed: int = 0):
  """``model``'s initial parameters (their shapes do not depend on the signals' length)."""
  x = jnp.zeros((1, 4 * HOP * 4), jnp.float32)
  return model.init(jax.random.PRNGKey(seed), x, x, x)
