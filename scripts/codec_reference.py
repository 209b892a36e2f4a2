"""Standard speech codecs at known bit rates on the speech codec's held-out clips: what
SI-SDR, STOI and ESTOI a given bit rate buys outside this project.

  python scripts/codec_reference.py [--n 64] [--opus_kbps 6 8 12 16 24] \
      [--weights codec_bridge/weights/speech_wide/speech_codec_wide_16khz.pth ...]

The clips are ``codec_training.train.heldout``'s single-talker clips of the training
voices (2 s at 16 kHz) under the spec in the manifest beside the first ``--weights``:
the clips on which the speech codecs' targets (SI-SDR 10 dB, STOI 0.90, ESTOI 0.80)
are measured. Each is coded by Opus (libopus through PyAV, wideband, the ``voip``
application) at each ``--opus_kbps`` and by G.722 (64 kbit/s ADPCM, the format the
Asterisk prompts ship in), then decoded; the project's codecs (``--weights``) are
scored on the same clips. The bit rate is the payload's (packets only, no container).
SI-SDR is reported at lag 0 and at the best lag within +-10 ms (a codec's delay is not
its fidelity; the lag chosen is printed), each a mean over clips with its standard
error, and for every other codec the first ``--weights``' paired difference from it
on the same clips.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from codec_training import train as train_codec  # pylint: disable=wrong-import-position

MAX_LAG_S = 0.010
METRICS = ("si_sdr", "si_sdr_aligned", "stoi", "estoi")
OPUS_OPTIONS = {"application": "voip"}


def av_roundtrip(x: np.ndarray, sample_rate: int, codec: str, bit_rate: int | None,
                 options: dict | None = None) -> tuple[np.ndarray, float]:
  """One clip ``[T]`` in [-1, 1] through an audio codec of PyAV's FFmpeg, in an
  in-memory container (which removes the decoder's pre-skip) -> ``(decoded [T], payload
  bits per second)``; the decoded clip is cut or zero-padded to ``T``."""
  import av  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  payload = 0
  with av.open(buf, "w", format="ogg" if "opus" in codec else "wav") as out:
    stream = out.add_stream(codec, rate=sample_rate, layout="mono")
    if bit_rate:
      stream.bit_rate = bit_rate
    stream.codec_context.options = dict(options or {})
    size = stream.codec_context.frame_size or 320
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
    pcm = np.pad(pcm, (0, -len(pcm) % size))
    for i in range(0, len(pcm), size):
      frame = av.AudioFrame.from_ndarray(pcm[None, i:i + size], format="s16", layout="mono")
      frame.sample_rate = sample_rate
      for packet in stream.encode(frame):
        payload += packet.size
        out.mux(packet)
    for packet in stream.encode(None):
      payload += packet.size
      out.mux(packet)
  buf.seek(0)
  resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
  parts = []
  with av.open(buf, "r") as inp:
    for frame in inp.decode(audio=0):
      parts += [f.to_ndarray()[0] for f in resampler.resample(frame)]
  parts += [f.to_ndarray()[0] for f in resampler.resample(None)]
  y = np.concatenate(parts)[:len(x)]
  return np.pad(y, (0, len(x) - len(y))).astype(np.float32), payload * 8 / (len(x) / sample_rate)


def best_lag_si_sdr(x: np.ndarray, y: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
  """Per clip, the highest SI-SDR (dB) of ``y`` shifted by -max_lag..max_lag samples
  against ``x`` (both ``[n, T]``; the overlap only) and the lag that gives it (``y``
  late by ``lag`` samples when positive)."""
  t = x.shape[1]
  scores = np.stack([train_codec.si_sdr_db(x[:, :t - lag], y[:, lag:]) if lag >= 0 else
                     train_codec.si_sdr_db(x[:, -lag:], y[:, :t + lag])
                     for lag in range(-max_lag, max_lag + 1)])
  return scores.max(0), scores.argmax(0) - max_lag


def per_clip(x: np.ndarray, y: np.ndarray, sample_rate: int) -> dict:
  """``{metric: [n]}``: SI-SDR at lag 0 and at the best lag, STOI, ESTOI, and the lag."""
  from pystoi import stoi  # pylint: disable=g-import-not-at-top
  aligned, lags = best_lag_si_sdr(x, y, int(MAX_LAG_S * sample_rate))
  return dict(si_sdr=train_codec.si_sdr_db(x, y), si_sdr_aligned=aligned,
              stoi=np.array([stoi(a, b, sample_rate) for a, b in zip(x, y)]),
              estoi=np.array([stoi(a, b, sample_rate, extended=True) for a, b in zip(x, y)]),
              lag=lags)


def score(x: np.ndarray, y: np.ndarray, sample_rate: int) -> dict:
  """Means and standard errors over clips of :func:`per_clip`; the median lag."""
  return summarize(per_clip(x, y, sample_rate))


def summarize(clips: dict) -> dict:
  out = {}
  for key in METRICS:
    out.update({k: round(v, 4) for k, v in train_codec.mean_se(key, clips[key]).items()})
  out["lag_samples"] = int(np.median(clips["lag"]))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--weights", nargs="*",
                 default=["codec_bridge/weights/speech_wide/speech_codec_wide_16khz.pth",
                          "codec_bridge/weights/speech/speech_codec_16khz.pth"])
  p.add_argument("--n", type=int, default=64)
  p.add_argument("--opus_kbps", type=float, nargs="*", default=[6, 8, 12, 16, 24])
  args = p.parse_args(argv)
  manifest = json.load(open(os.path.join(os.path.dirname(args.weights[0]), "manifest.json")))
  spec = train_codec.CodecSpec.from_dict(manifest["spec"])
  sr = spec.sample_rate
  x = train_codec.heldout(spec, args.n, kind="single")
  clips, kbps = {}, {}

  def reference(name, coded):
    clips[name] = per_clip(x, np.stack([y for y, _ in coded]), sr)
    kbps[name] = float(np.mean([b for _, b in coded]) / 1e3)

  for rate in args.opus_kbps:
    reference(f"Opus {rate:g} kbit/s",
              [av_roundtrip(c, sr, "libopus", int(rate * 1000), OPUS_OPTIONS) for c in x])
  reference("G.722", [av_roundtrip(c, sr, "g722", None) for c in x])
  import torch  # pylint: disable=g-import-not-at-top
  from codec_bridge import loading  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  for w in args.weights:
    gen = loading.load_dac("16khz", weights=w, device="cpu")
    arch = json.load(open(os.path.join(os.path.dirname(w), "manifest.json")))["spec"]
    hop = int(np.prod(arch["encoder_rates"]))
    bits = arch["n_codebooks"] * np.log2(arch["codebook_size"])       # per frame
    kbps[os.path.basename(w)] = bits * sr / hop / 1e3
    clips[os.path.basename(w)] = per_clip(x, train_codec.reconstruct(gen, x), sr)
  ours = os.path.basename(args.weights[0])
  for name, c in clips.items():
    row = dict(codec=name, clips=args.n, payload_kbps=round(kbps[name], 2), **summarize(c))
    if name != ours:       # the same clips: the clip-to-clip spread cancels
      for key in METRICS:
        d = train_codec.mean_se(f"{ours}_minus_{key}", clips[ours][key] - c[key])
        row.update({k: round(v, 4) for k, v in d.items()})
    print(json.dumps(row), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
