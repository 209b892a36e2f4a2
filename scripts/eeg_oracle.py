"""How far are the decoders from the best decoder of this EEG, and what is each piece
of knowledge worth?

  python scripts/eeg_oracle.py [--rung speech_family_held_out] [--subjects 32]
  python scripts/eeg_oracle.py --preset speech     # a preset's own data (make demo's)

On a synthetic dataset of the EEG ladder (``scripts/eeg_ladder.py``'s rungs; generated
when missing), matched-filter decoders built from the generator's forward model
(``neurocodec_jax.data.eeg_oracle``) beside the linear backward decoder (fit on train,
ridge chosen on val; within subjects also one per subject), on the same val and test
trials with perfectly separated talkers, paired trial by trial:

  oracle          each subject's own model, spatial filter and noise spectrum (the ceiling)
  population      the training subjects' mean model, each subject's own noise statistics
  adaptive        the mean model, the spatial filter from the training EEG's covariance,
                  the temporal whitener fit to the subject's own unlabeled EEG of the split
  population_fixed  the mean model, the training EEG's covariance, no whitening
  forward         learnt, no generator knowledge: linear_decoder.ForwardDecoder (a
                  rank-one forward TRF, the training EEG's covariance and spectrum)
  forward_unwhitened  the same without its temporal whitening (AR order 0)
  linear_per_subject, forward_per_subject  within subjects: one decoder per subject, fit
                  on its own training trials, its ridge chosen on its own val trials

``adaptive`` needs no labels and no generator knowledge beyond a mean forward model a
decoder could learn; ``population_fixed`` is its subject-independent counterpart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from scipy import linalg
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neurocodec_jax import evaluation, linear_decoder  # pylint: disable=wrong-import-position
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position
from neurocodec_jax.data import eeg_oracle, hdf5, synthetic  # pylint: disable=wrong-import-position
import eeg_ladder  # pylint: disable=wrong-import-position


def stimuli(config, spec, split: str) -> list:
  """Per trial of ``split``, the attended and the unattended talker's stimulus."""
  source = hdf5.open_split(config, split, fields=("clean", "unattended"))
  return [tuple(eeg_oracle.stimulus(spec, np.asarray(source[i][k][0], np.float64))
                for k in ("clean", "unattended"))
          for i in tqdm(range(len(source)), desc=f"{split} stimuli")]


def per_trial(decoder, split: str, arrays) -> np.ndarray:
  """A fitted linear decoder's ``[trials]`` hits on ``arrays``; on val cross-fitted
  (its ridge was chosen there)."""
  score = decoder.cross_fit_score if split == "val" else decoder.score
  return np.asarray(score(*arrays[:3])["per_trial"], np.float64)


def paired(a: np.ndarray, b: np.ndarray) -> dict:
  d = a - b
  return dict(difference=round(float(d.mean()), 4),
              se=round(float(d.std(ddof=1) / np.sqrt(len(d))), 4),
              first_only=int((d > 0).sum()), second_only=int((d < 0).sum()))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rung", default="speech_family_held_out", choices=sorted(eeg_ladder.RUNGS))
  p.add_argument("--subjects", type=int, default=32)
  p.add_argument("--n_train", type=int, default=1024)
  p.add_argument("--n_val", type=int, default=128)
  p.add_argument("--n_test", type=int, default=256)
  p.add_argument("--preset", default=None, help="a config preset's data instead of a rung")
  args = p.parse_args(argv)
  if args.preset:
    config = neurocodec.get_config(args.preset)
    spec = synthetic.spec_from_config(config)
    problem = synthetic.mismatch(config.root, spec)
    if problem:
      raise SystemExit(f"{config.root}: not the {args.preset} preset's data ({problem}); "
                       f"run make demo (or its data step) first.")
  else:
    config = eeg_ladder.decoder_data(args.rung, args.subjects, args.n_train, args.n_val,
                                     args.n_test)
    spec = synthetic.spec_from_config(config)
  subjects = synthetic.make_subjects(spec)
  d = config.data
  train, val, test = (evaluation.decoder_arrays(config, s)
                      for s in (d.train_split, d.val_split, d.test_split))
  linear = linear_decoder.LinearDecoder(d.eeg_rate).fit(train[0], train[1])
  linear.choose(*val[:3])
  forward = linear_decoder.ForwardDecoder(d.eeg_rate).fit(*train[:3])
  forward.choose(*val[:3])
  unwhitened = linear_decoder.ForwardDecoder(d.eeg_rate, ar_order=0).fit(*train[:3])
  unwhitened.choose(*val[:3])
  out = dict(root=config.root, rung=args.preset or args.rung, subjects=spec.subjects,
             ridge=linear.ridge, forward_ridge=forward.ridge)
  # Within subjects, also the mTRF practice: one decoder per subject, fit on its own
  # training trials, its ridge chosen on its own val trials.
  own = {}
  if spec.subject_split == "within":
    for s in sorted(set(train[3].tolist())):
      pick = lambda a: tuple(x[a[3] == s] for x in a[:3])
      own[s] = dict(linear=linear_decoder.LinearDecoder(d.eeg_rate).fit(*pick(train)[:2]),
                    forward=linear_decoder.ForwardDecoder(d.eeg_rate).fit(*pick(train)))
      for dec in own[s].values():
        dec.choose(*pick(val))
  pools = synthetic.subject_pools(spec)
  model = eeg_oracle.population([subjects[s] for s in pools["train"]])
  cov_train = linear_decoder.covariance(np.asarray(train[0], np.float64))
  for split, arrays in (("val", val), ("test", test)):
    eeg, _, _, sid = arrays
    eeg = np.asarray(eeg, np.float64)
    lin = per_trial(linear, split, arrays)
    stim = stimuli(config, spec, getattr(d, f"{split}_split"))
    ids = sorted(set(sid.tolist()))
    fixed = eeg_oracle.ForwardOracle(model, spec, linalg.solve(cov_train, model.pattern), [1.0])
    decoders = dict(
        oracle={s: eeg_oracle.ForwardOracle.of_subject(subjects[s], spec) for s in ids},
        population={s: eeg_oracle.ForwardOracle.with_noise(
            model, spec, eeg_oracle.background_draws(subjects[s], spec)) for s in ids},
        adaptive={s: eeg_oracle.ForwardOracle.with_noise(model, spec, eeg[sid == s],
                                                         cov=cov_train) for s in ids},
        population_fixed={s: fixed for s in ids})
    ident = {k: eeg_oracle.identify(v, eeg, stim, sid) for k, v in decoders.items()}
    ident["forward"] = per_trial(forward, split, arrays)
    ident["forward_unwhitened"] = per_trial(unwhitened, split, arrays)
    ident["linear"] = lin
    for kind in ("linear", "forward") if own else ():
      per = np.zeros(len(sid))
      for s, decs in own.items():
        m = sid == s
        per[m] = per_trial(decs[kind], split, tuple(a[m] for a in arrays[:3]))
      ident[f"{kind}_per_subject"] = per
    out[split] = dict(
        n=len(sid), identification={k: round(float(v.mean()), 4) for k, v in ident.items()},
        minus_linear={k: paired(v, lin) for k, v in ident.items() if k != "linear"},
        per_subject={str(s): dict(snr_db=round(spec.eeg_snr_db if subjects[s].snr_db is None
                                                 else subjects[s].snr_db, 1),
                                  noise=subjects[s].noise,
                                  n=int((sid == s).sum()),
                                  **{k: round(float(v[sid == s].mean()), 3)
                                     for k, v in ident.items()})
                     for s in ids})
  print(json.dumps(out, indent=2))
  print("\n| decoder | val | test | test - linear (paired) |\n|---|---|---|---|")
  for k, v in out["test"]["identification"].items():
    diff = out["test"]["minus_linear"].get(k)
    print(f"| {k} | {out['val']['identification'][k]:.1%} | {v:.1%} | "
          + (f"{100 * diff['difference']:+.1f} ± {100 * diff['se']:.1f} |" if diff else "|"))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
