"""The AAD ceiling of a synthetic dataset: how well can its EEG pick the attended talker
when the two talkers are PERFECTLY separated?

  python scripts/aad_ceiling.py --eeg_snr_db -15 --split val

Classic stimulus reconstruction (a linear backward model, as in O'Sullivan et al. 2015):
ridge regression from EEG samples t .. t + lags to the attended envelope at t, fit on the
train split, ridge strength chosen on the val split. Each trial is then decided by
which TRUE talker envelope (the generator's ``envelope_at``) correlates more with the
reconstruction over the trial window. This is the upper bound of any
separate-then-select-by-envelope extractor that uses a linear EEG decoder on that data:
what the model's own separation loses shows up as the gap between this and its
identification. Trials are generated in memory exactly as the on-disk dataset
(``neurocodec_jax.data.synthetic.generate``: same seeds, same subjects), no files.
Prints one JSON line (``--out`` appends it to a file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import numpy as np
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neurocodec_jax.data import synthetic  # pylint: disable=wrong-import-position

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def trials(spec: synthetic.SyntheticSpec, split: str, n: int, progress=True):
  """``(eeg [n, T_eeg, C], env_att [n, T_eeg], env_unatt [n, T_eeg])`` of a split."""
  subjects = synthetic.make_subjects(spec)
  eegs, att, unatt = [], [], []
  for i in tqdm(range(n), desc=f"{split} trials", disable=not progress, unit="trial"):
    trng = np.random.default_rng([spec.seed, SPLIT_IDS[split], i])
    _, a, u, eeg = synthetic.make_trial(trng, spec, subjects[i % len(subjects)])
    eegs.append(eeg)
    att.append(synthetic.envelope_at(a, spec.sample_rate, spec.eeg_rate, spec.eeg_length))
    unatt.append(synthetic.envelope_at(u, spec.sample_rate, spec.eeg_rate, spec.eeg_length))
  return np.stack(eegs), np.stack(att), np.stack(unatt)


def lagged(eeg: np.ndarray, lags: int) -> np.ndarray:
  """``[n, T, C] -> [n, T, C * lags]``: feature (c, k) at t is EEG channel c at t + k."""
  n, t, c = eeg.shape
  x = (eeg - eeg.mean(1, keepdims=True)) / (eeg.std(1, keepdims=True) + 1e-12)
  pad = np.concatenate([x, np.zeros((n, lags, c), x.dtype)], axis=1)
  return np.concatenate([pad[:, k:k + t] for k in range(lags)], axis=2)


def pearson(a, b):
  a = a - a.mean(-1, keepdims=True)
  b = b - b.mean(-1, keepdims=True)
  return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1) + 1e-12)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--eeg_snr_db", type=float, default=-15.0)
  p.add_argument("--cue", default="eeg", choices=("eeg", "oracle"))
  p.add_argument("--n_train", type=int, default=768)
  p.add_argument("--n_val", type=int, default=128)
  p.add_argument("--n_eval", type=int, default=256, help="trials of --split evaluated")
  p.add_argument("--split", default="val", choices=("val", "test"))
  p.add_argument("--lags", type=int, default=32, help="EEG samples after t (32 = 250 ms)")
  p.add_argument("--seed", type=int, default=1234)
  p.add_argument("--out", default=None, help="append the JSON line to this file")
  args = p.parse_args(argv)

  spec = dataclasses.replace(synthetic.PRESETS["demo"], eeg_snr_db=args.eeg_snr_db,
                             cue=args.cue, seed=args.seed)
  xs, ya, _ = trials(spec, "train", args.n_train)
  x = lagged(xs, args.lags).reshape(-1, xs.shape[2] * args.lags)
  y = ya.reshape(-1)
  gram, xty = x.T @ x, x.T @ y
  scale = np.trace(gram) / gram.shape[0]

  def fit(lam):
    return np.linalg.solve(gram + lam * scale * np.eye(gram.shape[0]), xty)

  def decide(eeg, env_a, env_u, w):
    rec = lagged(eeg, args.lags) @ w
    ra, ru = pearson(rec, env_a), pearson(rec, env_u)
    return ra, ru

  ve, va, vu = trials(spec, "val", args.n_val)
  lams = (1e-3, 1e-2, 1e-1, 1, 10, 100)
  val_acc = {lam: float(np.mean(np.subtract(*decide(ve, va, vu, fit(lam))) > 0)) for lam in lams}
  lam = max(lams, key=lambda l: (val_acc[l], -l))
  w = fit(lam)
  if args.split == "val":
    ee, ea, eu = trials(spec, "val", args.n_eval) if args.n_eval != args.n_val else (ve, va, vu)
  else:
    ee, ea, eu = trials(spec, "test", args.n_eval)
  ra, ru = decide(ee, ea, eu, w)
  correct = ra > ru
  row = dict(script="scripts/aad_ceiling.py", argv=sys.argv[1:] if argv is None else argv,
             eeg_snr_db=args.eeg_snr_db, cue=args.cue, split=args.split, n=len(correct),
             n_train=args.n_train, lags=args.lags, ridge=lam,
             r_attended=float(ra.mean()), r_unattended=float(ru.mean()),
             id_true_envelopes=float(correct.mean()),
             id_se=float(np.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))))
  line = json.dumps(row)
  print(line)
  if args.out:
    with open(args.out, "a") as f:
      f.write(line + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
