"""Does a codec's latent space support extraction? Measured on a split with both talkers.

``python -m neurocodec_jax.latent_structure --config configs/neurocodec.py:demo
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

A trained DAC's quantizer is fit to its encoder, so its quantized z keeps the
encoder's structure; a random-weight codec's quantizer (random codebooks and
projections) does not, which this tool shows in numbers.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from neurocodec_jax.losses import frame_cosine   # what evaluate's cos_* keys use
from neurocodec_jax.data import open_split

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


def encode(dac_model, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
  """``[n, 1, T]`` -> (continuous encoder output, quantized z), each ``[n, D, F]``."""
  device = next(dac_model.parameters()).device
  with torch.inference_mode():
    x = dac_model.preprocess(torch.from_numpy(audio).to(device), sample_rate)
    z_e = dac_model.encoder(x)
    z_q = dac_model.quantizer(z_e)[0]
  return z_e.cpu().numpy(), z_q.cpu().numpy()


def measure_arrays(dac_model, mix: np.ndarray, att: np.ndarray, unatt: np.ndarray,
                   batch: int = 16) -> dict:
  """The measures on audio arrays ``[n, T]`` (e.g. the codec trainer's held-out clips)."""
  z = {k: ([], []) for k in KINDS}
  for start in range(0, len(mix), batch):
    for k, x in zip(KINDS, (mix, att, unatt)):
      cont, quant = encode(dac_model, np.asarray(x[start:start + batch], np.float32)[:, None],
                           int(dac_model.sample_rate))
      z[k][0].append(cont)
      z[k][1].append(quant)
  return {name: structure(*(np.concatenate(z[k][i]) for k in KINDS))
          for i, name in enumerate(("continuous", "quantized"))}


def measure(config, dac_model, split: str = "test", n: int = 64, batch: int = 16) -> dict:
  """``{"continuous": {...}, "quantized": {...}}`` on the first ``n`` trials of ``split``."""
  source = open_split(config, split, fields=KINDS)
  n = min(n, len(source))
  z = {k: ([], []) for k in KINDS}
  for start in tqdm(range(0, n, batch), desc=f"encode {split}", unit="batch"):
    rows = [source[i] for i in range(start, min(start + batch, n))]
    for k in KINDS:
      cont, quant = encode(dac_model, np.stack([r[k] for r in rows]),
                           config.codec.arch.sample_rate)
      z[k][0].append(cont)
      z[k][1].append(quant)
  out = {}
  for i, name in enumerate(("continuous", "quantized")):
    out[name] = structure(*(np.concatenate(z[k][i]) for k in KINDS))
  out["n"] = n
  return out


def main(argv):
  del argv
  import codec_bridge  # pylint: disable=g-import-not-at-top
  config = flags.FLAGS.config
  result = measure(config, codec_bridge.load_dac_from_config(config.codec),
                   flags.FLAGS.split, flags.FLAGS.n)
  print(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  # Flags only when run as a script, so importing this module defines none.
  config_flags.DEFINE_config_file("config", "configs/neurocodec.py:demo",
                                  "NeuroCodec config file and preset.")
  flags.DEFINE_string("split", "test", "split with unattended_<split>.h5")
  flags.DEFINE_integer("n", 64, "number of trials (the first n)")
  sys.exit(app.run(main))
