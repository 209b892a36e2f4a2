"""Probe: is the codec's resynthesis what costs intelligibility, or the separation?

Decodes both of a selector model's streams (the selected one and the competing one,
each at the model's output scale and re-quantized as evaluation does), turns them
into a time-frequency ratio mask |A|^p / (|A|^p + |B|^p) and applies it to the
mixture's STFT. If the masked mixture scores well above the decoded stream, the
separation is right and the decoder's resynthesis loses the intelligibility.

  python scripts/mixture_mask_probe.py --workdir runs/quality/reproduce_sisdr_lr001 \
      --preset reproduce --split val [--set key=value ...]

Prints the floor, the decoded output, the masked mixture per exponent, and the
ceiling (SI-SDR, STOI, ESTOI; mean ± standard error over the split's trials), and
appends them as JSON lines to results/mixture_mask_probe.jsonl (not tracked).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=wrong-import-position

import codec_bridge  # pylint: disable=wrong-import-position,unused-import  (the codec loader)
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position
from scripts.eeg_ladder import _parse_value, _set  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--preset", default="demo")
  p.add_argument("--split", default="val")
  p.add_argument("--which", default="latest")
  p.add_argument("--set", action="append", help="a config override key=value")
  p.add_argument("--powers", default="0.5,1,2")
  p.add_argument("--floors", default="0",
                 help="mask lower bounds (mixture_mask.ratio_mask's floor), each with "
                      "every power; the oracle and ideal masks are scored at floor 0")
  args = p.parse_args(argv)
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import codec, losses, mixture_mask  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import eval_dataset  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.evaluation import perceptual_metrics  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config(args.preset)
  for item in args.set or []:
    k, v = item.split("=", 1)
    _set(config, k, _parse_value(v))
  fields = steps.mix_fields(config) + ["clean_codes", "unattended_codes", "eeg", "clean",
                                       "noisy", "unattended"] + steps.subject_fields(config)
  run = build_run(config, {args.split: fields})
  state, where = run.restore_generator(workdir=args.workdir, which=args.which)
  n_q, sr = config.codec.n_quantizers_eval, config.codec.arch.sample_rate
  powers = [float(x) for x in args.powers.split(",")]
  floors = [float(x) for x in args.floors.split(",")]

  @jax.jit
  def streams(state, batch, frozen):
    z_pred, _, aux = steps.predict(run.models, state, batch, frozen, return_aux=True)
    talker = lambda k: codec.requantize(
        frozen["quantizer"], codec.codes_to_z(frozen["quantizer"], batch[k]), n_q)
    q = lambda z: codec.output_latent(frozen["quantizer"], z, config.codec.requantize_output, n_q)
    return q(z_pred), q(aux["competing"]), talker("clean_codes"), talker("unattended_codes")

  decode = jax.jit(lambda dec, z: run.models.decode(dec, z))
  max_lag = losses.sisdr.max_lag_samples(sr)
  masked_mixture = lambda mix, a, b, pw, fl=0.0: np.asarray(
      mixture_mask.ratio_mask(jnp.asarray(mix), jnp.asarray(a), jnp.asarray(b), pw, fl))
  rows = []
  for batch in eval_dataset(run.sources[args.split], run.local_batch):
    device = {k: v for k, v in batch.items() if k in fields and k not in ("noisy", "clean",
                                                                           "unattended")}
    w_t, w_o, w_or, w_ou = (np.asarray(decode(run.frozen["decoder"], z))[:, 0]
                            for z in streams(state, device, run.frozen))
    for j in range(len(batch["clean"])):
      clean, mix = batch["clean"][j, 0], batch["noisy"][j, 0]
      ests = dict(mixture=mix, decoded=w_t[j], oracle=w_or[j])
      for pw in powers:
        for fl in floors:
          name = f"masked_p{pw:g}" + (f"_floor{fl:g}" if fl else "")
          ests[name] = masked_mixture(mix, w_t[j], w_o[j], pw, fl)
        # The mask of the talkers' codec oracles, and of the talkers themselves (the
        # ideal ratio mask: a case whose answer is known, far above the mixture).
        ests[f"oracle_mask_p{pw:g}"] = masked_mixture(mix, w_or[j], w_ou[j], pw)
        ests[f"ideal_mask_p{pw:g}"] = masked_mixture(mix, clean, batch["unattended"][j, 0], pw)
      row = {}
      for name, est in ests.items():
        sdr = float(losses.si_sdr(jnp.asarray(clean)[None, None], jnp.asarray(est)[None, None],
                                  max_lag=max_lag)[0])
        pm = perceptual_metrics(clean, est, sr)
        row[name] = dict(si_sdr=sdr, stoi=pm["stoi"], estoi=pm["estoi"])
      rows.append(row)
  out = dict(workdir=args.workdir, checkpoint=where, split=args.split, n=len(rows),
             overrides=args.set or [])
  print(f"{args.workdir} ({where}), {args.split}, {len(rows)} trials")
  for name in rows[0]:
    out[name] = {}
    line = [f"{name:>14}"]
    for k in ("si_sdr", "stoi", "estoi"):
      v = np.array([r[name][k] for r in rows])
      d = v - np.array([r["mixture"][k] for r in rows])
      out[name][k], out[name][k + "_i"] = float(v.mean()), float(d.mean())
      out[name][k + "_i_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))
      line.append(f"{k} {v.mean():7.3f} (vs mixture {d.mean():+.3f} ± "
                  f"{d.std(ddof=1) / np.sqrt(len(d)):.3f})")
    print("  ".join(line))
  os.makedirs("results", exist_ok=True)
  with open(os.path.join("results", "mixture_mask_probe.jsonl"), "a") as f:
    f.write(json.dumps(out) + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
