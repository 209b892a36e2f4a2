"""The frozen quantizer's parameters as a JAX pytree (see ``neurocodec_jax.codec``)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch


def wn_weight(conv) -> torch.Tensor:
  """The effective weight of a weight-normed conv: g * v / ||v|| (norm over dims 1..)."""
  v, g = conv.weight_v.detach(), conv.weight_g.detach()
  return g * v / v.flatten(1).norm(dim=1).view(-1, *([1] * (v.dim() - 1)))


def quantizer_params(dac_model) -> dict:
  """``{"codebook", "in_w", "in_b", "out_w", "out_b"}`` stacked over codebooks, float32."""
  qs = dac_model.quantizer.quantizers
  dims = {q.codebook_dim for q in qs}
  if len(dims) != 1:
    raise ValueError(f"Codebooks of different dims {sorted(dims)} are not supported.")
  def stack(fn):
    return jnp.asarray(np.stack([fn(q).cpu().numpy() for q in qs]), jnp.float32)
  with torch.no_grad():
    return dict(codebook=stack(lambda q: q.codebook.weight),
                in_w=stack(lambda q: wn_weight(q.in_proj)[..., 0]),
                in_b=stack(lambda q: q.in_proj.bias),
                out_w=stack(lambda q: wn_weight(q.out_proj)[..., 0]),
                out_b=stack(lambda q: q.out_proj.bias))
