"""Does the EEG's normalization decide the linear decoder's edge on unseen subjects?

  python scripts/eeg_normalization.py [--subjects 32] [--n_train 1024]

The linear backward decoder (``neurocodec_jax.linear_decoder``) z-scores every trial's
channels on their own; the model's EEG encoder normalizes electrodes with BatchNorm,
whose statistics at evaluation are the training subjects' pooled ones. On subjects
never trained on, per-trial statistics adapt and pooled ones do not. This fits the
same ridge decoder both ways on the family EEG generator with recorded speech, subjects
held out (the ladder's ``speech_family_held_out`` data; generated when missing), and
scores both on val (cross-fitted) and test with perfectly separated talkers, paired
trial by trial. If the pooled variant falls well below the per-trial one, the
normalization is a lever for the model's encoder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from neurocodec_jax import evaluation, linear_decoder  # pylint: disable=wrong-import-position
import eeg_ladder  # pylint: disable=wrong-import-position


class PooledDecoder(linear_decoder.LinearDecoder):
  """The ridge decoder with every channel normalized by the training set's pooled mean
  and std (BatchNorm's running statistics) instead of each trial's own."""

  def fit(self, eeg, attended_env, ridges=linear_decoder.RIDGES):
    eeg = np.asarray(eeg, np.float64)
    self.mean = eeg.mean((0, 2), keepdims=True)[0]
    self.std = eeg.std((0, 2), keepdims=True)[0]
    return super().fit(eeg, attended_env, ridges)

  def _design(self, eeg):
    x = linear_decoder.lagged((np.asarray(eeg, np.float64) - self.mean) / self.std, self.lags,
                              zscore=False)
    return np.concatenate([x, np.ones(x.shape[:2] + (1,))], -1)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--subjects", type=int, default=32)
  p.add_argument("--n_train", type=int, default=1024)
  p.add_argument("--rung", default="speech_family_held_out")
  args = p.parse_args(argv)
  config = eeg_ladder.decoder_data(args.rung, args.subjects, args.n_train)
  d = config.data
  train, val, test = (evaluation.decoder_arrays(config, s)[:3]
                      for s in (d.train_split, d.val_split, d.test_split))
  out = dict(root=config.root)
  per_trial = {}
  for name, cls in (("per_trial", linear_decoder.LinearDecoder), ("pooled", PooledDecoder)):
    model = cls(d.eeg_rate).fit(train[0], train[1])
    model.choose(*val)
    v, t = model.cross_fit_score(*val), model.score(*test)
    per_trial[name] = (v["per_trial"], t["per_trial"])
    out[name] = dict(val=round(v["identification"], 4), test=round(t["identification"], 4),
                     test_r_attended=round(t["r_attended"], 4), ridge=model.ridge)
  for i, split in enumerate(("val", "test")):
    diff = per_trial["pooled"][i] - per_trial["per_trial"][i]
    out[f"{split}_pooled_minus_per_trial"] = dict(
        difference=round(float(diff.mean()), 4),
        se=round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
        pooled_only=int((diff > 0).sum()), per_trial_only=int((diff < 0).sum()))
  print(json.dumps(out, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
