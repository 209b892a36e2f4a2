"""Every torch-to-JAX weight converter: torch modules' weights as the parameter trees of
their Flax ports in ``neurocodec_jax``, which imports no torch.

* ``dac_params_from_torch``: a ``dac.DAC`` -> ``neurocodec_jax.models.dac_jax``'s
  ``{"encoder", "decoder", "quantizer"}`` (weight norm folded with torch's own
  ``_weight_norm``; the quantizer is ``quantizer.quantizer_params``'s).
* ``discriminator_params_from_torch``: a ``dac.model.discriminator.Discriminator`` ->
  ``neurocodec_jax.models.discriminators.Discriminator``'s tree (``weight_v``,
  ``weight_g``, ``bias`` in torch's layout).
* ``mamba_params_from_torch``: a ``mamba_ssm`` ``Mamba`` -> ``neurocodec_jax.models.mamba``'s.

The discriminator's and Mamba's converters read only ``state_dict()`` (and the
discriminator's ``discriminators`` list), so the tests also convert gradients
through them, from a stand-in whose ``state_dict()`` holds the gradients.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch.nn.utils.weight_norm import WeightNorm

from codec_bridge.quantizer import quantizer_params
from neurocodec_jax import codec
from neurocodec_jax.models import dac_jax


def _numpy_state(module, dtype=None) -> dict:
  """``module.state_dict()`` as numpy arrays (cast to ``dtype`` when given)."""
  state = {}
  for k, v in module.state_dict().items():
    v = v.detach().cpu()
    state[k] = (v if dtype is None else v.to(dtype)).numpy()
  return state


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


def dac_params_from_torch(dac_model, dtype=np.float32) -> dict:
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


def discriminator_params_from_torch(torch_discriminator) -> dict:
  """Our parameter tree from a ``dac.model.discriminator.Discriminator``'s weights."""
  state = _numpy_state(torch_discriminator)
  params = {}
  for i, disc in enumerate(torch_discriminator.discriminators):
    kind = type(disc).__name__
    names = {}
    if kind in ("MPD", "MSD"):
      for j in range(len(disc.convs)):
        names[f"conv_{j}"] = f"discriminators.{i}.convs.{j}.0"
    else:
      for b, stack in enumerate(disc.band_convs):
        for j in range(len(stack)):
          names[f"band_{b}_conv_{j}"] = f"discriminators.{i}.band_convs.{b}.{j}.0"
    names["conv_post"] = f"discriminators.{i}.conv_post"
    params[f"disc_{i}"] = {
        ours: {p: jnp.asarray(state[f"{theirs}.{p}"]) for p in ("weight_v", "weight_g", "bias")}
        for ours, theirs in names.items()}
  return params


def mamba_params_from_torch(torch_mamba) -> dict:
  """Our parameter tree from a ``mamba_ssm`` ``Mamba``'s weights (float32)."""
  t = _numpy_state(torch_mamba, torch.float32)
  for name in ("in_proj.bias", "out_proj.bias"):
    if name in t:
      raise ValueError(f"Mamba with bias=True is not supported ({name}).")
  return {
      "in_proj": {"kernel": jnp.asarray(t["in_proj.weight"].T)},
      "conv1d_kernel": jnp.asarray(t["conv1d.weight"][:, 0, :]),
      "conv1d_bias": jnp.asarray(t["conv1d.bias"]),
      "x_proj": {"kernel": jnp.asarray(t["x_proj.weight"].T)},
      "dt_proj_kernel": jnp.asarray(t["dt_proj.weight"].T),
      "dt_proj_bias": jnp.asarray(t["dt_proj.bias"]),
      "A_log": jnp.asarray(t["A_log"]),
      "D": jnp.asarray(t["D"]),
      "out_proj": {"kernel": jnp.asarray(t["out_proj.weight"].T)},
  }
