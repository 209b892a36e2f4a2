"""Train the spectral mask refiner behind a trained selector model.

  python -m neurocodec_jax.cli.refine --workdir runs/speech [--n_trials 8192 --steps 8000]
  python evaluate.py --workdir runs/speech --refiner runs/speech/refiner.msgpack

Decodes the model's two streams for the first ``--n_trials`` training trials (the model
frozen), then trains ``models.refiner.MaskRefiner`` to output the talker the selected
stream carries from the mixture's STFT and both streams (``neurocodec_jax.refining``).
Writes ``--out`` (default ``<workdir>/refiner.msgpack`` and its ``.json``); its train
state beside it (``.state``) lets an interrupted run resume. Memory: five float32
signals per trial (8192 two-second trials at 16 kHz: 5.2 GB).
"""

from __future__ import annotations

import argparse
import os
import sys

import codec_bridge  # pylint: disable=unused-import  (registers the codec loader)
from neurocodec_jax.cli import one_line_errors


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a trained selector model's run")
  p.add_argument("--which", default="best", choices=("best", "latest"))
  p.add_argument("--n_trials", type=int, default=8192, help="training trials to learn from")
  p.add_argument("--steps", type=int, default=8000,
                 help="8000 chosen on val over 4000 (docs/research-log.md)")
  p.add_argument("--batch_size", type=int, default=8)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--lambda_spec", type=float, default=1.0,
                 help="the compressed spectral distance's weight beside -SI-SDR")
  p.add_argument("--width", type=int, default=128)
  p.add_argument("--layers", type=int, default=6)
  p.add_argument("--kernel", type=int, default=5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None, help="default: <workdir>/refiner.msgpack")
  return p.parse_args(argv)


@one_line_errors
def main(argv=None) -> int:
  args = parse(argv)
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.validate import ConfigError  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import refiner  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  config = load_run_config(args.workdir)
  if config.model.selector != "correlation":
    raise ConfigError(f"{args.workdir}/config.json: model.selector is "
                      f"{config.model.selector!r}; the refiner needs a selector model's two "
                      f"streams (model.selector='correlation').")
  out = args.out or os.path.join(args.workdir, "refiner.msgpack")
  run = build_run(config, {"train": refining.fields(config)})
  state, where = run.restore_generator(workdir=args.workdir, which=args.which)
  print(f"[refine] streams of {where}")
  streams = refining.collect_streams(run, state, "train", args.n_trials)
  sr = config.codec.arch.sample_rate
  target = refining.carried_talker(streams, sr)
  model = refiner.MaskRefiner(width=args.width, layers=args.layers, kernel=args.kernel,
                              floor=config.model.mask_floor, power=config.model.mask_power)
  params = refining.train(streams, target, model, steps_total=args.steps,
                          batch_size=args.batch_size, lr=args.lr, lambda_spec=args.lambda_spec,
                          sample_rate=sr, seed=args.seed, state_path=out + ".state")
  refiner.save(out, params, model)
  print(f"[refine] wrote {out}; evaluate with: python evaluate.py --workdir {args.workdir} "
        f"--refiner {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
