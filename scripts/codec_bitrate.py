"""Where a trained codec's reconstruction error comes from: the codebooks or the network.

  python scripts/codec_bitrate.py --run runs/codec/speech [--n 16]

Decodes fresh held-out single-talker clips (``codec_training.train.heldout``) through
the run's latest weights with 2, 4, ... n_codebooks codebooks, and once without the
quantizer (the encoder's continuous output, decoded as is). If quality still rises
with the last codebooks, more bit rate helps; if it has flattened, the encoder and
decoder are the limit. SI-SDR at lag 0, STOI and ESTOI; one line per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from codec_bridge import loading  # pylint: disable=wrong-import-position
from codec_training import train as train_codec  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--run", required=True, help="a codec_training.train output folder")
  p.add_argument("--n", type=int, default=16, help="held-out clips")
  args = p.parse_args(argv)
  from pystoi import stoi  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  saved = json.load(open(os.path.join(args.run, "spec.json")))
  spec = train_codec.CodecSpec(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in saved.items()})
  gen = loading.load_dac(weights=os.path.join(args.run, "weights.pth"), device="cpu")
  gen.eval()
  x = train_codec.heldout(spec, args.n, kind="single")

  def report(name, y):
    sr = spec.sample_rate
    print(f"{name:>14}: SI-SDR {np.mean(train_codec.si_sdr_db(x, y)):6.2f} dB  "
          f"STOI {np.mean([stoi(a, b, sr) for a, b in zip(x, y)]):.3f}  "
          f"ESTOI {np.mean([stoi(a, b, sr, extended=True) for a, b in zip(x, y)]):.3f}",
          flush=True)

  for nq in range(2, spec.n_codebooks + 1, 2):
    report(f"{nq} codebooks", train_codec.reconstruct(gen, x, n_quantizers=nq))
  with torch.no_grad():
    y = gen.decoder(gen.encoder(torch.from_numpy(x)[:, None]))[:, 0].numpy()
  out = np.zeros_like(x)
  m = min(x.shape[1], y.shape[1])
  out[:, :m] = y[:, :m]
  report("no quantizer", out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
