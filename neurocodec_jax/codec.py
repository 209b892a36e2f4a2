"""DAC's residual vector quantizer, ported to JAX and frozen (its sizes:
``neurocodec_jax.codec_arch``, re-exported here).

Matches ``dac.nn.quantize.ResidualVectorQuantize`` (descript-audio-codec 1.0.0):
``codes_to_z`` is its ``from_codes`` (codebook lookups, 1x1 output projections,
summed over codebooks) and ``requantize`` its eval-mode ``forward`` with
``n_quantizers``: per codebook, project the residual (1x1 in_proj), take the
nearest codebook entry in cosine geometry (both sides L2-normalized), project it
back (out_proj) and subtract it from the residual.

The parameter pytree (built by ``codec_bridge.quantizer_params`` from a torch DAC,
weight norm folded in)::

  codebook  [n_codebooks, codebook_size, codebook_dim]
  in_w      [n_codebooks, codebook_dim, latent_dim]    in_b  [n_codebooks, codebook_dim]
  out_w     [n_codebooks, latent_dim, codebook_dim]    out_b [n_codebooks, latent_dim]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# DAC's sizes are defined in codec_arch (no JAX there: configs read them); re-exported.
from neurocodec_jax.codec_arch import (ARCH_KEYS, DAC_ARCHS, DEMO_CODEC,  # pylint: disable=unused-import
                                       frame_count, frame_rate, frame_seconds, hop_length)
from neurocodec_jax.ops.precision import HIGHEST


def codes_to_z(qparams: dict, codes: jax.Array) -> jax.Array:
  """Codes ``[batch, n, frames]`` (n <= n_codebooks) -> z ``[batch, latent_dim, frames]``."""
  n = _check_codebooks(qparams, codes.shape[1], "codes")
  # [n, batch, frames, codebook_dim]
  entries = jax.vmap(lambda cb, idx: cb[idx], in_axes=(0, 1))(qparams["codebook"][:n], codes)
  return _project_entries(qparams, entries)


def weights_to_z(qparams: dict, weights: jax.Array) -> jax.Array:
  """Per-codebook weights over the entries ``[batch, n, frames, codebook_size]`` -> z
  ``[batch, latent_dim, frames]``: :func:`codes_to_z` of a weighted sum of entries
  (one-hot weights give exactly the codes' z; soft ones carry a gradient to them)."""
  n = _check_codebooks(qparams, weights.shape[1], "weights")
  entries = jnp.einsum("bnfk,nkd->nbfd", weights, qparams["codebook"][:n], precision=HIGHEST)
  return _project_entries(qparams, entries)


def _check_codebooks(qparams: dict, n: int, what: str) -> int:
  if n > qparams["codebook"].shape[0]:
    raise ValueError(f"{what} have {n} codebooks, the quantizer {qparams['codebook'].shape[0]}.")
  return n


def _project_entries(qparams: dict, entries: jax.Array) -> jax.Array:
  """Entries ``[n, batch, frames, codebook_dim]`` of the first n codebooks -> z
  ``[batch, latent_dim, frames]``: their output projections, summed."""
  n = entries.shape[0]
  z = jnp.einsum("nbfd,nkd->bkf", entries, qparams["out_w"][:n], precision=HIGHEST)
  return z + qparams["out_b"][:n].sum(0)[None, :, None]


def _normalize(x: jax.Array, axis: int) -> jax.Array:
  # F.normalize: x / max(||x||, 1e-12)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def quantize_step(qparams: dict, i: int, residual: jax.Array):
  """One codebook: ``(z_q_i [B, D, F], codes_i [B, F])`` for the residual ``[B, D, F]``."""
  z_e = jnp.einsum("kd,bdf->bkf", qparams["in_w"][i], residual, precision=HIGHEST)
  z_e = z_e + qparams["in_b"][i][None, :, None]
  enc = _normalize(z_e, axis=1)                         # [B, d, F]
  book = _normalize(qparams["codebook"][i], axis=1)     # [K, d]
  # Squared distance as DAC writes it (|e|^2 - 2 e.c + |c|^2), argmin over entries.
  dist = (jnp.sum(enc ** 2, axis=1)[:, None, :]
          - 2 * jnp.einsum("bdf,kd->bkf", enc, book, precision=HIGHEST)
          + jnp.sum(book ** 2, axis=1)[None, :, None])
  codes = jnp.argmin(dist, axis=1)                      # [B, F]
  z_q = jnp.einsum("bfd,kd->bkf", qparams["codebook"][i][codes], qparams["out_w"][i],
                   precision=HIGHEST) + qparams["out_b"][i][None, :, None]
  return z_q, codes


def output_latent(qparams: dict, z: jax.Array, requantize_output: bool,
                  n_quantizers: int | None) -> jax.Array:
  """The latent a prediction ``z [batch, latent_dim, frames]`` is decoded from:
  re-quantized with ``n_quantizers`` codebooks (``codec.requantize_output``, the
  original) or as predicted. Evaluation, extraction, streaming and the waveform
  training terms all decode this."""
  return requantize(qparams, z, n_quantizers) if requantize_output else z


def requantize(qparams: dict, z: jax.Array, n_quantizers: int | None = None,
               return_codes: bool = False):
  """Re-quantizes z ``[batch, latent_dim, frames]`` with the first ``n_quantizers`` codebooks.

  Equal to ``dac_model.quantizer(z, n_quantizers)[0]`` in eval mode (and the
  codes, ``[batch, n_quantizers, frames]``, with ``return_codes``). Not
  differentiable through the codebook choice (argmin), as DAC's.
  """
  n = qparams["codebook"].shape[0] if n_quantizers is None else int(n_quantizers)
  residual, z_q, codes = z, jnp.zeros_like(z), []
  for i in range(n):
    z_q_i, codes_i = quantize_step(qparams, i, residual)
    z_q, residual = z_q + z_q_i, residual - z_q_i
    codes.append(codes_i)
  return (z_q, jnp.stack(codes, axis=1)) if return_codes else z_q
