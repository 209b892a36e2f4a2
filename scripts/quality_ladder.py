"""The output-quality experiment log: one change per command, one table row.

  python scripts/quality_ladder.py --name mask --set model.stream_form=mask --split val
  python scripts/quality_ladder.py --name mask_own_scale --eval_of mask \
      --set model.stream_form=mask --set model.output_norm=none --split val
  python scripts/quality_ladder.py --table
  python scripts/quality_ladder.py --paired BASE_ROW ROW ... --split val

Every row trains a preset (``--preset``, default ``demo``: its data, generated when
missing, and its 2000 steps) with the ``--set`` overrides in ``runs/quality/<name>``
(resumes when re-run), or, with ``--eval_of``, evaluates another row's checkpoint under these overrides
(evaluation-only changes: output scale, re-quantization, the cue). It evaluates on
``--split`` with the floor (the mixture) and the ceiling (the codec oracle) on the
same trials, with the EEG and with the oracle cue (the selector
choosing by the attended talker's true envelope: the separation's own quality), and
``--ablations`` adds the noise cue and shuffled EEG. One JSON line per evaluation
goes to ``results/quality_ladder.jsonl`` (not tracked); docs/research-log.md holds
the reported rows. Choose with ``--split val``; report with ``--split test``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

import codec_bridge  # pylint: disable=wrong-import-position,unused-import  (the codec loader)
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position
from scripts.eeg_ladder import _parse_value, _set  # pylint: disable=wrong-import-position

RESULTS = os.path.join("results", "quality_ladder.jsonl")
KEYS = ("si_sdr", "si_sdr_mixture", "si_sdr_oracle", "si_sdri", "si_sdri_se", "stoi",
        "stoi_mixture", "stoi_oracle", "stoii", "stoii_se", "estoi", "estoi_mixture",
        "estoi_oracle", "estoii", "pesq_wb", "pesq_wb_mixture", "pesq_wb_oracle",
        "id_latent", "id_si_sdr", "cos_attended", "cos_mix_attended", "id_oracle_cue",
        "id_cue_true_envelopes", "stream_r_own")


def build_config(args):
  config = neurocodec.get_config(args.preset)
  overrides = {}
  for item in args.set or []:
    k, v = item.split("=", 1)
    overrides[k] = _parse_value(v)
  for k, v in overrides.items():
    _set(config, k, v)
  config.train.max_steps = args.steps
  return config, overrides


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--name", help="the row's run name (runs/quality/<name>)")
  p.add_argument("--set", action="append", help="a config override key=value")
  p.add_argument("--eval_of", default=None,
                 help="evaluate this row's (or this run folder's) checkpoint instead")
  p.add_argument("--preset", default="demo", choices=("demo", "speech", "reproduce"))
  p.add_argument("--split", default="val")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--ablations", action="store_true", help="also the noise cue, shuffled EEG")
  p.add_argument("--oracle_norm", action="store_true",
                 help="also decode at the attended talker's frame norms (diagnostic)")
  p.add_argument("--table", action="store_true", help="print the results table and exit")
  p.add_argument("--paired", nargs="+", metavar="ROW",
                 help="print each later row's per-trial difference from the first (mean "
                      "and standard error, same trials) on --split with the EEG and the "
                      "oracle cue, and exit")
  args = p.parse_args(argv)
  if args.table:
    print(table())
    return 0
  if args.paired:
    print(paired(args.paired[0], args.paired[1:], args.split))
    return 0
  if not args.name:
    p.error("--name is required")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  if not flags.FLAGS.is_parsed():
    flags.FLAGS([sys.argv[0]])       # grain's workers (data.num_workers) read absl flags
  from neurocodec_jax import evaluation  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  config, overrides = build_config(args)
  if not os.path.isdir(config.root):
    # A row's own data (e.g. --set root=... --set synthetic.n_train=...): every trial is
    # a pure function of (seed, split, index), so rows share their common trials.
    synthetic.generate(config.root, synthetic.spec_from_config(config))
  workdir = os.path.join("runs", "quality", args.eval_of or args.name)
  if args.eval_of and os.path.isdir(args.eval_of):
    workdir = args.eval_of                  # a run folder elsewhere, e.g. runs/demo
  t0, run = time.time(), None
  if not args.eval_of:
    run = train_and_evaluate(config, workdir)["run"]
  train_seconds = time.time() - t0
  # The encoding cue form has no decoded envelope to replace; its perfect-cue
  # identification is id_oracle_cue, in every evaluation's diagnostics.
  oracle = config.model.selector != "none" and config.model.cue_form != "encoding"
  modes = ["none"] + (["oracle_cue"] if oracle else [])
  modes += ["noise_cue", "shuffle_eeg"] if args.ablations else []
  modes += ["oracle_norm"] if args.oracle_norm else []
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  for mode in modes:
    r = evaluation.evaluate(config, workdir=workdir, split=args.split, ablation=mode,
                            which="latest", reuse=run,
                            out_dir=os.path.join("runs", "quality", args.name, "eval",
                                                 f"{args.split}_{mode}"))
    run, m = r["run"], r["metrics"]
    row = dict(name=args.name, preset=args.preset, eval_of=args.eval_of, split=args.split,
               cue=mode, n=r["n"],
               steps=args.steps, train_seconds=round(train_seconds), overrides=overrides,
               command="python scripts/quality_ladder.py " + " ".join(argv or sys.argv[1:]),
               **{k: m[k] for k in KEYS if k in m})
    with open(RESULTS, "a") as f:
      f.write(json.dumps(row) + "\n")
  print(table())
  return 0


def paired(base: str, others: list[str], split: str,
           keys=("si_sdr", "stoi", "estoi")) -> str:
  """Per-trial differences ``other - base`` of the rows' evaluations on the same trials
  (their ``per_example.csv``): mean ± standard error, per cue."""
  def path(name, cue):
    return os.path.join("runs", "quality", name, "eval", f"{split}_{cue}", "per_example.csv")

  def load(name, cue):
    with open(path(name, cue)) as f:
      return list(csv.DictReader(f))
  lines = []
  for other in others:
    for cue in ("none", "oracle_cue"):
      if cue != "none" and not all(os.path.exists(path(n, cue)) for n in (base, other)):
        continue
      a, b = load(base, cue), load(other, cue)
      if [r["index"] for r in a] != [r["index"] for r in b]:
        raise ValueError(f"{base} and {other} were evaluated on different {split} trials.")
      parts = []
      for k in keys:
        d = np.asarray([float(y[k]) - float(x[k]) for x, y in zip(a, b)])
        parts.append(f"{k} {d.mean():+.3f} ± {d.std(ddof=1) / np.sqrt(len(d)):.3f}")
      lines.append(f"{other} - {base} ({split}, cue {cue}, n={len(a)}): " + ", ".join(parts))
  return "\n".join(lines)


def table(path: str = RESULTS) -> str:
  """Markdown: one row per run, split and cue; the floor and ceiling beside each."""
  if not os.path.exists(path):
    return "(no results yet)"
  out = ["| run | split | cue | SI-SDR dB (floor / model / ceiling) | SI-SDRi | "
         "STOI (floor / model / ceiling) | ESTOI model | PESQ model | identification |",
         "|---|---|---|---|---|---|---|---|---|"]
  for line in open(path):
    r = json.loads(line)
    out.append(
        f"| {r['name']} | {r['split']} (n={r['n']}) | {r['cue']} "
        f"| {r['si_sdr_mixture']:.2f} / **{r['si_sdr']:.2f}** / {r['si_sdr_oracle']:.2f} "
        f"| {r['si_sdri']:+.2f} ± {r['si_sdri_se']:.2f} "
        f"| {r['stoi_mixture']:.3f} / **{r['stoi']:.3f}** / {r['stoi_oracle']:.3f} "
        f"| {r['estoi']:.3f} | {r['pesq_wb']:.2f} | {100 * r.get('id_latent', float('nan')):.1f}% |")
  return "\n".join(out)


if __name__ == "__main__":
  sys.exit(main())
