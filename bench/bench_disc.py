"""DAC's discriminator in Flax beside DAC's torch module: time per part, and memory.

Comparison (the default): for each sub-discriminator (every MPD period, every MRD
FFT size) DAC's torch module and ours with its weights copied run forward
and backward (the gradient wrt the input, as the generator's adversarial and
feature terms need, and wrt every weight, as the discriminator's step needs) on the
same ``[batch, 1, T]`` input, interleaved, median of ``--repeats`` after warm-up,
in one process with one thread count. The loss is the mean square of every feature
map (DAC's GAN and feature terms read every map). Widths: 1.0 is DAC's size; the
demo's 0.0625 narrows every channel count on both sides (DAC's own forward code
with narrower layers). ``--per_layer`` adds one row per conv layer (its input shape
as the sub-discriminator feeds it). ``--halves`` adds the train step's two halves as
it runs them, beside DAC's ``GANLoss``: the D step (D loss on fake and real, weight
gradients only) and the generator side (adversarial + 2 x features, the input
gradient only, the discriminator frozen). ``--before`` adds our earlier forms (MPD's
2-D convolutions, MRD's convolutions all through XLA's conv with its strided
gradients: ``ops.conv``'s "xla" implementation).

``--memory``: the discriminator step's program (D loss and its parameter gradient on
fake and real) at full size for 44.1 and 16 kHz: XLA's buffers and one run's time.

Set ``XLA_FLAGS`` in the environment to measure XLA CPU options; the rows say which.
Run: ``python -m bench.bench_disc [--sample_rate 16000 --batch 8 --seconds 2]``.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import add_malloc_flag, block, median_seconds, peak_rss_mb, report, set_malloc
from codec_bridge.converters import discriminator_params_from_torch
from neurocodec_jax import losses
from neurocodec_jax.models import discriminators as ours
from neurocodec_jax.ops import conv as conv_ops
from tests.references import torch_discriminator


def _torch_discriminator(kind: str, arg: int, width: float, sample_rate: int):
  """One sub-discriminator as a whole ``Discriminator`` (DAC's input normalization too)."""
  return torch_discriminator([arg] if kind == "mpd" else [], [arg] if kind == "mrd" else [],
                             width, sample_rate)


def _loss_torch(fmaps):
  return sum((f ** 2).mean() for maps in fmaps for f in maps)


def _loss_jax(fmaps):
  return sum(jnp.mean(f ** 2) for maps in fmaps for f in maps)


def _conv_layers(kind: str, arg: int, width: float):
  """``[(name, torch module path, our module kwargs)]`` of one sub-discriminator."""
  layers = []
  ch = lambda c: ours._ch(c, width)  # pylint: disable=protected-access
  if kind == "mpd":
    for i, (c, s) in enumerate(ours.MPD_LAYERS):
      layers.append((f"conv_{i}", f"convs.{i}", dict(features=ch(c), kernel_size=(5, 1),
                                                      strides=(s, 1), padding=(2, 0))))
  else:
    for i, (k, s, p) in enumerate(ours.MRD_LAYERS):
      # Band 1 of 5 (0.1-0.25: 15% of the bins) is representative of the widths.
      layers.append((f"band_1_conv_{i}", f"band_convs.1.{i}",
                     dict(features=ch(32), kernel_size=k, strides=s, padding=p)))
  return layers


def _timed_row(runs: dict, repeats: int, flags: str, **key) -> dict:
  """Median ms of each of ``runs`` (name -> blocking callable), warmed up once, then
  run interleaved so that drift hits every side alike; ``ratio`` = ours / torch."""
  times = {k: [] for k in runs}
  for fn in runs.values():
    fn()
  for _ in range(repeats):
    for k, fn in runs.items():
      times[k].append(median_seconds(fn, 1, 0))
  row = dict(**key, **{f"{k}_ms": 1e3 * float(np.median(v)) for k, v in times.items()})
  row["ratio"] = row["ours_ms"] / row["torch_ms"]
  row["xla_flags"] = flags or "-"
  print(row, flush=True)
  return row


def compare(sample_rate: int, batch: int, seconds: float, widths, periods, ffts,
            repeats: int, per_layer: bool, before: bool, halves: bool = False) -> list[dict]:
  import torch  # pylint: disable=g-import-not-at-top
  n = int(seconds * sample_rate)
  x_np = (np.random.default_rng(0).standard_normal((batch, 1, n)) * 0.1).astype(np.float32)
  rows = []
  flags = os.environ.get("XLA_FLAGS", "")
  parts = [("mpd", p) for p in periods] + [("mrd", f) for f in ffts]
  for width in widths:
    for kind, arg in parts:
      ref = _torch_discriminator(kind, arg, width, sample_rate)
      mine = ours.Discriminator(periods=(arg,) if kind == "mpd" else (),
                                fft_sizes=(arg,) if kind == "mrd" else (),
                                sample_rate=sample_rate, width=width)
      params = discriminator_params_from_torch(ref)
      x_t = torch.from_numpy(x_np).requires_grad_(True)

      def run_torch():
        ref.zero_grad(set_to_none=True)
        x_t.grad = None
        _loss_torch(ref(x_t)).backward()
        return x_t.grad

      step = jax.jit(jax.grad(lambda p, x: _loss_jax(mine.apply({"params": p}, x)),
                              argnums=(0, 1)))
      x_j = jnp.asarray(x_np)
      run_jax = lambda: block(step(params, x_j))
      # Same computation on both sides, or the timing means nothing.
      with torch.no_grad():
        want = float(_loss_torch(ref(x_t)))
      got = float(_loss_jax(mine.apply({"params": params}, x_j)))
      if not abs(got - want) <= 1e-4 * abs(want):
        raise AssertionError(f"{kind}_{arg} width {width}: loss {got} vs DAC's {want}")
      runs = {"torch": run_torch, "ours": run_jax}
      if before:                         # our earlier forms
        old = mine.clone(conv="xla")
        step_old = jax.jit(jax.grad(lambda p, x: _loss_jax(old.apply({"params": p}, x)),
                                    argnums=(0, 1)))
        runs["before"] = lambda: block(step_old(params, x_j))
      rows.append(_timed_row(runs, repeats, flags, width=width, part=f"{kind}_{arg}",
                             layer="all"))
      if halves:
        real_np = (np.random.default_rng(1).standard_normal(x_np.shape) * 0.1).astype(np.float32)
        rows += _compare_halves(f"{kind}_{arg}", width, ref, mine, params, x_np, real_np,
                                sample_rate, repeats, flags)
      if per_layer:
        rows += _compare_layers(kind, arg, width, ref, params, x_t, repeats, flags, before)
  return rows


def _compare_halves(part, width, ref, mine, params, fake_np, real_np, sample_rate: int,
                    repeats: int, flags: str) -> list[dict]:
  """The train step's two discriminator halves as it runs them, ours vs DAC's
  ``GANLoss`` over the same module: the D step (D loss on the detached fake and the
  real, weight gradients only) and the generator side (adversarial + 2 x feature
  loss, DAC's weights, gradient wrt the fake only, the discriminator frozen)."""
  import torch  # pylint: disable=g-import-not-at-top
  from audiotools import AudioSignal  # pylint: disable=g-import-not-at-top
  from dac.nn.loss import GANLoss  # pylint: disable=g-import-not-at-top
  gan = GANLoss(ref)
  fake_t = torch.from_numpy(fake_np)
  real_t = AudioSignal(torch.from_numpy(real_np), sample_rate)

  def torch_d_step():
    gan.zero_grad(set_to_none=True)
    gan.discriminator_loss(AudioSignal(fake_t, sample_rate), real_t).backward()

  def torch_g_side(check: bool = False):
    gan.requires_grad_(False)
    try:
      fake = fake_t.clone().requires_grad_(True)
      adv, feat = gan.generator_loss(AudioSignal(fake, sample_rate), real_t)
      loss = _weighted(adv, feat)
      loss.backward()
    finally:
      gan.requires_grad_(True)
    return float(loss) if check else fake.grad

  maps = lambda p, x: mine.apply({"params": p}, x)
  d_step = jax.jit(jax.grad(lambda p, f, r: losses.discriminator_loss(maps(p, f), maps(p, r))))
  g_side = jax.jit(jax.grad(lambda f, p, r: _weighted(*losses.generator_loss(maps(p, f),
                                                                            maps(p, r)))))
  fake_j, real_j = jnp.asarray(fake_np), jnp.asarray(real_np)
  # Same losses on both sides, or the timings mean nothing.
  with torch.no_grad():
    want_d = float(gan.discriminator_loss(AudioSignal(fake_t, sample_rate), real_t))
  got_d = float(losses.discriminator_loss(maps(params, fake_j), maps(params, real_j)))
  want_g = torch_g_side(check=True)
  got_g = float(_weighted(*losses.generator_loss(maps(params, fake_j), maps(params, real_j))))
  for name, got, want in (("D", got_d, want_d), ("generator", got_g, want_g)):
    if not abs(got - want) <= 1e-4 * abs(want):
      raise AssertionError(f"{part} width {width}: {name} loss {got} vs DAC's {want}")
  return [
      _timed_row({"torch": torch_d_step, "ours": lambda: block(d_step(params, fake_j, real_j))},
                 repeats, flags, width=width, part=part, layer="D step"),
      _timed_row({"torch": torch_g_side, "ours": lambda: block(g_side(fake_j, params, real_j))},
                 repeats, flags, width=width, part=part, layer="generator side")]


def _weighted(adversarial, features):
  return adversarial + 2 * features              # DAC's lambda_adv 1, lambda_feat 2


def _compare_layers(kind, arg, width, ref, params, x_t, repeats, flags, before) -> list[dict]:
  """Each conv layer alone (forward + input and weight gradients) at its real input."""
  import torch  # pylint: disable=g-import-not-at-top
  sub = ref.discriminators[0]
  modules = dict(sub.named_modules())
  inputs = {}
  hooks = [modules[path].register_forward_pre_hook(
      lambda m, a, path=path: inputs.__setitem__(path, a[0].detach().clone()))
           for _, path, _ in _conv_layers(kind, arg, width)]
  with torch.no_grad():
    ref(x_t.detach())
  for h in hooks:
    h.remove()
  rows = []
  for name, path, kw in _conv_layers(kind, arg, width):
    module = modules[path]
    xin = inputs[path].requires_grad_(True)
    conv = ours.WNConv(**kw)
    p = params["disc_0"][name]

    def run_torch(module=module, xin=xin):
      module.zero_grad(set_to_none=True)
      xin.grad = None
      (module(xin) ** 2).mean().backward()
      return xin.grad

    grad = lambda conv: jax.jit(jax.grad(
        lambda p, x: jnp.mean(conv.apply({"params": p}, x) ** 2), argnums=(0, 1)))
    xj = jnp.asarray(xin.detach().numpy())                  # [B, C, H, W]
    runs = {"torch": run_torch}
    if kind == "mpd":                    # as MPD runs it: phases folded into the batch
      folded = jnp.transpose(xj, (0, 3, 2, 1)).reshape(-1, xj.shape[2], xj.shape[1])  # [B*p, H, C]
      step = grad(ours.WNConv(**kw, implementation="channels_last"))
      runs["ours"] = lambda step=step, p=p, x=folded: block(step(p, x))
      if before:
        step_2d = grad(conv)
        runs["before"] = lambda step=step_2d, p=p, x=xj: block(step(p, x))
    else:
      impl = conv_ops.resolve("auto", kw["kernel_size"], kw["features"])
      step = grad(ours.WNConv(**kw, implementation=impl.replace("_channels_last", "")))  # NCHW in
      runs["ours"] = lambda step=step, p=p, x=xj: block(step(p, x))
      if before:
        step_old = grad(conv)
        runs["before"] = lambda step=step_old, p=p, x=xj: block(step(p, x))
    rows.append(_timed_row(runs, repeats, flags, width=width, part=f"{kind}_{arg}",
                           layer=f"{name} {list(xin.shape)}"))
  return rows


def memory(batch: int, seconds: float, run: bool) -> list[dict]:
  rows = []
  for sr in (44100, 16000):
    disc = ours.Discriminator(sample_rate=sr)
    n = int(seconds * sr)
    fake = jax.random.normal(jax.random.PRNGKey(0), (batch, 1, n)) * 0.1
    real = jax.random.normal(jax.random.PRNGKey(1), (batch, 1, n)) * 0.1
    params = jax.jit(disc.init)(jax.random.PRNGKey(2), fake[:1])["params"]
    d_step = jax.jit(jax.value_and_grad(lambda p, f, r: losses.discriminator_loss(
        disc.apply({"params": p}, f), disc.apply({"params": p}, r))))
    start = time.perf_counter()
    compiled = d_step.lower(params, fake, real).compile()
    compile_s = time.perf_counter() - start
    mem = compiled.memory_analysis()
    row = dict(sample_rate=sr, batch=batch, seconds=seconds, compile_s=compile_s,
               xla_temp_gb=mem.temp_size_in_bytes / 2 ** 30,
               xla_total_gb=(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                             + mem.output_size_in_bytes) / 2 ** 30)
    if run:
      start = time.perf_counter()
      block(compiled(params, fake, real))
      row["run_s"] = time.perf_counter() - start
      row["peak_rss_gb"] = peak_rss_mb() / 1024
    rows.append(row)
    print(row, flush=True)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--sample_rate", type=int, default=16000)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--seconds", type=float, default=2.0)
  p.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.0625])
  p.add_argument("--periods", type=int, nargs="*", default=[2, 3, 5, 7, 11])
  p.add_argument("--ffts", type=int, nargs="*", default=[2048, 1024, 512])
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=os.cpu_count(),
                 help="torch's intra-op threads (XLA's CPU pool uses every core)")
  p.add_argument("--per_layer", action="store_true")
  p.add_argument("--halves", action="store_true",
                 help="also the train step's two halves as it runs them: the D step (weight "
                      "gradients on fake and real) and the generator side (input gradient)")
  p.add_argument("--before", action="store_true",
                 help="also time our earlier forms (MPD's 2-D convs, MRD's "
                      "native strided input gradient)")
  p.add_argument("--name", default="disc", help="results file bench/results/<name>.json")
  p.add_argument("--memory", action="store_true",
                 help="instead: XLA's buffers of the full-size D step at 44.1 and 16 kHz")
  p.add_argument("--no_run", dest="run", action="store_false", help="with --memory")
  add_malloc_flag(p)
  args = p.parse_args(argv)
  set_malloc(args.malloc)
  if args.memory:
    rows = memory(args.batch, args.seconds, args.run)
    report(f"{args.name}_memory", ["sample_rate", "batch", "seconds", "compile_s",
                                   "xla_temp_gb", "xla_total_gb", "run_s", "peak_rss_gb"],
           rows, notes="DAC's discriminator at full size (MPD 2,3,5,7,11 + MRD 2048,1024,512), "
                       "D loss + parameter gradients on fake and real, fp32, CPU")
    return rows
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(args.threads)
  rows = compare(args.sample_rate, args.batch, args.seconds, args.widths, args.periods,
                 args.ffts, args.repeats, args.per_layer, args.before, args.halves)
  report(args.name, ["width", "part", "layer", "torch_ms", "ours_ms", "before_ms", "ratio",
                     "xla_flags"],
         rows, notes=f"layer 'all' and per layer: forward + input and weight gradients; "
                     f"'D step' / 'generator side': the train step's halves beside DAC's "
                     f"GANLoss; batch {args.batch} x "
                     f"{args.seconds} s at {args.sample_rate} Hz, torch threads {args.threads}, "
                     f"median of {args.repeats} interleaved runs after warm-up; "
                     f"malloc {args.malloc}")
  return rows


if __name__ == "__main__":
  main()
