"""The frozen DAC as ``neurocodec_jax`` receives it: one object, built from a config.

``neurocodec_jax.run.load_codec`` makes it (the one place the JAX package names this
one); runs, evaluation and ``latent_structure`` call its methods and never see torch.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch

from codec_bridge import precompute
from codec_bridge.decode import _callback, hop_length, make_decoder
from codec_bridge.encode import encode
from codec_bridge.loading import load_dac_from_config
from codec_bridge.quantizer import quantizer_params


class FrozenDAC:
  """A frozen torch DAC behind the methods ``neurocodec_jax.run.Codec`` names."""

  def __init__(self, model):
    self.model = model

  @classmethod
  def from_config(cls, codec_config) -> FrozenDAC:
    return cls(load_dac_from_config(codec_config))

  def frozen_params(self) -> dict:
    """``{"quantizer", "decoder"}``: the arrays the jitted programs take as an argument
    (``neurocodec_jax.run.Codec``); the quantizer as the pytree ``neurocodec_jax.codec``
    reads, no decoder arrays (None): its weights stay in torch."""
    return dict(quantizer=quantizer_params(self.model), decoder=None)

  def decoder(self) -> Callable[[None, jax.Array], jax.Array]:
    """``decode(params, z) [B, D, F] -> [B, 1, F * hop]``, differentiable, usable under
    jit; ``params`` (``frozen_params()["decoder"]``, None) is ignored: the host
    callbacks run the torch decoder (``make_decoder``)."""
    torch_decode = make_decoder(self.model)

    def decode(params, z: jax.Array) -> jax.Array:
      del params
      return torch_decode(z)

    decode.hop_length = torch_decode.hop_length
    return decode

  def encoder(self) -> tuple[Callable, None]:
    """``(encode, params)``: ``encode(params, audio [B, 1, T]) -> latent [B, D, T / hop]``,
    DAC's encoder (no preprocessing: ``T`` a multiple of the hop) through a host
    callback, usable under jit; ``params`` None (the weights stay in torch)."""
    model = self.model
    device = next(model.parameters()).device
    latent_dim, hop = int(model.latent_dim), hop_length(model)

    def host(audio):
      with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(audio, np.float32)).to(device)
        return model.encoder(x).cpu().numpy()

    def encode(params, audio: jax.Array) -> jax.Array:
      del params
      shape = (audio.shape[0], latent_dim, audio.shape[-1] // hop)
      return _callback(host, jax.ShapeDtypeStruct(shape, jnp.float32), audio)

    return encode, None

  def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, 1, T]`` -> ``(codes, quantized z, continuous latent)`` (``encode.encode``)."""
    return encode(self.model, audio)

  def ensure_codes(self, config, split: str) -> str:
    """The path of ``split``'s valid codes cache, computed when missing or stale."""
    return precompute.ensure_codes(config, split, dac_model=self.model)
