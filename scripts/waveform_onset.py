"""What the first steps of a waveform stage do to the separation, per weight.

  python scripts/waveform_onset.py --run runs/quality/continuous_targets_sisdr005_ramp300 \
      --step 2000 --weights 1e-9 1e-5 1e-3

Restores the run's full train state at ``--step`` (a latent-only checkpoint of the
continuous-targets recipe), then runs the same 20 batches through the train step with
the SI-SDR term on the held attended stream at each weight, and prints the
permutation-invariant latent loss (``loss_sep``) and the held stream's training SI-SDR
after each step. A weight that leaves the trajectory equal to the negligible one's does
not disturb the separation. ``--set lr=1e-5`` runs the stage at another learning rate;
``--per_group`` says which parameters the term moves; ``--directional`` measures how far
a step along the term's gradient does what its first-order prediction says.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import codec_bridge  # pylint: disable=wrong-import-position,unused-import  (the codec loader)
from neurocodec_jax import losses  # pylint: disable=wrong-import-position
from neurocodec_jax.configs import neurocodec  # pylint: disable=wrong-import-position
from neurocodec_jax.data.pipeline import train_dataset  # pylint: disable=wrong-import-position
from neurocodec_jax.run import build_run  # pylint: disable=wrong-import-position
from neurocodec_jax.train import steps  # pylint: disable=wrong-import-position
from neurocodec_jax.train.checkpoint import (  # pylint: disable=wrong-import-position
    Checkpoints, abstract)
from scripts.eeg_ladder import _parse_value, _set  # pylint: disable=wrong-import-position


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--run", required=True)
  p.add_argument("--step", type=int, default=2000)
  p.add_argument("--weights", type=float, nargs="+", default=[1e-9, 1e-5, 1e-3])
  p.add_argument("--n", type=int, default=20)
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                 help="a config override for the waveform stage (repeatable)")
  p.add_argument("--per_group", action="store_true",
                 help="where the waveform term moves the parameters: after the n steps, "
                      "per parameter group, the distance between the run at each weight "
                      "and the run without the term, over the latent-only run's own "
                      "movement")
  p.add_argument("--directional", action="store_true",
                 help="instead: the SI-SDR term's change along its own gradient against "
                      "the first-order prediction, per step length in parameter norm (the "
                      "region where a gradient step does what it predicts)")
  args = p.parse_args(argv)
  config = neurocodec.get_config("demo")
  config.model.target_latent, config.codec.backend = "continuous", "jax"
  config.train.waveform_output, config.lambda_sisdr = "attended_stream", 1.0
  config.unlock()
  for item in args.set:
    key, value = item.split("=", 1)
    _set(config, key, _parse_value(value))
  config.lock()
  run = build_run(config, {"train": steps.batch_fields(config)})
  ckpt = Checkpoints(args.run, use_async=False, writable=False)
  best = args.step not in ckpt.latest.all_steps()       # kept as the best step only
  state, _ = ckpt.restore(abstract(run.init_state(), run.replicated), step=args.step, best=best)
  data = [b for _, b in zip(range(args.n), train_dataset(run.sources["train"], 8, seed=5))]
  if args.directional:
    _directional(config, run, state, data[0])
    return 0
  ends = {}
  for w in [0.0] * args.per_group + args.weights:
    config.unlock()
    config.lambda_sisdr = w
    config.lock()
    step = jax.jit(steps.make_train_step(config, run.models, total_steps=2600,
                                         waveform=w > 0))
    s, seps, sisdr = state, [], []
    for batch in data:
      s, m = step(s, batch, run.frozen)
      seps.append(float(m["loss_sep"]))
      sisdr.append(-float(m.get("loss_sisdr", float("nan"))))
    print(f"SI-SDR x{w:g}: PIT latent loss " + " ".join(f"{v:.4f}" for v in seps), flush=True)
    if w > 0:
      print(f"SI-SDR x{w:g}: held stream's SI-SDR dB " + " ".join(f"{v:.2f}" for v in sisdr),
            flush=True)
    ends[w] = s["g"]["params"]
  if args.per_group:
    _per_group(state["g"]["params"], ends)
  return 0


def _directional(config, run, state, batch) -> None:
  """Prints, per step length e, the held stream's -SI-SDR change after a step of
  parameter norm e against its gradient (and along it), beside -e * |gradient|."""
  models, frozen = run.models, run.frozen
  z_mix, z_tgt = steps._latents(models, batch, frozen["quantizer"])  # pylint: disable=protected-access
  batch_stats = state["g"]["batch_stats"]

  def neg_sisdr(params):                 # eval mode: no dropout, the same value each call
    variables = {"params": params, "batch_stats": batch_stats}
    z_pred, _, aux = models.generator.apply(variables, z_mix, batch["eeg"], train=False,
                                            return_aux=True)
    wave = steps.decoded_waveform(models, variables, frozen, z_pred, aux["streams"], z_mix,
                                  z_tgt, requantize=config.codec.requantize_output,
                                  n_q=config.codec.n_quantizers_eval)
    return -jnp.mean(losses.si_sdr(batch["clean"], wave))

  params = state["g"]["params"]
  value, grad = jax.jit(jax.value_and_grad(neg_sisdr))(params)
  norm = float(optax.global_norm(grad))
  f = jax.jit(neg_sisdr)
  print(f"-SI-SDR {float(value):.3f} dB, gradient norm {norm:.1f} "
        f"(re-quantized: {config.codec.requantize_output})")
  for e in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1):
    moved = [float(f(jax.tree.map(lambda p, g: p + sign * e / norm * g, params, grad)))
             - float(value) for sign in (-1, 1)]
    print(f"step {e:g}: against the gradient {moved[0]:+.4f}, along it {moved[1]:+.4f}, "
          f"first order {-e * norm:+.4f}")


def _group_norms(tree, depth: int = 2) -> dict:
  """Squared norms of ``tree``'s leaves summed per path prefix of ``depth`` keys."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    name = "/".join(str(getattr(k, "key", k)) for k in path[:depth])
    out[name] = out.get(name, 0.0) + float(jnp.sum(jnp.square(leaf)))
  return out


def _per_group(start, ends: dict) -> None:
  """Per group: ||p_w - p_0|| / ||p_0 - p_start||, p_0 the run without the term."""
  base = ends.pop(0.0)
  moved = _group_norms(jax.tree.map(jnp.subtract, base, start))
  diffs = {w: _group_norms(jax.tree.map(jnp.subtract, p, base)) for w, p in ends.items()}
  print("group".ljust(48) + "latent-only move".rjust(18)
        + "".join(f"x{w:g} / it".rjust(14) for w in diffs))
  for name in sorted(moved):
    m = moved[name] ** 0.5
    print(name.ljust(48) + f"{m:18.3e}"
          + "".join(f"{d[name] ** 0.5 / max(m, 1e-30):14.3f}" for d in diffs.values()))


if __name__ == "__main__":
  sys.exit(main())
