"""How intelligible can a reconstruction of the synthetic talkers be at a given SI-SDR?

The demo codec is asked for STOI >= 0.85 on held-out synthetic speech. Every
codec run plateaus at ~0.83-0.84 (single talkers) whatever we change, so this
measures the signal's own STOI/ESTOI under distortions of known SI-SDR, on the same
held-out clips ``codec_training.ship`` scores (``codec_training.train.heldout``):

  * white noise at SI-SDR 5 ... 30 dB;
  * signal-shaped noise (the clip's own magnitude spectrogram with random phase,
    i.e. noise where the speech is) at the same SI-SDRs;
  * the codec's own reconstruction (``--codec``), with its per-clip SI-SDR, and per
    STOI one-third-octave band (150 Hz ... 3.8 kHz): STOI's intermediate correlation
    for the codec and for white noise at the codec's SI-SDR, the band's level below
    the strongest band, and the codec's level and envelope spread against the clean
    band's (where the codec's error costs STOI).

  python scripts/stoi_ceiling.py [--codec codec_bridge/weights/demo_codec_16khz.pth] \
      [--n 32] [--out results/stoi_ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from pystoi import stoi

from codec_training import train as train_codec


def _scaled_noise(x: np.ndarray, noise: np.ndarray, si_sdr_db: float) -> np.ndarray:
  """``x + g * noise`` with ``g`` set so that the sum's SI-SDR is ``si_sdr_db``.

  The noise is first made orthogonal to ``x`` so the SI-SDR is exact.
  """
  noise = noise - (noise @ x) / (x @ x) * x
  g = np.sqrt((x @ x) / (noise @ noise) / 10 ** (si_sdr_db / 10))
  return x + g * noise


def _fit(y: np.ndarray, n: int) -> np.ndarray:
  """An inverse STFT's output cut or zero-padded to ``n`` samples."""
  return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _shaped_noise(x: np.ndarray, rng, n_fft: int = 512) -> np.ndarray:
  """Noise with ``x``'s short-time magnitude and random phase: ``[T]``."""
  from scipy.signal import istft, stft  # pylint: disable=g-import-not-at-top
  _, _, spec = stft(x, nperseg=n_fft)
  phase = np.exp(2j * np.pi * rng.random(spec.shape))
  return _fit(istft(np.abs(spec) * phase, nperseg=n_fft)[1], len(x))


def band_profile(ref: np.ndarray, est: np.ndarray, sr: int) -> dict:
  """STOI's per-band view of one clip pair ``[T]``: each value ``[15 bands]``.

  ``d``: the mean short-time (384 ms) envelope correlation STOI averages (after its
  clipping); ``level_db``: the clean band's mean level relative to its strongest band;
  ``gain_db``: the estimate's mean band level minus the clean one; ``spread_db``:
  the standard deviation over frames of the clean / estimated band envelope in dB.
  """
  from pystoi import utils  # pylint: disable=g-import-not-at-top
  from pystoi.stoi import BETA, DYN_RANGE, FS, N, N_FRAME, NFFT, OBM  # pylint: disable=g-import-not-at-top
  from scipy.signal import resample_poly  # pylint: disable=g-import-not-at-top
  g = np.gcd(sr, FS)
  a, b = resample_poly(ref, FS // g, sr // g), resample_poly(est, FS // g, sr // g)
  a, b = utils.remove_silent_frames(a, b, DYN_RANGE, N_FRAME, N_FRAME // 2)
  bands = [np.sqrt(OBM @ np.abs(utils.stft(s, N_FRAME, NFFT, overlap=2).T) ** 2) for s in (a, b)]
  seg = [np.stack([t[:, m - N:m] for m in range(N, t.shape[1] + 1)]) for t in bands]
  xs, ys = seg
  ys = np.minimum(ys * np.linalg.norm(xs, axis=2, keepdims=True)
                  / (np.linalg.norm(ys, axis=2, keepdims=True) + 1e-12),
                  xs * (1 + 10 ** (-BETA / 20)))
  xs, ys = xs - xs.mean(2, keepdims=True), ys - ys.mean(2, keepdims=True)
  d = (xs * ys).sum(2) / (np.linalg.norm(xs, axis=2) * np.linalg.norm(ys, axis=2) + 1e-12)
  la, lb = (20 * np.log10(t + 1e-9) for t in bands)
  level = 10 * np.log10((bands[0] ** 2).mean(1) + 1e-20)
  return dict(d=d.mean(0), level_db=level - level.max(), gain_db=(lb - la).mean(1),
              spread_db=la.std(1), spread_est_db=lb.std(1))


def split_error(ref: np.ndarray, est: np.ndarray, below_db: float = 30.0, n_fft: int = 512):
  """``est``'s error kept in the strong or in the weak STFT cells of ``ref``: two ``[T]``.

  The error is ``est - alpha * ref`` (SI-SDR's); strong cells are those within
  ``below_db`` of ``ref``'s strongest cell. Returns ``(alpha ref + strong error,
  alpha ref + weak error)``.
  """
  from scipy.signal import istft, stft  # pylint: disable=g-import-not-at-top
  alpha = (ref @ est) / (ref @ ref)
  _, _, a = stft(ref, nperseg=n_fft)
  _, _, e = stft(est - alpha * ref, nperseg=n_fft)
  strong = np.abs(a) >= np.abs(a).max() * 10 ** (-below_db / 20)
  return tuple(alpha * ref + _fit(istft(e * m, nperseg=n_fft)[1], len(ref))
               for m in (strong, ~strong))


def _bands(x, y, sr, si_sdr, rng) -> list:
  from pystoi.stoi import NUMBAND  # pylint: disable=g-import-not-at-top
  codec = [band_profile(a, b, sr) for a, b in zip(x, y)]
  white = [band_profile(a, _scaled_noise(a, rng.standard_normal(len(a)), si_sdr), sr)["d"]
           for a in x]
  mean = lambda k: np.mean([c[k] for c in codec], 0)
  return [dict(band_hz=round(150 * 2 ** (i / 3)), level_db=round(mean("level_db")[i], 1),
               d_codec=round(mean("d")[i], 3), d_white=round(np.mean(white, 0)[i], 3),
               codec_gain_db=round(mean("gain_db")[i], 1),
               spread_clean_db=round(mean("spread_db")[i], 1),
               spread_codec_db=round(mean("spread_est_db")[i], 1)) for i in range(NUMBAND)]


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
  gen = None
  if args.codec:
    from codec_bridge import loading  # pylint: disable=g-import-not-at-top
    gen = loading.load_dac("16khz", weights=args.codec, device="cpu")
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
    if gen is not None:
      y = train_codec.reconstruct(gen, x.astype(np.float32)).astype(np.float64)
      s, e = _scores(x, y, sr)
      level = float(np.mean(train_codec.si_sdr_db(x, y)))
      rows.append(dict(kind=kind, distortion="codec " + os.path.basename(args.codec),
                       si_sdr=level, stoi=s, estoi=e, bands=_bands(x, y, sr, level, rng)))
      print(json.dumps({k: v for k, v in rows[-1].items() if k != "bands"}), flush=True)
      for band in rows[-1]["bands"]:
        print("  ", json.dumps(band))
      parts = [split_error(a, b) for a, b in zip(x, y)]
      for i, where in enumerate(("strong", "weak")):
        s, e = _scores(x, np.stack([p[i] for p in parts]), sr)
        rows.append(dict(kind=kind, distortion=f"codec error only in the {where} cells "
                         "(within / below 30 dB of the strongest)", stoi=s, estoi=e))
        print(json.dumps(rows[-1]), flush=True)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".tmp", "w") as f:
      json.dump(dict(n=args.n, rows=rows), f, indent=1)
    os.replace(args.out + ".tmp", args.out)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
