"""The frozen DAC run in JAX (``neurocodec_jax.models.dac_jax``), its weights from torch.

``params_from_torch`` copies a loaded ``dac.DAC`` into the Flax parameter pytree;
``JaxDAC`` is ``FrozenDAC`` with the encoder and decoder in JAX: its ``decoder()`` is
a pure JAX function of the decoder's weights and z (autodiff, no host callback).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.nn.utils.weight_norm import WeightNorm

from codec_bridge import precompute
from codec_bridge.loading import load_dac_from_config
from codec_bridge.quantizer import quantizer_params
from neurocodec_jax import codec
from neurocodec_jax.models import dac_jax


def _array(t: torch.Tensor, dtype) -> jax.Array:
  return jnp.asarray(t.detach().cpu().numpy().astype(dtype))


def _folded_weight(conv) -> torch.Tensor:
  """The kernel torch's forward uses: its weight-norm hook's own ``_weight_norm(v, g, dim)``
  (``quantizer.wn_weight``'s ``g * v / ||v||`` rounds differently in the last bit)."""
  hooks = [h for h in conv._forward_pre_hooks.values()  # pylint: disable=protected-access
           if isinstance(h, WeightNorm)]
  if len(hooks) != 1 or hooks[0].name != "weight":
    raise ValueError(f"{conv}: expected one torch weight_norm on 'weight'.")
  return torch._weight_norm(conv.weight_v, conv.weight_g, hooks[0].dim)  # pylint: disable=protected-access


def _conv(conv, dtype) -> dict:
  return dict(kernel=_array(_folded_weight(conv), dtype), bias=_array(conv.bias, dtype))


def _snake(snake, dtype) -> dict:
  return dict(alpha=_array(snake.alpha.reshape(-1), dtype))


def _residual(unit, dtype) -> dict:
  snake_0, conv_0, snake_1, conv_1 = unit.block
  return dict(snake_0=_snake(snake_0, dtype), conv_0=_conv(conv_0, dtype),
              snake_1=_snake(snake_1, dtype), conv_1=_conv(conv_1, dtype))


def _ends(conv_in, snake_out, conv_out, dtype) -> dict:
  return dict(conv_in=_conv(conv_in, dtype), snake_out=_snake(snake_out, dtype),
              conv_out=_conv(conv_out, dtype))


def _encoder(encoder, dtype) -> dict:
  conv_in, *blocks, snake_out, conv_out = encoder.block
  out = _ends(conv_in, snake_out, conv_out, dtype)
  for i, block in enumerate(blocks):
    *units, snake, conv = block.block
    out[f"block_{i}"] = dict(snake=_snake(snake, dtype), conv=_conv(conv, dtype),
                             **{f"res_{j}": _residual(u, dtype) for j, u in enumerate(units)})
  return out


def _decoder(decoder, dtype) -> dict:
  conv_in, *blocks, snake_out, conv_out, _ = decoder.model     # last: tanh
  out = _ends(conv_in, snake_out, conv_out, dtype)
  for i, block in enumerate(blocks):
    snake, conv_t, *units = block.block
    out[f"block_{i}"] = dict(snake=_snake(snake, dtype), conv_t=_conv(conv_t, dtype),
                             **{f"res_{j}": _residual(u, dtype) for j, u in enumerate(units)})
  return out


def params_from_torch(dac_model, dtype=np.float32) -> dict:
  """``{"encoder", "decoder", "quantizer"}``: a torch ``dac.DAC``'s weights as
  ``neurocodec_jax.models.dac_jax`` reads them; the quantizer is ``quantizer_params``'s.

  ``dtype``: of the encoder and decoder weights (float64 only for parity checks
  against DAC run in float64, under ``jax.enable_x64``); the quantizer is float32.
  """
  with torch.no_grad():
    params = dict(encoder=_encoder(dac_model.encoder, dtype),
                  decoder=_decoder(dac_model.decoder, dtype),
                  quantizer=quantizer_params(dac_model))
  hop = codec.hop_length(dac_model)
  if math.prod(dac_jax.decoder_module(params["decoder"]).rates) != hop:
    raise ValueError(f"DAC's decoder rates {list(dac_model.decoder_rates)} do not upsample "
                     f"by its hop {hop}: decode could not pad to frames * hop.")
  return params


class JaxDAC:
  """The methods ``neurocodec_jax.run.Codec`` names, with DAC's encoder and decoder in JAX.

  The codes cache (``ensure_codes``) is still computed by the torch model: it is keyed
  by the torch weights' hash and shared with the torch backend.
  """

  def __init__(self, model):
    self.model = model
    self.params = params_from_torch(model)

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

  def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, 1, T]`` -> ``(codes int16, quantized z, continuous latent)``, as ``encode.encode``."""
    codes, z, latent = _encode(self.params, jnp.asarray(audio, jnp.float32))
    return np.asarray(codes).astype(np.int16), np.asarray(z), np.asarray(latent)

  def ensure_codes(self, config, split: str) -> str:
    """The path of ``split``'s valid codes cache, computed (by torch) when missing or stale."""
    return precompute.ensure_codes(config, split, dac_model=self.model)


_encode = jax.jit(dac_jax.encode)
