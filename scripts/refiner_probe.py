"""Probe: can a small spectral network, shown the mixture and the two decoded streams,
mask the mixture better than the streams' own ratio mask?

The hypothesis behind it: the streams know which talker is which (the EEG's choice,
the talkers' rough spectra) but not the fine structure that separates two voices in
one bin; the mixture's STFT has it. A mask estimator reading both should land between
the streams' mask and the codec oracles'.

  # 1. decode a selector model's streams for N trials of a split (cached .npz)
  python scripts/refiner_probe.py collect --workdir runs/quality/speech_128x4_8000 \
      --preset speech --set root=data/speech_n8192_v256 --split train --n 2048
  python scripts/refiner_probe.py collect ... --split val --n 256
  # 2. train the mask estimator on the train streams, score it on val
  python scripts/refiner_probe.py train --cache runs/refiner/speech_128x4_8000 --steps 2000

The refiner's target is the talker its selected stream carries (the choice held: it
refines the separation, never the selection), scored against the attended talker as
evaluation does. Results go to results/refiner_probe.jsonl (not tracked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position

def collect(args) -> int:
  import codec_bridge  # pylint: disable=g-import-not-at-top,unused-import  (the codec loader)
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from scripts.eeg_ladder import _parse_value, _set  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config(args.preset)
  for item in args.set or []:
    k, v = item.split("=", 1)
    _set(config, k, _parse_value(v))
  run = build_run(config, {args.split: refining.fields(config)})
  state, where = run.restore_generator(workdir=args.workdir, which=args.which)
  arrays = refining.collect_streams(run, state, args.split, args.n)
  os.makedirs(args.cache, exist_ok=True)
  path = os.path.join(args.cache, f"streams_{args.split}.npz")
  np.savez(path + ".tmp.npz", checkpoint=str(where), **arrays)
  os.replace(path + ".tmp.npz", path)
  print(f"wrote {path}: {len(arrays['mixture'])} trials from {where}")
  return 0


def train(args) -> int:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import losses, mixture_mask  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.evaluation import perceptual_metrics  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import refiner  # pylint: disable=g-import-not-at-top
  def load(split):
    with np.load(os.path.join(args.cache, f"streams_{split}.npz")) as f:
      return {k: f[k] for k in f.files if k != "checkpoint"}
  tr, va = load("train"), load(args.eval_split)
  sr = 16000
  max_lag = losses.sisdr.max_lag_samples(sr)
  sisdr = lambda ref, est: losses.si_sdr(ref[:, None], est[:, None], max_lag=max_lag)

  # The target: the talker the selected stream carries (its stream mask nearer it).
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  tr["target"] = refining.carried_talker(tr, sr)
  print(f"train: {len(tr['mixture'])} trials, the selected stream carries the attended "
        f"talker in {np.mean(np.all(tr['target'] == tr['clean'], axis=1)):.1%}")
  model = refiner.MaskRefiner(width=args.width, layers=args.layers, kernel=args.kernel,
                              floor=args.floor, power=args.power)
  n_tr = len(tr["mixture"])
  t0 = time.time()
  params = refining.train(tr, tr["target"], model, steps_total=args.steps,
                          batch_size=args.batch, lr=args.lr, lambda_spec=args.lambda_spec,
                          sample_rate=sr, seed=args.seed,
                          state_path=args.save + ".state" if args.save else None)
  train_s = time.time() - t0
  n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
  apply = jax.jit(lambda p, m, s, c: model.apply(p, m, s, c))

  rows = {"mixture": [], "stream_mask": [], "refined": [], "oracle_irm": []}
  for j0 in range(0, len(va["mixture"]), 16):
    sl = slice(j0, j0 + 16)
    m, s, c = (jnp.asarray(va[k][sl]) for k in ("mixture", "selected", "competing"))
    ests = dict(mixture=np.asarray(m),
                stream_mask=np.asarray(mixture_mask.ratio_mask(m, s, c, args.power, args.floor)),
                refined=np.asarray(apply(params, m, s, c)),
                oracle_irm=np.asarray(mixture_mask.ratio_mask(
                    m, jnp.asarray(va["clean"][sl]), jnp.asarray(va["unattended"][sl]), 0.5)))
    for name, est in ests.items():
      sdr = np.asarray(sisdr(jnp.asarray(va["clean"][sl]), jnp.asarray(est)))
      for j in range(len(est)):
        pm = perceptual_metrics(va["clean"][sl][j], est[j], sr)
        rows[name].append((float(sdr[j]), pm["stoi"], pm["estoi"]))
  res = dict(cache=args.cache, split=args.eval_split, n=len(rows["mixture"]),
             train_trials=n_tr, params=int(n_params), train_seconds=round(train_s),
             **{k: getattr(args, k) for k in ("steps", "width", "layers", "kernel", "lr",
                                              "batch", "lambda_spec", "floor", "power", "seed")})
  mix = np.array(rows["mixture"])
  base = np.array(rows["stream_mask"])
  for name, r in rows.items():
    r = np.array(r)
    d, dd = r - mix, r - base
    se = lambda x: x.std(0, ddof=1) / np.sqrt(len(x))
    res[name] = dict(si_sdr=float(r[:, 0].mean()), stoi=float(r[:, 1].mean()),
                     estoi=float(r[:, 2].mean()),
                     si_sdr_i=float(d[:, 0].mean()), si_sdr_i_se=float(se(d)[0]),
                     stoi_i=float(d[:, 1].mean()), stoi_i_se=float(se(d)[1]),
                     estoi_i=float(d[:, 2].mean()), estoi_i_se=float(se(d)[2]),
                     vs_stream_mask=[float(x) for x in dd.mean(0)],
                     vs_stream_mask_se=[float(x) for x in se(dd)])
    print(f"{name:>12}: SI-SDR {r[:, 0].mean():6.2f} ({d[:, 0].mean():+.2f} ± {se(d)[0]:.2f})"
          f"  STOI {r[:, 1].mean():.3f} ({d[:, 1].mean():+.3f} ± {se(d)[1]:.3f})"
          f"  ESTOI {r[:, 2].mean():.3f} ({d[:, 2].mean():+.3f} ± {se(d)[2]:.3f})"
          f"  vs stream mask {dd[:, 0].mean():+.2f} dB / {dd[:, 1].mean():+.3f}")
  os.makedirs("results", exist_ok=True)
  with open(os.path.join("results", "refiner_probe.jsonl"), "a") as f:
    f.write(json.dumps(res) + "\n")
  if args.save:
    refiner.save(args.save, params, model)
    print(f"saved {args.save}")
  return 0


def _score_blends(args, alphas):
  """Per trial: the selector's margin and each blend's SI-SDR, STOI and ESTOI."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import losses  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.evaluation import perceptual_metrics  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import refiner  # pylint: disable=g-import-not-at-top
  with np.load(os.path.join(args.cache, f"streams_{args.split}.npz")) as f:
    d = {k: f[k] for k in f.files if k != "checkpoint"}
  model, params = refiner.load(args.refiner)
  apply = jax.jit(lambda m, s, c: model.apply(params, m, s, c))
  max_lag = losses.sisdr.max_lag_samples(16000)
  rows = []
  for j0 in range(0, len(d["mixture"]), 16):
    sl = slice(j0, j0 + 16)
    m, s_, c = (jnp.asarray(d[k][sl]) for k in ("mixture", "selected", "competing"))
    y = np.asarray(apply(m, s_, c))
    mix = np.asarray(m)
    for j in range(len(y)):
      row = dict(index=j0 + j, margin=float(d["margin"][j0 + j]))
      for a in alphas:
        est = a * mix[j] + (1 - a) * y[j]
        row[f"si_sdr_{a:g}"] = float(losses.si_sdr(jnp.asarray(d["clean"][j0 + j])[None, None],
                                                    jnp.asarray(est)[None, None],
                                                    max_lag=max_lag)[0])
        pm = perceptual_metrics(d["clean"][j0 + j], est, 16000)
        row[f"stoi_{a:g}"], row[f"estoi_{a:g}"] = pm["stoi"], pm["estoi"]
      rows.append(row)
  return rows


def policy(args) -> int:
  """Per-trial scores of blends of the refined output with the mixture, beside the
  selector's margin: does backing off where the choice is unsure pay?"""
  alphas = [float(x) for x in args.alphas.split(",")]
  out = os.path.join(args.cache, f"policy_{args.split}_{os.path.basename(args.refiner)}.json")
  if os.path.isfile(out):           # scored before: the per-trial rows are kept
    with open(out) as f:
      rows = json.load(f)
  else:
    rows = _score_blends(args, alphas)
    with open(out + ".tmp", "w") as f:
      json.dump(rows, f)
    os.replace(out + ".tmp", out)
    print(f"wrote {out}")
  keys = ("si_sdr", "stoi", "estoi")
  margin = np.array([r["margin"] for r in rows])
  score = lambda tau, a: {k: np.array([r[f"{k}_{a:g}"] if r["margin"] < tau else r[f"{k}_0"]
                                       for r in rows]) for k in keys}
  for a in alphas:
    print(f"every trial, {a:g} x mixture: " + "  ".join(
        f"{k} {np.mean([r[f'{k}_{a:g}'] for r in rows]):.3f}" for k in keys))
  if args.tau is None:              # choosing (val): the grid of thresholds and blends
    from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
    for q in refining.BACK_OFF_QUANTILES:
      tau = float(np.quantile(margin, q))
      for a in alphas[1:]:
        print(f"margin < {tau:.3f} (quantile {q:g}), {a:g} x mixture: " + "  ".join(
            f"{k} {v.mean():.3f}" for k, v in score(tau, a).items()))
    return 0
  base, pol = score(np.inf, 0.0), score(args.tau, args.alpha)
  mix = score(np.inf, 1.0)
  print(f"margin < {args.tau} ({np.sum(margin < args.tau)} of {len(rows)} trials), "
        f"{args.alpha:g} x mixture:")
  for k in keys:
    d, dm = pol[k] - base[k], pol[k] - mix[k]
    se = lambda x: x.std(ddof=1) / np.sqrt(len(x))
    print(f"  {k}: mixture {mix[k].mean():.3f}  refined {base[k].mean():.3f}  policy "
          f"{pol[k].mean():.3f}  policy - refined {d.mean():+.3f} ± {se(d):.3f}  "
          f"policy - mixture {dm.mean():+.3f} ± {se(dm):.3f}")
  return 0


def main(argv=None) -> int:
  from scripts.eeg_ladder import _parse_value  # pylint: disable=g-import-not-at-top,unused-import
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="cmd", required=True)
  c = sub.add_parser("collect")
  c.add_argument("--workdir", required=True)
  c.add_argument("--preset", default="speech")
  c.add_argument("--split", default="train")
  c.add_argument("--n", type=int, default=2048)
  c.add_argument("--which", default="latest")
  c.add_argument("--cache", default=None)
  c.add_argument("--set", action="append", help="a config override key=value")
  t = sub.add_parser("train")
  t.add_argument("--cache", required=True)
  t.add_argument("--eval_split", default="val")
  t.add_argument("--steps", type=int, default=2000)
  t.add_argument("--batch", type=int, default=8)
  t.add_argument("--lr", type=float, default=1e-3)
  t.add_argument("--width", type=int, default=128)
  t.add_argument("--layers", type=int, default=6)
  t.add_argument("--kernel", type=int, default=5)
  t.add_argument("--floor", type=float, default=0.2)
  t.add_argument("--power", type=float, default=0.5)
  t.add_argument("--lambda_spec", type=float, default=1.0)
  t.add_argument("--seed", type=int, default=0)
  t.add_argument("--save", default=None, help="write the trained refiner here (.msgpack)")
  q = sub.add_parser("policy")
  q.add_argument("--cache", required=True)
  q.add_argument("--split", default="val")
  q.add_argument("--refiner", required=True)
  q.add_argument("--alphas", default="0,0.25,0.5,0.75,1",
                 help="0, then refining.BACK_OFF_MIXES: the grid cli.refine chooses from")
  q.add_argument("--tau", type=float, default=None,
                 help="apply: blend below this margin (chosen on val); omit to print the grid")
  q.add_argument("--alpha", type=float, default=0.5, help="apply: the mixture's share")
  args = p.parse_args(argv)
  if args.cmd == "policy":
    return policy(args)
  if args.cmd == "collect":
    args.cache = args.cache or os.path.join("runs", "refiner",
                                            os.path.basename(args.workdir.rstrip("/")))
    return collect(args)
  return train(args)


if __name__ == "__main__":
  sys.exit(main())
