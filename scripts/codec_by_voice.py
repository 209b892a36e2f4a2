"""Which voices and clips a codec's held-out score is made of.

  python scripts/codec_by_voice.py --weights <shipped .pth> [--n 64] [--split test]

Scores the codec on the same held-out single-talker clips as ``codec_training.ship
--quality`` (training voices, val or test split) and breaks the means down by the voice
each clip was drawn from, with the voice-balanced means (each voice's mean, averaged):
the voices code at different levels, so the mix of voices moves an overall mean. The
clips take the voices in rotation; ``--random_voices`` draws them at random, and
``--speech_root`` scores on another corpus (to compare with scores taken so). Then
lists the clips below ``--flag_stoi`` with what makes them unlike wideband speech: the
share of their energy above 4 kHz, their DC ratio (the corpus rule's measures,
``neurocodec_jax.data.speech``), and their share of near-silent samples.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from codec_bridge import loading  # pylint: disable=wrong-import-position
from codec_training import ship  # pylint: disable=wrong-import-position
from codec_training import train as train_codec  # pylint: disable=wrong-import-position
from neurocodec_jax.data import speech  # pylint: disable=wrong-import-position


def by_voice(voices: list, scores: dict) -> dict:
  """Per-voice means of per-clip ``scores`` (``{metric: [n]}``), their overall means and
  the voice-balanced means (each voice's mean, averaged over voices)."""
  v = np.asarray(voices)
  names = sorted(set(voices))
  per = {u: dict(clips=int((v == u).sum()),
                 **{k: float(np.mean(np.asarray(s)[v == u])) for k, s in scores.items()})
         for u in names}
  return dict(voices=per,
              overall={k: float(np.mean(s)) for k, s in scores.items()},
              balanced={k: float(np.mean([per[u][k] for u in names])) for k in scores})


def clip_traits(x: np.ndarray, sample_rate: int) -> dict:
  """What a clip ``[T]`` is made of: its share of energy above 4 kHz and DC ratio (as
  the corpus rule measures them), and its share of samples below 1% of full scale."""
  return dict(above_4khz=speech.hf_share(x, sample_rate), dc=speech.dc_ratio(x),
              near_silent=float(np.mean(np.abs(x) < 0.01)))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--weights", required=True)
  p.add_argument("--n", type=int, default=64)
  p.add_argument("--split", choices=("val", "test"), default="val")
  p.add_argument("--flag_stoi", type=float, default=0.8)
  p.add_argument("--speech_root", default=None,
                 help="another corpus than the weights' own (e.g. one built before its rule)")
  p.add_argument("--random_voices", action="store_true",
                 help="each clip's voice drawn at random, not in rotation (to compare with "
                      "scores taken so)")
  args = p.parse_args(argv)
  spec = ship.spec_of(args.weights)
  if args.speech_root:
    spec = dataclasses.replace(spec, speech_root=args.speech_root)
  gen = loading.load_dac("16khz", weights=args.weights, device="cpu")
  voices = []
  x = train_codec.heldout(spec, args.n, kind="single", split=args.split, voices=voices,
                          rotate=not args.random_voices)
  y = train_codec.reconstruct(gen, x)
  sr = spec.sample_rate
  scores = dict(si_sdr=train_codec.si_sdr_db(x, y))
  scores["stoi"], scores["estoi"] = train_codec.intelligibility(x, y, sr)
  out = by_voice(voices, scores)
  out["flagged"] = [dict(clip=i, voice=voices[i], **{k: round(float(s[i]), 3)
                                                     for k, s in scores.items()},
                         **{k: round(v, 3) for k, v in clip_traits(x[i], sr).items()})
                    for i in range(args.n) if scores["stoi"][i] < args.flag_stoi]
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
