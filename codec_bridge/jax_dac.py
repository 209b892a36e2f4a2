"""The frozen DAC run in JAX (``neurocodec_jax.models.dac_jax``), its weights from torch.

``JaxDAC`` is ``FrozenDAC`` with the encoder and decoder in JAX, its weights copied
from the loaded ``dac.DAC`` by ``converters.dac_params_from_torch``: its ``decoder()``
is a pure JAX function of the decoder's weights and z (autodiff, no host callback).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from codec_bridge import precompute
from codec_bridge.converters import dac_params_from_torch
from codec_bridge.loading import load_dac_from_config
from neurocodec_jax.models import dac_jax


class JaxDAC:
  """The methods ``neurocodec_jax.run.Codec`` names, with DAC's encoder and decoder in JAX.

  The codes cache (``ensure_codes``) is still computed by the torch model: it is keyed
  by the torch weights' hash and shared with the torch backend.
  """

  def __init__(self, model):
    self.model = model
    self.params = dac_params_from_torch(model)

  @classmethod
  def from_config(cls, codec_config) -> JaxDAC:
    return cls(load_dac_from_config(codec_config))

  def frozen_params(self) -> dict:
    """``{"quantizer", "decoder"}``: the weights the jitted programs take as an argument
    (``neurocodec_jax.run.Codec``), the decoder's the first argument of ``decoder()``'s
    ``decode``."""
    return dict(quantizer=self.params["quantizer"], decoder=self.params["decoder"])

  def decoder(self) -> Callable[[dict, jax.Array], jax.Array]:
    """``decode(params, z) [B, D, F] -> [B, 1, F * hop]``, ``params`` the decoder's
    weights (``frozen_params()["decoder"]``): pure JAX, differentiable, jit/vmap.

    The weights are an argument, not closed over: a jitted caller would embed
    closed-over weights in its program as constants (``neurocodec_jax.run``).
    """
    latent_dim = int(self.model.latent_dim)

    def decode(params: dict, z: jax.Array) -> jax.Array:
      if z.ndim != 3 or z.shape[1] != latent_dim:
        raise ValueError(f"decode expects z of shape [batch, {latent_dim}, frames], "
                         f"got {tuple(z.shape)}.")
      return dac_jax.decode(dict(decoder=params), z)

    decode.hop_length = dac_jax.hop_length(self.params)
    return decode

  def encoder(self) -> tuple[Callable, dict]:
    """``(encode, params)``: ``encode(params, audio [B, 1, T]) -> latent [B, D, T / hop]``,
    DAC's encoder in JAX (no preprocessing: ``T`` a multiple of the hop), ``params``
    its weights."""
    module = dac_jax.encoder_module(self.params["encoder"])
    return (lambda params, audio: module.apply({"params": params}, audio)), self.params["encoder"]

  def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, 1, T]`` -> ``(codes int16, quantized z, continuous latent)``, as ``encode.encode``."""
    codes, z, latent = _encode(self.params, jnp.asarray(audio, jnp.float32))
    return np.asarray(codes).astype(np.int16), np.asarray(z), np.asarray(latent)

  def ensure_codes(self, config, split: str) -> str:
    """The path of ``split``'s valid codes cache, computed (by torch) when missing or stale."""
    return precompute.ensure_codes(config, split, dac_model=self.model)


_encode = jax.jit(dac_jax.encode)
