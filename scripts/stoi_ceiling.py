"""How intelligible can a reconstruction of the synthetic talkers be at a given SI-SDR?

Issue 18 asks the demo codec for STOI >= 0.85 on held-out synthetic speech. Every
codec run plateaus at ~0.83-0.84 (single talkers) whatever we change, so this
measures the signal's own STOI/ESTOI under distortions of known SI-SDR, on the same
held-out clips ``ship_codec`` scores (``train_codec.heldout``):

  * white noise at SI-SDR 5 ... 30 dB;
  * signal-shaped noise (the clip's own magnitude spectrogram with random phase,
    i.e. noise where the speech is) at the same SI-SDRs;
  * the codec's own reconstruction (``--codec``), with its per-clip SI-SDR.

  python scripts/stoi_ceiling.py [--codec codec_bridge/weights/demo_codec_16khz.pth] \
      [--n 32] [--out experiments/codec_stoi_ceiling/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from pystoi import stoi

from codec_bridge import train_codec


def _scaled_noise(x: np.ndarray, noise: np.ndarray, si_sdr_db: float) -> np.ndarray:
  """``x + g * noise`` with ``g`` set so that the sum's SI-SDR is ``si_sdr_db``.

  The noise is first made orthogonal to ``x`` so the SI-SDR is exact.
  """
  noise = noise - (noise @ x) / (x @ x) * x
  g = np.sqrt((x @ x) / (noise @ noise) / 10 ** (si_sdr_db / 10))
  return x + g * noise


def _shaped_noise(x: np.ndarray, rng, n_fft: int = 512) -> np.ndarray:
  """Noise with ``x``'s short-time magnitude and random phase: ``[T]``."""
  from scipy.signal import istft, stft  # pylint: disable=g-import-not-at-top
  _, _, spec = stft(x, nperseg=n_fft)
  phase = np.exp(2j * np.pi * rng.random(spec.shape))
  _, y = istft(np.abs(spec) * phase, nperseg=n_fft)
  return y[:len(x)] if len(y) >= len(x) else np.pad(y, (0, len(x) - len(y)))


def _scores(ref, est, sr):
  return (float(np.mean([stoi(a, b, sr) for a, b in zip(ref, est)])),
          float(np.mean([stoi(a, b, sr, extended=True) for a, b in zip(ref, est)])))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--codec", default=None, help="a DAC weights file (optional)")
  p.add_argument("--n", type=int, default=32)
  p.add_argument("--levels", type=float, nargs="+", default=[5, 10, 15, 20, 25, 30])
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  spec = train_codec.CodecSpec()
  sr = spec.sample_rate
  rows = []
  for kind in ("single", "mixture"):
    x = train_codec.heldout(spec, args.n, kind=kind).astype(np.float64)
    rng = np.random.default_rng(0)
    for name in ("white", "shaped"):
      for level in args.levels:
        est = np.stack([_scaled_noise(c, rng.standard_normal(len(c)) if name == "white"
                                      else _shaped_noise(c, rng), level) for c in x])
        s, e = _scores(x, est, sr)
        rows.append(dict(kind=kind, distortion=f"{name} noise", si_sdr=level, stoi=s, estoi=e))
        print(json.dumps(rows[-1]), flush=True)
    if args.codec:
      from codec_bridge import loading  # pylint: disable=g-import-not-at-top
      gen = loading.load_dac("16khz", weights=args.codec, device="cpu")
      y = train_codec.reconstruct(gen, x.astype(np.float32)).astype(np.float64)
      s, e = _scores(x, y, sr)
      rows.append(dict(kind=kind, distortion="codec " + os.path.basename(args.codec),
                       si_sdr=float(np.mean(train_codec.si_sdr_db(x, y))), stoi=s, estoi=e))
      print(json.dumps(rows[-1]), flush=True)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
      json.dump(dict(n=args.n, rows=rows), f, indent=1)
    os.replace(args.out + ".tmp", args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
