"""Where a trained codec's missing decibels could come from, two cheap measures.

  python scripts/codec_headroom.py --weights <.pth> [--n 64] [--split val] [--codebooks 8 12]
  python scripts/codec_headroom.py --soup A.pth B.pth [...] --out SOUP.pth [--weights OTHER]

The first decodes the same held-out single-talker clips as ``codec_training.ship
--quality`` from each form of the latent: the encoder's output itself (``continuous``),
the quantizer without its codebook rounding (``unrounded``, ``ship.unrounded``: the
bound any number of codebooks on these projections approaches) and the quantized latent
with the first k codebooks. If the quantized latent at the run's count is near the
unrounded bound, more codebooks cannot close a gap: the encoder and the decoder must.

The second averages the weights of runs from one lineage (a "model soup", Wortsman et
al., 2022: fine-tunes that share their start often decode better averaged than any
one alone) into a DAC file with the first file's metadata, and with ``--weights``
scores it against that file, paired on the same clips.
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
from codec_training import ship  # pylint: disable=wrong-import-position
from codec_training import train as train_codec  # pylint: disable=wrong-import-position


@torch.no_grad()
def by_latent(gen, audio: np.ndarray, counts=None, batch: int = 16) -> dict:
  """Per-clip SI-SDR (dB) of ``audio`` ``[n, T]`` decoded from each form of its latent:
  ``{"continuous" | "unrounded" | "q<k>": [n]}``."""
  gen.eval()
  n_q = gen.quantizer.n_codebooks
  counts = counts or sorted({k for k in (n_q // 2, n_q - 2, n_q) if k > 0})
  x = torch.from_numpy(audio)[:, None]
  z = torch.cat([gen.encoder(x[i:i + batch]) for i in range(0, len(x), batch)])
  forms = dict(continuous=z, unrounded=ship.unrounded(gen.quantizer, z),
               **{f"q{k}": gen.quantizer(z, n_quantizers=k)[0] for k in counts})
  out = {}
  for name, latent in forms.items():
    y = torch.cat([gen.decoder(latent[i:i + batch]) for i in range(0, len(x), batch)])
    y = y[:, 0].numpy()[:, :audio.shape[1]]
    y = np.pad(y, ((0, 0), (0, audio.shape[1] - y.shape[1])))
    out[name] = train_codec.si_sdr_db(audio, y)
  return out


def soup(files: list, out: str) -> None:
  """The mean of ``files``' weights (one architecture), saved to ``out`` in DAC's format
  with the first file's metadata and the list of what was averaged."""
  loaded = [torch.load(f, map_location="cpu", weights_only=True) for f in files]
  keys = [set(d["state_dict"]) for d in loaded]
  if any(k != keys[0] for k in keys):
    raise ValueError(f"--soup: {files}: not one architecture (their weights differ in names).")
  state = {k: sum(d["state_dict"][k].float() for d in loaded) / len(loaded) for k in keys[0]}
  meta = dict(loaded[0].get("metadata") or {})
  meta["averaged"] = [os.path.abspath(f) for f in files]
  torch.save({"state_dict": state, "metadata": meta}, out + ".tmp")
  os.replace(out + ".tmp", out)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--weights", help="the codec to score (with --soup: to pair the soup with)")
  p.add_argument("--soup", nargs="+", default=None, help="weight files to average")
  p.add_argument("--out", help="with --soup: where the averaged file goes")
  p.add_argument("--n", type=int, default=64)
  p.add_argument("--split", choices=("val", "test"), default="val")
  p.add_argument("--codebooks", type=int, nargs="*", default=None,
                 help="the codebook counts to decode with (default: half, all but 2, all)")
  args = p.parse_args(argv)
  if args.soup:
    if not args.out:
      p.error("--soup needs --out")
    soup(args.soup, args.out)
    if args.weights:
      spec = ship.spec_of(args.weights)
      gen, other = (loading.load_dac("16khz", weights=w, device="cpu")
                    for w in (args.out, args.weights))
      print(json.dumps(ship.compare(spec, gen, other, args.n, args.split), indent=2))
    return 0
  if not args.weights:
    p.error("--weights is required (or --soup)")
  spec = ship.spec_of(args.weights)
  gen = loading.load_dac("16khz", weights=args.weights, device="cpu")
  audio = train_codec.heldout(spec, args.n, kind="single", split=args.split)
  scores = by_latent(gen, audio, args.codebooks)
  summary = {}
  for name, v in scores.items():
    summary.update(train_codec.mean_se(name, v))
  print(json.dumps({k: round(v, 3) for k, v in summary.items()}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
