"""Where a trained codec's reconstruction error comes from: the codebooks, the network, the bands.

  python scripts/codec_bitrate.py --run runs/codec/speech [--n 16]
  python scripts/codec_bitrate.py --weights codec_bridge/weights/speech_wide/speech_codec_wide_16khz.pth

Decodes fresh held-out single-talker clips (``codec_training.train.heldout``) through
the run's latest weights (or shipped weights, with the spec from the ``manifest.json``
beside them) with 2, 4, ... n_codebooks codebooks, and once without the quantizer (the
encoder's continuous output, decoded as is). If quality still rises with the last
codebooks, more bit rate helps; if it has flattened, the encoder and decoder are the
limit. SI-SDR at lag 0, STOI and ESTOI, and the waveform correlation of input and
output in each octave-wide band (zero-phase band-pass): a band that matches in level
but not in phase has correlation near 0 and costs SI-SDR, not STOI.

Then the SI-SDR at each lag of -3..3 samples (a codec that delays its output loses
SI-SDR at lag 0). Last, what SI-SDR allows: the input with its spectrum kept exactly below a frequency
and its phase randomized above it (magnitudes exact), the SI-SDR a codec that codes
the waveform only below that frequency could at best reach.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy import signal as sps
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from codec_bridge import loading  # pylint: disable=wrong-import-position
from codec_training import train as train_codec  # pylint: disable=wrong-import-position

BANDS_HZ = ((50, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 7900))
PHASE_CUTS_HZ = (1000, 2000, 4000)


def band_pass(x: np.ndarray, lo: float, hi: float, sample_rate: int) -> np.ndarray:
  """``x`` [n, T] through a zero-phase 6th-order Butterworth band-pass."""
  sos = sps.butter(6, [lo, min(hi, 0.49 * sample_rate)], btype="band", fs=sample_rate,
                   output="sos")
  return sps.sosfiltfilt(sos, x, axis=1)


def band_correlations(x: np.ndarray, y: np.ndarray, sample_rate: int) -> list[float]:
  """Mean input/output waveform correlation per band of ``BANDS_HZ``; ``[n, T]`` each."""
  return [float(np.mean(train_codec.polarity(band_pass(x, lo, hi, sample_rate),
                                             band_pass(y, lo, hi, sample_rate))))
          for lo, hi in BANDS_HZ]


def band_shares(x: np.ndarray, sample_rate: int) -> list[float]:
  """Mean share of each band of ``BANDS_HZ`` in the energy of the clips ``x`` [n, T]."""
  return [float(np.mean((band_pass(x, lo, hi, sample_rate) ** 2).sum(1) / (x ** 2).sum(1)))
          for lo, hi in BANDS_HZ]


def phase_cap(x: np.ndarray, cut_hz: float, sample_rate: int, seed: int = 0) -> float:
  """Mean SI-SDR of ``x`` [n, T] with its phase above ``cut_hz`` randomized."""
  spec = np.fft.rfft(x, axis=1)
  above = np.fft.rfftfreq(x.shape[1], 1 / sample_rate) > cut_hz
  phase = np.exp(2j * np.pi * np.random.default_rng(seed).random(spec.shape))
  spec[:, above] *= phase[:, above]
  return float(np.mean(train_codec.si_sdr_db(x, np.fft.irfft(spec, n=x.shape[1], axis=1))))


def load_spec(path: str) -> train_codec.CodecSpec:
  """The codec spec in a run's ``spec.json`` or under a manifest's ``spec``."""
  saved = json.load(open(path))
  return train_codec.CodecSpec.from_dict(saved.get("spec", saved))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  which = p.add_mutually_exclusive_group(required=True)
  which.add_argument("--run", help="a codec_training.train output folder")
  which.add_argument("--weights", help="shipped weights, a manifest.json beside them")
  p.add_argument("--n", type=int, default=16, help="held-out clips")
  args = p.parse_args(argv)
  from pystoi import stoi  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  if args.run:
    spec = load_spec(os.path.join(args.run, "spec.json"))
    weights = os.path.join(args.run, "weights.pth")
  else:
    spec = load_spec(os.path.join(os.path.dirname(args.weights), "manifest.json"))
    weights = args.weights
  gen = loading.load_dac(weights=weights, device="cpu")
  gen.eval()
  x = train_codec.heldout(spec, args.n, kind="single")

  def report(name, y):
    sr = spec.sample_rate
    print(f"{name:>14}: SI-SDR {np.mean(train_codec.si_sdr_db(x, y)):6.2f} dB  "
          f"STOI {np.mean([stoi(a, b, sr) for a, b in zip(x, y)]):.3f}  "
          f"ESTOI {np.mean([stoi(a, b, sr, extended=True) for a, b in zip(x, y)]):.3f}  "
          "band r " + " ".join(f"{r:.3f}" for r in band_correlations(x, y, sr)), flush=True)

  print("bands (Hz): " + ", ".join(f"{lo}-{hi}" for lo, hi in BANDS_HZ) + "; share of the "
        "input's energy " + " ".join(f"{e:.3f}" for e in band_shares(x, spec.sample_rate)))

  for nq in range(2, spec.n_codebooks + 1, 2):
    report(f"{nq} codebooks", train_codec.reconstruct(gen, x, n_quantizers=nq))
  with torch.no_grad():
    y = gen.decoder(gen.encoder(torch.from_numpy(x)[:, None]))[:, 0].numpy()
  out = np.zeros_like(x)
  m = min(x.shape[1], y.shape[1])
  out[:, :m] = y[:, :m]
  report("no quantizer", out)
  full = train_codec.reconstruct(gen, x)
  shifted = {lag: train_codec.si_sdr_db(x[:, max(lag, 0):x.shape[1] + min(lag, 0)],
                                        full[:, max(-lag, 0):x.shape[1] - max(lag, 0)])
             for lag in range(-3, 4)}
  print("SI-SDR by lag (samples): " + "  ".join(f"{lag:+d}: {np.mean(v):.2f}"
                                                for lag, v in shifted.items()), flush=True)
  for cut in PHASE_CUTS_HZ:
    print(f"waveform exact below {cut} Hz, phase random above: SI-SDR "
          f"{phase_cap(x, cut, spec.sample_rate):6.2f} dB", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
