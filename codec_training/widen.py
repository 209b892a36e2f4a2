"""A wider DAC encoder or decoder that starts as the narrower one it grows from
(Net2WiderNet, Chen, Goodfellow and Shlens, 2016).

A trained codec's decoder widened from ``decoder_dim`` C to C' > C channels at its input
(and every stage after it, each half the one before: C/2**s to C'/2**s), or its
encoder from ``encoder_dim`` C to C' (each stage twice the one before), decodes as
before: stage ``s``'s new channel ``j`` copies old channel ``j mod C_s`` (its incoming
weights, bias and Snake ``alpha``), and every layer that reads a copied channel divides
that channel's outgoing weights by its number of copies. The residual units add
streams whose copies agree, so the sums agree too. The latent and the waveform keep
their sizes. Copies that stayed equal would get equal gradients and never part (Adam's
update is blind to the split), so ``noise`` scales the copies' incoming weights by
``1 + noise * N(0, 1)`` each: a small change of the function that lets them learn apart.

The functions work on DAC state dicts (``torch.nn.utils.weight_norm``'s ``weight_g`` /
``weight_v`` pairs) of the installed ``dac`` package's layout. Decoder:
``decoder.model.0`` (the input conv), ``decoder.model.1..4`` (``DecoderBlock``: Snake,
transposed conv, three ``ResidualUnit``s of Snake, conv k7, Snake, conv k1),
``decoder.model.5`` (Snake), ``decoder.model.6`` (the output conv). Encoder:
``encoder.block.0`` (the input conv), ``encoder.block.1..4`` (``EncoderBlock``: three
``ResidualUnit``s, Snake, strided conv), ``encoder.block.5`` (Snake),
``encoder.block.6`` (the conv to the latent).
"""

from __future__ import annotations

import re

import torch

_BLOCK = re.compile(r"(?:decoder\.model|encoder\.block)\.(\d+)\.block\.\d+")


def _row_norm(t: torch.Tensor) -> torch.Tensor:
  """Weight norm's norm: over every axis but 0, kept as ``[rows, 1, ...]``."""
  return t.norm(dim=tuple(range(1, t.dim())), keepdim=True)


def _weight(state: dict, prefix: str) -> torch.Tensor:
  """A weight-normed layer's weight, ``g * v / |v|``."""
  g, v = state[prefix + "weight_g"].double(), state[prefix + "weight_v"].double()
  return g * v / _row_norm(v)


def _put(out: dict, prefix: str, w: torch.Tensor, like: torch.Tensor,
         rows: torch.Tensor | None) -> None:
  """Stores ``w`` as a weight-norm pair whose directions ``v`` keep the norms of the old
  rows they copy (``rows``: the old row of each new one; None: the same rows): under
  weight norm a step moves the weight by about lr / |v|, so the norms set the rate."""
  v_norm = _row_norm(like.double())
  if rows is not None:
    v_norm = v_norm[rows]
  w_norm = _row_norm(w)
  out[prefix + "weight_v"] = (w / w_norm * v_norm).to(like.dtype)
  out[prefix + "weight_g"] = w_norm.to(like.dtype)


def _residual_unit(prefix: str, s: int):
  """A ``ResidualUnit``'s layers on stage ``s``'s channels."""
  return [("snake", prefix + "0.", s), ("conv", prefix + "1.", s, s, False),
          ("snake", prefix + "2.", s), ("conv", prefix + "3.", s, s, False)]


def _decoder_layers(n_blocks: int) -> list:
  """The decoder's layers in order: ``("conv", prefix, stage in, stage out, transposed)``
  (a stage None: the latent or the waveform, never widened) or ``("snake", prefix,
  stage)``; stage 0 is the input conv's output, stage ``b`` block ``b``'s."""
  layers = [("conv", "decoder.model.0.", None, 0, False)]
  for b in range(1, n_blocks + 1):
    p = f"decoder.model.{b}.block."
    layers += [("snake", p + "0.", b - 1), ("conv", p + "1.", b - 1, b, True)]
    for r in (2, 3, 4):
      layers += _residual_unit(f"{p}{r}.block.", b)
  return layers + [("snake", f"decoder.model.{n_blocks + 1}.", n_blocks),
                   ("conv", f"decoder.model.{n_blocks + 2}.", n_blocks, None, False)]


def _encoder_layers(n_blocks: int) -> list:
  """The encoder's layers in order, as :func:`_decoder_layers`' (stage 0: the input
  conv's output, stage ``b``: block ``b``'s, twice stage ``b - 1``'s channels)."""
  layers = [("conv", "encoder.block.0.", None, 0, False)]
  for b in range(1, n_blocks + 1):
    p = f"encoder.block.{b}.block."
    for r in (0, 1, 2):
      layers += _residual_unit(f"{p}{r}.block.", b - 1)
    layers += [("snake", p + "3.", b - 1), ("conv", p + "4.", b - 1, b, False)]
  return layers + [("snake", f"encoder.block.{n_blocks + 1}.", n_blocks),
                   ("conv", f"encoder.block.{n_blocks + 2}.", n_blocks, None, False)]


def widen_decoder(state: dict, old_dim: int, new_dim: int, noise: float = 0.0,
                  seed: int = 0) -> dict:
  """``state`` (a DAC state dict with a ``decoder_dim`` ``old_dim`` decoder) with the
  decoder widened to ``new_dim``; other entries unchanged. With ``noise`` 0 the
  widened decoder computes the same function (to float rounding)."""
  n = _blocks(state, "decoder.")
  if new_dim < old_dim or new_dim % 2 ** n or old_dim % 2 ** n:
    raise ValueError(f"widen_decoder: decoder_dim {old_dim} -> {new_dim}: it may only grow, "
                     f"and each must halve over the decoder's {n} stages.")
  maps = [torch.arange(new_dim // 2 ** s) % (old_dim // 2 ** s) for s in range(n + 1)]
  return _widen(state, "decoder.", _decoder_layers(n), maps, noise, seed)


def widen_encoder(state: dict, old_dim: int, new_dim: int, noise: float = 0.0,
                  seed: int = 0) -> dict:
  """``state`` with its ``encoder_dim`` ``old_dim`` encoder widened to ``new_dim`` (the
  latent keeps its size); other entries unchanged. With ``noise`` 0 the widened encoder
  computes the same function (to float rounding)."""
  if new_dim < old_dim:
    raise ValueError(f"widen_encoder: encoder_dim {old_dim} -> {new_dim}: it may only grow.")
  n = _blocks(state, "encoder.")
  maps = [torch.arange(new_dim * 2 ** s) % (old_dim * 2 ** s) for s in range(n + 1)]
  return _widen(state, "encoder.", _encoder_layers(n), maps, noise, seed)


def _blocks(state: dict, part: str) -> int:
  """How many up- or down-sampling blocks the state's encoder or decoder has."""
  return len({int(m.group(1)) for k in state if k.startswith(part) and (m := _BLOCK.match(k))})


def _widen(state: dict, part: str, layers: list, maps: list, noise: float, seed: int) -> dict:
  """``state`` with the ``part`` ("encoder." or "decoder.") layers widened: stage ``s``'s
  new channel ``j`` copies old channel ``maps[s][j]``."""
  copies = [torch.bincount(g).double() for g in maps]
  gen = torch.Generator().manual_seed(seed)
  out = {k: v for k, v in state.items() if not k.startswith(part)}

  def jitter(w: torch.Tensor, g_out: torch.Tensor, axis: int) -> torch.Tensor:
    # The copies (new channels past the old count) get their own small perturbation.
    fresh = torch.arange(len(g_out)) >= int(g_out.max()) + 1
    if noise and fresh.any():
      scale = 1 + noise * torch.randn(w.shape, generator=gen, dtype=w.dtype)
      mask = fresh.view([-1 if a == axis else 1 for a in range(w.dim())])
      w = torch.where(mask, w * scale, w)
    return w

  for layer in layers:
    if layer[0] == "snake":
      _, prefix, s = layer
      out[prefix + "alpha"] = state[prefix + "alpha"][:, maps[s]]
      continue
    _, prefix, s_in, s_out, transposed = layer
    w = _weight(state, prefix)                    # conv [out, in, k]; transposed [in, out, k]
    a_in, a_out = (0, 1) if transposed else (1, 0)
    if s_in is not None:
      w = w.index_select(a_in, maps[s_in]) / copies[s_in][maps[s_in]].view(
          [-1 if a == a_in else 1 for a in range(3)])
    bias = state[prefix + "bias"]
    if s_out is not None:
      w = jitter(w.index_select(a_out, maps[s_out]), maps[s_out], a_out)
      bias = bias[maps[s_out]]
    out[prefix + "bias"] = bias
    # Weight norm's rows are axis 0: the output channels, or a transposed conv's inputs.
    s_row = s_in if transposed else s_out
    _put(out, prefix, w, state[prefix + "weight_v"], None if s_row is None else maps[s_row])
  missing = {k for k in state if k.startswith(part)} - set(out)
  if missing:
    raise ValueError(f"widen: {part[:-1]} entries of an unknown layout: {sorted(missing)[:4]}")
  return out
