"""The EEG-dependence experiment log: one rung x one variant per command, one table row.

  python scripts/eeg_ladder.py --rung oracle --variant original --split val
  python scripts/eeg_ladder.py --rung eeg15 --variant select --split test --codec trained

A rung fixes the data (the synthetic AAD generator's settings; the audio of every
trial is identical across rungs, only the cue differs):

  oracle   the attended talker's own envelope in place of the EEG (a perfect cue)
  eeg10    synthetic EEG at +10 dB
  eeg15    the demo's synthetic EEG at -15 dB
  family   the family of EEG forward models, subject SNRs -25..-10 dB, 8 subjects
  family_held_out  the same, val and test subjects never trained on

Each row also carries the classic linear backward decoder's identification with
perfectly separated talkers (``evaluation.linear_baseline``), beside the model's own
EEG decoder's (``id_cue_true_envelopes``).

A variant fixes the model/training config overrides (``VARIANTS``; add
``--set key=value`` for more). Each run trains in ``runs/ladder/<name>`` (resumes
when re-run), evaluates on ``--split`` with the true cue, the noise cue and
shuffled EEG, and appends one JSON line per ablation to
``results/eeg_ladder.jsonl`` (not tracked); ``--table`` prints the markdown table of
every row so far (docs/research-log.md holds the reported ones). Choose with
``--split val``; report with ``--split test``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # pylint: disable=wrong-import-position

import codec_bridge  # pylint: disable=wrong-import-position,unused-import  (the codec loader)
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position
from neurocodec_jax.data import synthetic  # pylint: disable=wrong-import-position

RESULTS = os.path.join("results", "eeg_ladder.jsonl")

RUNGS = {
    "oracle": dict(cue="oracle"),
    "eeg10": dict(eeg_snr_db=10.0),
    "eeg15": dict(eeg_snr_db=-15.0),
    # The family of EEG forward models (data/synthetic.py), SNRs in [-25, -10] dB,
    # within-subject and with the val/test subjects held out of training.
    "family": dict(eeg_model="family", eeg_snr_db=-10.0, snr_spread_db=15.0, subjects=8),
    "family_held_out": dict(eeg_model="family", eeg_snr_db=-10.0, snr_spread_db=15.0,
                            subjects=8, subject_split="held_out"),
    # The same on recorded speech (the speech preset's talkers; pass its codec with
    # --codec_weights codec_bridge/weights/speech/speech_codec_16khz.pth).
    "speech_family": dict(eeg_model="family", eeg_snr_db=-10.0, snr_spread_db=15.0,
                          subjects=8, talkers="data/speech"),
    "speech_family_held_out": dict(eeg_model="family", eeg_snr_db=-10.0, snr_spread_db=15.0,
                                   subjects=8, subject_split="held_out", talkers="data/speech"),
}

# Every variant sets every recipe field (the demo preset, the base, holds the recipe).
ORIGINAL = {"lambda_mel": 0.0, "lambda_adv": 0.0, "lambda_feat": 0.0, "lambda_env": 0.0,
            "lambda_sep": 0.0, "lambda_sep_env": 0.0, "model.selector": "none",
            "model.select_window": "causal", "model.eeg_kernel": 8,
            "model.output_norm": "unit", "model.time_aligned_pe": False,
            "model.mix_input": "quantized", "model.mixture_consistency": False,
            "model.target_latent": "quantized",
            "model.select_decision": "soft"}
VARIANTS = {
    # The original architecture, latent objective only.
    "original": dict(ORIGINAL),
    # + the envelope head trained (EEG -> attended envelope), wide EEG kernel.
    "env_k32": dict(ORIGINAL, lambda_env=1.0, **{"model.eeg_kernel": 32}),
    # Separate-then-select: PIT streams + stream envelopes + decoded-envelope selection.
    "select": dict(ORIGINAL, lambda_env=1.0, lambda_sep=1.0, lambda_sep_env=1.0,
                   **{"model.selector": "correlation", "model.eeg_kernel": 32}),
    # The demo preset's recipe as it stands (select + every lever docs/research-log.md keeps).
    "recipe": {},
}


def _parse_value(text: str):
  for cast in (int, float):
    try:
      return cast(text)
    except ValueError:
      pass
  return {"true": True, "false": False}.get(text.lower(), text)


def _set(config, key: str, value):
  node = config
  *parents, leaf = key.split(".")
  for p in parents:
    node = node[p]
  node[leaf] = value


def build_config(args):
  config = neurocodec.get_config("demo")
  synth = dict(RUNGS[args.rung], n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
  overrides = dict(VARIANTS[args.variant])
  for item in args.set or []:
    k, v = item.split("=", 1)
    overrides[k] = _parse_value(v)
  # Data overrides name the data folder too, so that no run reads another's trials.
  data_sets = {k.split(".", 1)[1]: v for k, v in overrides.items() if k.startswith("synthetic.")}
  synth.update(data_sets)
  root = os.path.join(args.data_root, "_".join(
      [args.rung] + [f"{k}{v}".replace(os.sep, "-") for k, v in sorted(synth.items())
                     if k not in RUNGS[args.rung] or k in data_sets]))
  config.root = root
  for k, v in synth.items():
    if k in config.synthetic:
      config.synthetic[k] = v
  for k, v in overrides.items():
    _set(config, k, v)
  if args.codec == "random":
    config.codec.random = True
  else:
    config.codec.random = False
    if args.codec_weights:
      config.codec.weights = os.path.abspath(args.codec_weights)
  codec_tag = args.codec + ("_" + os.path.basename(args.codec_weights).split(".")[0]
                            if args.codec_weights else "")
  config.codec.cache_dir = os.path.join(root, f"codes_{codec_tag}")
  config.train.max_steps = args.steps
  config.train.eval_every = args.steps
  config.train.checkpoint_every = args.steps
  config.train.log_every = 50
  return config, synth, overrides


def decoder_data(rung: str, subjects: int, n_train: int, n_val: int = 128, n_test: int = 256):
  """The config of ``rung``'s data with ``subjects`` subjects and ``n_train``, ``n_val``,
  ``n_test`` trials, for the decoder-only scripts; generates the data when missing and
  refuses a folder another generator setting wrote."""
  args = argparse.Namespace(rung=rung, variant="recipe", n_train=n_train, n_val=n_val,
                            n_test=n_test, data_root="data/ladder", codec="trained",
                            codec_weights=None, steps=1, set=[f"synthetic.subjects={subjects}"])
  config, _, _ = build_config(args)
  spec = synthetic.spec_from_config(config)
  if not os.path.isdir(config.root):
    synthetic.generate(config.root, spec, workers=1)
  problem = synthetic.mismatch(config.root, spec)
  if problem:
    raise SystemExit(f"{config.root}: not this generator's data ({problem}).")
  return config


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rung", choices=sorted(RUNGS))
  p.add_argument("--variant", choices=sorted(VARIANTS))
  p.add_argument("--set", action="append", help="extra config override key=value")
  p.add_argument("--codec", choices=("random", "trained"), default="trained")
  p.add_argument("--codec_weights", default=None,
                 help="trained codec file (default: the demo preset's shipped codec)")
  p.add_argument("--split", default="val")
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--n_train", type=int, default=2048)
  p.add_argument("--n_val", type=int, default=128)
  p.add_argument("--n_test", type=int, default=256)
  p.add_argument("--data_root", default="data/ladder")
  p.add_argument("--name", default=None, help="run name (default: rung_variant_codec)")
  p.add_argument("--eval_of", default=None,
                 help="no training: evaluate this run's checkpoint with this config")
  p.add_argument("--table", action="store_true", help="print the results table and exit")
  args = p.parse_args(argv)
  if args.table:
    print(table())
    return 0
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  if not flags.FLAGS.is_parsed():
    flags.FLAGS([sys.argv[0]])       # grain's workers (data.num_workers) read absl flags
  from neurocodec_jax import evaluation  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.training import train_and_evaluate  # pylint: disable=g-import-not-at-top
  config, synth, overrides = build_config(args)
  name = args.name or f"{args.rung}_{args.variant}_{args.codec}"
  if args.set:
    name += "_" + "_".join(x.replace("model.", "").replace("=", "") for x in args.set)
  workdir = os.path.join("runs", "ladder", name)
  if not os.path.isdir(config.root):
    spec = synthetic.spec_from_config(config)
    spec.cue = synth.get("cue", "eeg")
    synthetic.generate(config.root, spec)
  t0 = time.time()
  run = None                   # the codec and compiled programs, shared by what follows
  if args.eval_of:
    # Evaluate another run's checkpoint under this config (e.g. another select_window).
    workdir_src = os.path.join("runs", "ladder", args.eval_of)
    os.makedirs(workdir, exist_ok=True)
    for sub in ("checkpoints", "best"):
      if not os.path.exists(os.path.join(workdir, sub)):
        os.symlink(os.path.abspath(os.path.join(workdir_src, sub)), os.path.join(workdir, sub))
  else:
    run = train_and_evaluate(config, workdir)["run"]
  train_seconds = time.time() - t0
  os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
  linear = evaluation.linear_baseline(config, args.split)
  for ablation in evaluation.ABLATIONS:
    r = evaluation.evaluate(config, workdir=workdir, split=args.split, ablation=ablation,
                            which="latest", perceptual=False, reuse=run)
    run, m = r["run"], r["metrics"]
    # The decoders side by side on the true EEG (an ablated EEG is no decoder's input).
    paired = (evaluation.compare_decoders(os.path.join(r["out_dir"], "per_example.csv"), linear)
              if "id_cue_true_envelopes" in m and ablation == "none" else {})
    row = dict(name=name, rung=args.rung, eval_of=args.eval_of, variant=args.variant, codec=args.codec,
               codec_weights=args.codec_weights,
               split=args.split, ablation=ablation, n=r["n"], steps=args.steps,
               train_seconds=round(train_seconds), overrides=overrides,
               linear_identification=linear["identification"],
               forward_identification=linear["forward"]["identification"],
               decoders_paired={k: paired[k] for k in ("difference", "difference_se",
                                                       "model_only", "linear_only",
                                                       "mcnemar_p") if k in paired},
               command="python scripts/eeg_ladder.py " + " ".join(argv or sys.argv[1:]),
               **{k: m[k] for k in ("id_latent", "id_si_sdr", "cos_attended", "cos_unattended",
                                    "si_sdr", "si_sdr_unattended", "id_latent_mixture",
                                    "latent_loss", "cue_r_attended", "cue_r_unattended",
                                    "id_cue_true_envelopes", "stream_r_own", "stream_r_other",
                                    "id_oracle_cue") if k in m})
    with open(RESULTS, "a") as f:
      f.write(json.dumps(row) + "\n")
    print(json.dumps(row))
  print(table())
  return 0


def table(path: str = RESULTS) -> str:
  """Markdown: one row per run and split, the three cues side by side."""
  if not os.path.exists(path):
    return "(no results yet)"
  rows = [json.loads(line) for line in open(path)]
  runs = {}
  for r in rows:
    # A re-evaluation of another run's checkpoint is its own row.
    name = r["name"] + (f" (eval of {r['eval_of']})" if r.get("eval_of") and r["eval_of"] != r["name"]
                        else "")
    runs.setdefault((name, r["split"], r["steps"]), {})[r["ablation"]] = r
  out = ["| run | codec | split | steps | id latent (EEG / noise / shuffled) | id SI-SDR (EEG / noise / shuffled) "
         "| cos att - unatt | SI-SDR att / unatt dB | copy baseline |",
         "|---|---|---|---|---|---|---|---|---|"]
  pct = lambda x: f"{100 * x:.1f}%"
  for (name, split, steps), by in runs.items():
    n, z, s = by.get("none"), by.get("noise_cue"), by.get("shuffle_eeg")
    if not (n and z and s):
      continue
    out.append(
        f"| {name} | {n['codec']} | {split} (n={n['n']}) | {steps} "
        f"| {pct(n['id_latent'])} / {pct(z['id_latent'])} / {pct(s['id_latent'])} "
        f"| {pct(n['id_si_sdr'])} / {pct(z['id_si_sdr'])} / {pct(s['id_si_sdr'])} "
        f"| {n['cos_attended'] - n['cos_unattended']:+.3f} "
        f"| {n['si_sdr']:.1f} / {n['si_sdr_unattended']:.1f} "
        f"| {pct(n['id_latent_mixture'])} |")
  diag = [(key, by["none"]) for key, by in runs.items()
          if "none" in by and "id_oracle_cue" in by["none"]]
  if diag:
    out += ["", "Selector diagnostics (true cue): the decoded EEG envelope's correlation with "
            "each talker and the identification it would give with perfect separation; the "
            "stream envelopes' correlation with their own / the other talker and the "
            "identification a perfect cue would give with this separation.", "",
            "| run | split | steps | cue r att / unatt | id if separation were perfect "
            "| linear decoder, same (backward / forward) | stream r own / other "
            "| id if the cue were perfect |",
            "|---|---|---|---|---|---|---|---|"]
    for (name, split, steps), n in diag:
      out.append(f"| {name} | {split} | {steps} | {n['cue_r_attended']:.2f} / "
                 f"{n['cue_r_unattended']:.2f} | {pct(n['id_cue_true_envelopes'])} "
                 f"| {pct(n['linear_identification']) if 'linear_identification' in n else '-'}"
                 f" / {pct(n['forward_identification']) if 'forward_identification' in n else '-'} "
                 f"| {n['stream_r_own']:.2f} / {n['stream_r_other']:.2f} "
                 f"| {pct(n['id_oracle_cue'])} |")
  return "\n".join(out)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
