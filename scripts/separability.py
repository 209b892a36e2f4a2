"""Which trials does a separate-then-select run lose? Per-trial errors against the
talkers' pitch gap and level difference.

  python scripts/separability.py runs/ladder/<run>/eval/val_none/per_example.csv --split val

Regenerates the split's trials in memory with the generator's seeds (as
``scripts/aad_ceiling.py``), records each talker's base f0 and the level difference
drawn for the trial, and tabulates identification (``id_latent``: cos_attended >
cos_unattended) and the selector diagnostics (``id_oracle_cue``, ``stream_r_own``)
by bins of the pitch gap |log2(f0_a / f0_b)| in semitones. A separation limited by
pitch (two voices at nearly the same f0 cannot be told apart by a small causal model)
shows as errors concentrated in the smallest-gap bin.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neurocodec_jax.data import synthetic  # pylint: disable=wrong-import-position

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def trial_facts(spec, split: str, indices) -> dict[int, dict]:
  """``{index: {"f0_att", "f0_unatt", "level_db"}}`` for the split's trials."""
  subjects = synthetic.make_subjects(spec)
  original = synthetic.talker
  out = {}
  for i in indices:
    f0s = []

    def recording_talker(r, n, sr, _f0s=f0s):
      state = r.bit_generator.state
      _f0s.append(float(r.uniform(80, 260)))     # the talker's first draw is its base f0
      r.bit_generator.state = state
      return original(r, n, sr)

    synthetic.talker = recording_talker
    try:
      trng = np.random.default_rng([spec.seed, SPLIT_IDS[split], i])
      _, att, unatt, _ = synthetic.make_trial(trng, spec, subjects[i % len(subjects)])
    finally:
      synthetic.talker = original
    level = 20 * np.log10(np.sqrt(np.mean(att ** 2)) / np.sqrt(np.mean(unatt ** 2)))
    out[i] = dict(f0_att=f0s[0], f0_unatt=f0s[1], level_db=float(level))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("per_example", help="an evaluation's per_example.csv (true EEG)")
  p.add_argument("--split", default="val", choices=("val", "test"))
  p.add_argument("--seed", type=int, default=1234)
  p.add_argument("--eeg_snr_db", type=float, default=-15.0)
  args = p.parse_args(argv)
  rows = list(csv.DictReader(open(args.per_example)))
  spec = dataclasses.replace(synthetic.PRESETS["demo"], seed=args.seed,
                             eeg_snr_db=args.eeg_snr_db)
  facts = trial_facts(spec, args.split, [int(r["index"]) for r in rows])
  gap = np.array([abs(12 * np.log2(facts[int(r["index"])]["f0_att"]
                                   / facts[int(r["index"])]["f0_unatt"])) for r in rows])
  level = np.array([facts[int(r["index"])]["level_db"] for r in rows])
  ident = np.array([float(r["cos_attended"]) > float(r["cos_unattended"]) for r in rows])
  col = lambda k: np.array([float(r[k]) for r in rows]) if k in rows[0] else None
  oracle, own = col("id_oracle_cue"), col("stream_r_own")
  print(f"{len(rows)} trials of {args.per_example}")
  print("| pitch gap (semitones) | trials | id latent | id with a perfect cue | stream r own |")
  print("|---|---|---|---|---|")
  edges = [0, 1, 2, 4, 8, 100]
  summary = []
  for lo, hi in zip(edges, edges[1:]):
    m = (gap >= lo) & (gap < hi)
    if not m.any():
      continue
    cells = [f"{lo}-{hi if hi < 100 else ''}", str(int(m.sum())), f"{100 * ident[m].mean():.0f}%",
             f"{100 * oracle[m].mean():.0f}%" if oracle is not None else "-",
             f"{own[m].mean():.2f}" if own is not None else "-"]
    print("| " + " | ".join(cells) + " |")
    summary.append(dict(gap=[lo, hi], n=int(m.sum()), id_latent=float(ident[m].mean())))
  for name, m in (("attended louder", level > 0), ("attended quieter", level <= 0)):
    print(f"{name}: {int(m.sum())} trials, id latent {100 * ident[m].mean():.0f}%")
  print(json.dumps(dict(per_example=args.per_example, bins=summary)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
