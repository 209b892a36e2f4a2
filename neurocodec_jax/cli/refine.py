"""Train the spectral mask refiner behind a trained selector model.

  python -m neurocodec_jax.cli.refine --workdir runs/speech [--n_trials 8192 --steps 12000]
  python evaluate.py --workdir runs/speech --refiner runs/speech/refiner.msgpack

Decodes the model's two streams for the first ``--n_trials`` training trials (the model
frozen), then trains ``models.refiner.MaskRefiner`` to output the talker the selected
stream carries from the mixture's STFT and both streams (``neurocodec_jax.refining``).
Then decodes ``--back_off_trials`` val trials and chooses the back-off where the
selector is unsure (``refining.choose_back_off``: the most STOI without losing
SI-SDR), which evaluation and extraction apply with ``--refiner``. Writes ``--out``
(default ``<workdir>/refiner.msgpack`` and its ``.json``); its train state beside it
(``.state``, with what it was trained from in ``.state.json``) lets an interrupted run
resume; a finished one for the same checkpoint and recipe is not trained again, and
one for another is refused (delete both files to retrain). Memory: five float32
signals per trial (8192 two-second trials at 16 kHz: 5.2 GB).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import codec_bridge  # pylint: disable=unused-import  (registers the codec loader)
from neurocodec_jax.cli import one_line_errors
from neurocodec_jax.configs.refine import Recipe


def parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a trained selector model's run")
  p.add_argument("--which", default="best", choices=("best", "latest"))
  p.add_argument("--out", default=None, help="default: <workdir>/refiner.msgpack")
  for f in dataclasses.fields(Recipe):
    p.add_argument(f"--{f.name}", type=f.type, default=f.default,
                   help=f"{f.metadata['help']} (default {f.default})")
  args = p.parse_args(argv)
  args.recipe = Recipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Recipe)})
  return args


@one_line_errors
def main(argv=None) -> int:
  args = parse(argv)
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.validate import ConfigError  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  config = load_run_config(args.workdir)
  if config.model.selector != "correlation":
    raise ConfigError(f"{args.workdir}/config.json: model.selector is "
                      f"{config.model.selector!r}; the refiner needs a selector model's two "
                      f"streams (model.selector='correlation').")
  out = args.out or os.path.join(args.workdir, "refiner.msgpack")
  splits = (config.data.train_split, config.data.val_split)
  run = build_run(config, {s: refining.fields(config) for s in splits})
  state, where = run.restore_generator(workdir=args.workdir, which=args.which)
  print(f"[refine] streams of {where}")
  back_off = refining.refine_run(run, state, args.recipe, out, checkpoint=where)
  print(f"[refine] wrote {out}; {format_back_off(back_off)}")
  print(f"[refine] evaluate with: python evaluate.py --workdir {args.workdir} --refiner {out}")
  return 0


def format_back_off(b: dict | None) -> str:
  """One line on a back-off chosen by ``refining.choose_back_off`` (None: not chosen)."""
  if b is None:
    return "no back-off chosen (--back_off_trials 0)"
  if not b["unsure_margin"]:
    return f"no back-off raised STOI on val ({b['n']} trials)"
  return (f"back-off chosen on val ({b['n']} trials): where the selector's margin is below "
          f"{b['unsure_margin']:.3f}, {b['unsure_mix']:g} of the mixture (STOI "
          f"{b['stoi_refined']:.3f} -> {b['stoi']:.3f}, SI-SDR {b['si_sdr_refined']:.2f} -> "
          f"{b['si_sdr']:.2f} dB)")


if __name__ == "__main__":
  sys.exit(main())
