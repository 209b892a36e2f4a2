"""Does a codec's latent space support extraction? Measured on a split with both talkers.

``python -m neurocodec_jax.cli.latent_structure --config neurocodec_jax/configs/neurocodec.py:demo
[--split test --n 64]`` encodes the mixture, the attended and the unattended talker
of the first ``n`` trials with the configured DAC and prints, for its continuous
encoder output and for the quantized ``z`` the model reads and predicts (as the
original):

  additivity        mean frame cosine of z(mixture) with z(attended) + z(unattended):
                    near 1 when the latent is close to linear in the waveform
  cos_mix_attended  mean frame cosine of z(mixture) with z(attended) (and unattended)
  id_copy           identification rate of copying the mixture (EEG-free baseline;
                    evaluate.py's ``id_latent_mixture`` on the quantized z)
  id_gate           identification rate of the mixture gated frame by frame with the
                    TRUE attended-dominance (|z_att| > |z_unatt|, else zero): what a
                    model that decodes frame-level attention from EEG could reach
                    without separating the talkers

and, across the two: ``quantization_cosine``, the mean frame cosine of a talker's
continuous latent with its own quantized one (near 1 when the quantizer keeps the
encoder's directions; a model that reads one and is scored against the other must
learn the map between them), and ``cos_mix_continuous_attended_quantized``.

A trained DAC's quantizer is fit to its encoder, so its quantized z keeps the
encoder's structure; a random-weight codec's quantizer (random codebooks and
projections) does not, which this tool shows in numbers.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from neurocodec_jax.losses import frame_cosine   # what evaluate's cos_* keys use
from neurocodec_jax.run import Codec

KINDS = ("noisy", "clean", "unattended")


def structure(z_mix: np.ndarray, z_att: np.ndarray, z_un: np.ndarray) -> dict:
  """The module docstring's measures for latents ``[n, D, F]`` of the three signals."""
  ca, cu = frame_cosine(z_mix, z_att), frame_cosine(z_mix, z_un)
  gate = (np.linalg.norm(z_att, axis=1) > np.linalg.norm(z_un, axis=1))[:, None]
  gated = np.where(gate, z_mix, 0.0)
  return dict(additivity=float(frame_cosine(z_mix, z_att + z_un).mean()),
              cos_mix_attended=float(ca.mean()), cos_mix_unattended=float(cu.mean()),
              id_copy=float(np.mean(ca > cu)),
              id_gate=float(np.mean(frame_cosine(gated, z_att) > frame_cosine(gated, z_un))))


def _measure(codec: Codec, chunks) -> dict:
  """The measures of the continuous and the quantized latents of ``chunks``: audio
  ``(mixture, attended, unattended)``, each ``[b, 1, T]``, encoded by the codec."""
  z = {k: ([], []) for k in KINDS}
  for chunk in chunks:
    for k, audio in zip(KINDS, chunk):
      _, quantized, continuous = codec.encode(audio)
      z[k][0].append(continuous)
      z[k][1].append(quantized)
  z = {k: [np.concatenate(parts) for parts in z[k]] for k in KINDS}
  out = {name: structure(*(z[k][i] for k in KINDS))
         for i, name in enumerate(("continuous", "quantized"))}
  out["quantization_cosine"] = float(frame_cosine(z["clean"][0], z["clean"][1]).mean())
  out["cos_mix_continuous_attended_quantized"] = float(
      frame_cosine(z["noisy"][0], z["clean"][1]).mean())
  return out


def measure_arrays(codec: Codec, mix: np.ndarray, att: np.ndarray, unatt: np.ndarray,
                   batch: int = 16) -> dict:
  """The measures on audio arrays ``[n, T]`` (e.g. the codec trainer's held-out clips)."""
  return _measure(codec, ([np.asarray(x[start:start + batch], np.float32)[:, None]
                           for x in (mix, att, unatt)]
                          for start in range(0, len(mix), batch)))


def measure(codec: Codec, source, n: int = 64, batch: int = 16) -> dict:
  """``{"continuous": {...}, "quantized": {...}, "n"}`` on the first ``n`` trials of a
  source with the :data:`KINDS` fields."""
  n = min(n, len(source))

  def chunks():
    for start in tqdm(range(0, n, batch), desc="encode", unit="batch"):
      rows = [source[i] for i in range(start, min(start + batch, n))]
      yield [np.stack([r[k] for r in rows]) for k in KINDS]

  return dict(_measure(codec, chunks()), n=n)
