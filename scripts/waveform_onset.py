"""What the first steps of a waveform stage do to the separation, per weight.

  python scripts/waveform_onset.py --run runs/quality/continuous_targets_sisdr005_ramp300 \
      --step 2000 --weights 1e-9 1e-5 1e-3

Restores the run's full train state at ``--step`` (a latent-only checkpoint of the
continuous-targets recipe), then runs the same 20 batches through the train step with
the SI-SDR term on the held attended stream at each weight, and prints the
permutation-invariant latent loss (``loss_sep``) after each step. A weight that leaves
the trajectory equal to the negligible one's does not disturb the separation.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import codec_bridge  # pylint: disable=wrong-import-position,unused-import  (the codec loader)
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position
from neurocodec_jax.data.pipeline import train_dataset  # pylint: disable=wrong-import-position
from neurocodec_jax.run import build_run  # pylint: disable=wrong-import-position
from neurocodec_jax.train import steps  # pylint: disable=wrong-import-position
from neurocodec_jax.train.checkpoint import (  # pylint: disable=wrong-import-position
    Checkpoints, abstract)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--run", required=True)
  p.add_argument("--step", type=int, default=2000)
  p.add_argument("--weights", type=float, nargs="+", default=[1e-9, 1e-5, 1e-3])
  p.add_argument("--n", type=int, default=20)
  args = p.parse_args(argv)
  config = neurocodec.get_config("demo")
  config.model.target_latent, config.codec.backend = "continuous", "jax"
  config.train.waveform_output, config.lambda_sisdr = "attended_stream", 1.0
  run = build_run(config, {"train": steps.batch_fields(config)})
  ckpt = Checkpoints(args.run, use_async=False, writable=False)
  best = args.step not in ckpt.latest.all_steps()       # kept as the best step only
  state, _ = ckpt.restore(abstract(run.init_state(), run.replicated), step=args.step, best=best)
  data = [b for _, b in zip(range(args.n), train_dataset(run.sources["train"], 8, seed=5))]
  for w in args.weights:
    config.unlock()
    config.lambda_sisdr = w
    config.lock()
    step = jax.jit(steps.make_train_step(config, run.models, total_steps=2600))
    s, seps = state, []
    for batch in data:
      s, m = step(s, batch, run.frozen)
      seps.append(float(m["loss_sep"]))
    print(f"SI-SDR x{w:g}: " + " ".join(f"{v:.4f}" for v in seps), flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
