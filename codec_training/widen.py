"""A wider DAC decoder that starts as the narrower one it grows from (Net2WiderNet,
Chen, Goodfellow and Shlens, 2016).

A trained codec's decoder widened from ``decoder_dim`` C to C' > C channels at its input
(and every stage after it, each half the one before: C/2**s to C'/2**s) decodes as
before: stage ``s``'s new channel ``j`` copies old channel ``j mod C_s`` (its incoming
weights, bias and Snake ``alpha``), and every layer that reads a copied channel divides
that channel's outgoing weights by its number of copies. The residual units add
streams whose copies agree, so the sums agree too. Copies that stayed equal would get
equal gradients and never part (Adam's update is blind to the split), so ``noise``
scales the copies' incoming weights by ``1 + noise * N(0, 1)`` each: a small change of
the function that lets them learn apart.

The functions work on DAC state dicts (``torch.nn.utils.weight_norm``'s ``weight_g`` /
``weight_v`` pairs) of the installed ``dac`` package's decoder layout:
``decoder.model.0`` (the input conv), ``decoder.model.1..4`` (``DecoderBlock``: Snake,
transposed conv, three ``ResidualUnit``s of Snake, conv k7, Snake, conv k1),
``decoder.model.5`` (Snake), ``decoder.model.6`` (the output conv).
"""

from __future__ import annotations

import re

import torch

_BLOCK = re.compile(r"decoder\.model\.(\d+)\.block\.(\d+)(?:\.block\.(\d+))?\.(\w+)$")


def _stage_maps(old_dim: int, new_dim: int, n_blocks: int) -> list[torch.Tensor]:
  """Per stage (0: the input conv's output; ``s``: block ``s``'s output), the old
  channel each new channel copies: ``[C'_s]`` indices into ``[0, C_s)``."""
  return [torch.arange(new_dim // 2 ** s) % (old_dim // 2 ** s) for s in range(n_blocks + 1)]


def _weight(state: dict, prefix: str) -> torch.Tensor:
  """A weight-normed layer's weight, ``g * v / |v|`` (the norm over every axis but 0)."""
  g, v = state[prefix + "weight_g"].double(), state[prefix + "weight_v"].double()
  return g * v / v.norm(dim=tuple(range(1, v.dim())), keepdim=True)


def _put(out: dict, prefix: str, w: torch.Tensor, like: torch.Tensor,
         rows: torch.Tensor | None) -> None:
  """Stores ``w`` as a weight-norm pair whose directions ``v`` keep the norms of the old
  rows they copy (``rows``: the old row of each new one; None: the same rows): under
  weight norm a step moves the weight by about lr / |v|, so the norms set the rate."""
  v_norm = like.double().norm(dim=tuple(range(1, like.dim())), keepdim=True)
  if rows is not None:
    v_norm = v_norm[rows]
  w_norm = w.norm(dim=tuple(range(1, w.dim())), keepdim=True)
  out[prefix + "weight_v"] = (w / w_norm * v_norm).to(like.dtype)
  out[prefix + "weight_g"] = w_norm.to(like.dtype)


def widen_decoder(state: dict, old_dim: int, new_dim: int, noise: float = 0.0,
                  seed: int = 0) -> dict:
  """``state`` (a DAC state dict with a ``decoder_dim`` ``old_dim`` decoder) with the
  decoder widened to ``new_dim``; other entries unchanged. With ``noise`` 0 the
  widened decoder computes the same function (to float rounding)."""
  n_blocks = len({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})
  if new_dim < old_dim or new_dim % 2 ** n_blocks or old_dim % 2 ** n_blocks:
    raise ValueError(f"widen_decoder: decoder_dim {old_dim} -> {new_dim}: it may only grow, "
                     f"and each must halve over the decoder's {n_blocks} stages.")
  maps = _stage_maps(old_dim, new_dim, n_blocks)
  copies = [torch.bincount(g).double() for g in maps]
  gen = torch.Generator().manual_seed(seed)
  out = {k: v for k, v in state.items() if not k.startswith("decoder.")}

  def jitter(w: torch.Tensor, g_out: torch.Tensor, axis: int) -> torch.Tensor:
    # The copies (new channels past the old count) get their own small perturbation.
    fresh = torch.arange(len(g_out)) >= int(g_out.max()) + 1
    if noise and fresh.any():
      scale = 1 + noise * torch.randn(w.shape, generator=gen, dtype=w.dtype)
      mask = fresh.view([-1 if a == axis else 1 for a in range(w.dim())])
      w = torch.where(mask, w * scale, w)
    return w

  def conv(prefix: str, s_in: int | None, s_out: int | None, transposed: bool = False):
    w = _weight(state, prefix)                    # conv [out, in, k]; transposed [in, out, k]
    a_in, a_out = (0, 1) if transposed else (1, 0)
    if s_in is not None:
      w = w.index_select(a_in, maps[s_in]) / copies[s_in][maps[s_in]].view(
          [-1 if a == a_in else 1 for a in range(3)])
    if s_out is not None:
      w = jitter(w.index_select(a_out, maps[s_out]), maps[s_out], a_out)
      out[prefix + "bias"] = state[prefix + "bias"][maps[s_out]]
    else:
      out[prefix + "bias"] = state[prefix + "bias"]
    # Weight norm's rows are axis 0: the output channels, or a transposed conv's inputs.
    s_row = s_in if transposed else s_out
    _put(out, prefix, w, state[prefix + "weight_v"], None if s_row is None else maps[s_row])

  def snake(prefix: str, s: int):
    out[prefix + "alpha"] = state[prefix + "alpha"][:, maps[s]]

  conv("decoder.model.0.", None, 0)
  for b in range(1, n_blocks + 1):
    p = f"decoder.model.{b}.block."
    snake(p + "0.", b - 1)
    conv(p + "1.", b - 1, b, transposed=True)
    for r in (2, 3, 4):
      q = f"{p}{r}.block."
      snake(q + "0.", b)
      conv(q + "1.", b, b)
      snake(q + "2.", b)
      conv(q + "3.", b, b)
  snake(f"decoder.model.{n_blocks + 1}.", n_blocks)
  conv(f"decoder.model.{n_blocks + 2}.", n_blocks, None)
  missing = {k for k in state if k.startswith("decoder.")} - set(out)
  if missing:
    raise ValueError(f"widen_decoder: decoder entries of an unknown layout: {sorted(missing)[:4]}")
  return out
