"""The train step of a preset, whole and broken down, with compile time, memory, FLOPs.

For each preset (``demo``: the small random codec; ``cocktail``: DAC's full 44.1 kHz
architecture with random weights, batch 1 on a CPU) on random inputs of the
preset's shapes:

  data         one batch from the grain pipeline (demo data; ``bench_pipeline``
               has the throughput)
  latent       generator forward + backward on the latent loss (no decode)
  decode fwd   the codec's decoder forward (codec.backend torch: the bridge's host
               callback into DAC; jax: the Flax decoder in XLA)
  decode vjp   decoder forward + VJP
  mel          multi-scale mel loss value + gradient wrt the waveform
  disc         discriminator: D loss + grads on (fake, real), then the generator-
               side adversarial + feature loss gradient wrt the waveform; beside it
               the same in DAC's torch (``GANLoss``, same periods, FFTs and width)
  optimizer    generator and discriminator optax updates
  step         the whole jitted train step (what training runs)

Compile time of the step is reported separately (``lower().compile()``); the
step is then run ``repeats`` times and must not recompile (its jit cache stays at
one entry). FLOPs are XLA's cost analysis of the latent part (the decoder runs in
torch, outside XLA's count); "of peak" divides its achieved GFLOP/s by this
machine's matmul peak (``bench_machine``). Memory: XLA's temp buffer size of the
compiled step, and the process's peak RSS.

``--programs``: instead, the train step's program with a waveform term on
(``lambda_mel=15`` when the preset has none) for each ``--backends`` codec backend:
the lowered StableHLO's size (characters, and bytes of dense constants), lowering and
compile time, with the frozen codec's arrays (``run.frozen``) as an argument, as
training runs it, and closed over, as it once was (XLA then embeds them in the
program as constants).

``--backends torch jax`` measures each codec backend in turn (one process);
``--waveform`` adds DAC's waveform terms (mel 15, adversarial 1, features 2) to a
preset that has none, so that the step decodes; ``--full_disc`` swaps in DAC's own
discriminator (width 1, all periods and FFT sizes; the demo's is narrow).

Run: ``python -m bench.bench_step [--presets demo cocktail] [--backends torch jax] [--waveform]``;
``python -m bench.bench_step --programs --presets demo --backends torch jax``.
"""

from __future__ import annotations

import argparse
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.bench_machine import matmul_gflops
from bench.common import add_malloc_flag, block, median_seconds, peak_rss_mb, report, set_malloc
from neurocodec_jax.configs import neurocodec
from neurocodec_jax import codec, losses
from neurocodec_jax.run import build_run
from neurocodec_jax.train import steps
import codec_bridge  # pylint: disable=unused-import,wrong-import-order  (registers the codec loader)


def preset_config(preset: str, backend: str | None = None, waveform: bool = False,
                  full_disc: bool = False):
  """``backend``: ``codec.backend`` (None: the preset's); ``waveform``: DAC's waveform
  terms (mel 15, adversarial 1, features 2) when the preset has none (the demo recipe
  trains on latent terms only, so its step never decodes); ``full_disc``: DAC's own
  discriminator (MPD 2, 3, 5, 7, 11, MRD 2048, 1024, 512, width 1)."""
  config = neurocodec.get_config(preset)
  if preset != "demo":                 # full-size architecture, random weights
    config.codec.random = True
    config.batch_size = 1
  if backend is not None:
    config.codec.backend = backend
  if waveform and not steps.uses_waveform(config):
    config.lambda_mel, config.lambda_adv, config.lambda_feat = 15.0, 1.0, 2.0
  if full_disc:
    config.disc.periods, config.disc.fft_sizes, config.disc.width = (
        (2, 3, 5, 7, 11), (2048, 1024, 512), 1.0)
  return config


def random_batch(config, seed: int = 0) -> dict:
  """Random values of the preset's shapes for every field its train step reads
  (``steps.batch_fields``: the recipe's competing talker and continuous latents too)."""
  arch = config.codec.arch
  hop, frames = codec.hop_length(arch), codec.frame_count(arch, config.data.segment_seconds)
  b = config.batch_size
  rng = np.random.default_rng(seed)
  eeg_t = int(config.data.segment_seconds * config.data.eeg_rate)

  def value(field):
    if field.endswith("_codes"):
      return rng.integers(0, arch.codebook_size, (b, arch.n_codebooks, frames)).astype(np.int32)
    if field.endswith("_latent"):
      return rng.standard_normal((b, arch.latent_dim, frames)).astype(np.float32)
    if field == "eeg":
      return rng.standard_normal((b, config.eeg_channels, eeg_t)).astype(np.float32)
    return (0.1 * rng.standard_normal((b, 1, frames * hop))).astype(np.float32)   # audio

  return {field: value(field) for field in steps.batch_fields(config)}


def data_seconds(config) -> float | None:
  """One demo batch from the grain pipeline (other presets have no local data)."""
  if config.preset != "demo":
    return None
  import os  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import open_split, train_dataset  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(config.root):
    return None
  it = iter(train_dataset(open_split(config, "train"), config.batch_size, seed=0))
  next(it)
  return median_seconds(lambda: next(it), repeats=10, warmup=0)


def torch_disc_seconds(config, fake: np.ndarray, real: np.ndarray, repeats: int) -> float:
  """The same discriminator part in DAC's torch (``GANLoss``; the config's periods, FFT
  sizes and width): D loss + weight gradients, then the generator's adversarial +
  feature loss gradient wrt the waveform."""
  import torch  # pylint: disable=g-import-not-at-top
  from audiotools import AudioSignal  # pylint: disable=g-import-not-at-top
  from dac.nn.loss import GANLoss  # pylint: disable=g-import-not-at-top
  from tests.references import torch_discriminator  # pylint: disable=g-import-not-at-top
  d = config.disc
  if tuple(d.rates):
    raise ValueError("the torch discriminator row covers MPD and MRD only (disc.rates empty)")
  gan = GANLoss(torch_discriminator(d.periods, d.fft_sizes, d.width,
                                    config.codec.arch.sample_rate))
  sr = config.codec.arch.sample_rate
  real_t = AudioSignal(torch.from_numpy(real), sr)

  def run():
    gan.zero_grad(set_to_none=True)
    fake_t = torch.from_numpy(fake).requires_grad_(True)
    gan.discriminator_loss(AudioSignal(fake_t.detach(), sr), real_t).backward()
    adv, feat = gan.generator_loss(AudioSignal(fake_t, sr), real_t)
    (adv + feat).backward()
    return fake_t.grad

  return median_seconds(run, repeats)


def train_step(config, run, state: dict, batch: dict):
  """Our whole train step as training compiles it (state donated), compiled once:
  ``(jitted step, a blocking callable running one step on the carried state, compile
  seconds, XLA temp MB)``."""
  step_fn = jax.jit(steps.make_train_step(config, run.models,
                                          total_steps=max(config.train.max_steps, 1)),
                    donate_argnums=0)
  start = time.perf_counter()
  compiled = step_fn.lower(state, batch, run.frozen).compile()
  compile_s = time.perf_counter() - start
  mem = compiled.memory_analysis()
  temp_mb = getattr(mem, "temp_size_in_bytes", 0) / 2 ** 20 if mem is not None else float("nan")
  holder = {"state": state}

  def run_step():
    holder["state"], metrics = step_fn(holder["state"], batch, run.frozen)
    block(metrics)

  return step_fn, run_step, compile_s, temp_mb


def measure(preset: str, repeats: int, peak_gflops: float, backend: str | None = None,
            waveform: bool = False, full_disc: bool = False) -> list[dict]:
  config = preset_config(preset, backend, waveform, full_disc)
  batch = {k: jnp.asarray(v) for k, v in random_batch(config).items()}
  run = build_run(config, example=batch)
  models, frozen, state = run.models, run.frozen, run.init_state()
  rows = []
  add = lambda part, seconds, **kw: rows.append(dict(
      preset=preset, backend=config.codec.backend, part=part, ms=1e3 * seconds, **kw))

  add("data", data_seconds(config) or float("nan"))

  # Latent model: generator forward + backward on the latent loss.
  z_mix = steps.mix_latent(frozen["quantizer"], batch, config.model.mix_input)
  z_tgt = codec.codes_to_z(frozen["quantizer"], batch["clean_codes"])
  def latent_loss(params):
    (z, _), _ = models.generator.apply(
        {"params": params, "batch_stats": state["g"]["batch_stats"]}, z_mix, batch["eeg"],
        train=True, rngs={"dropout": jax.random.PRNGKey(0)}, mutable=["batch_stats"])
    return losses.latent_loss(z, z_tgt, config.normalize_latents)
  latent = jax.jit(jax.value_and_grad(latent_loss)).lower(state["g"]["params"]).compile()
  flops = float((latent.cost_analysis() or {}).get("flops", float("nan")))
  t = median_seconds(lambda: block(latent(state["g"]["params"])), repeats)
  add("latent", t, gflop=flops / 1e9, pct_of_peak=100 * flops / t / 1e9 / peak_gflops)

  # Codec decode (torch: through the bridge; jax: in XLA).
  z_pred = jax.random.normal(jax.random.PRNGKey(1), z_tgt.shape)
  dec = jax.jit(models.decode)
  add("decode fwd", median_seconds(lambda: block(dec(frozen["decoder"], z_pred)), repeats))
  dec_vjp = jax.jit(jax.grad(lambda p, z: jnp.sum(models.decode(p, z) ** 2), argnums=1))
  add("decode fwd+vjp", median_seconds(lambda: block(dec_vjp(frozen["decoder"], z_pred)),
                                       repeats))
  wave = dec(frozen["decoder"], z_pred)

  if config.lambda_mel > 0:
    mel = jax.jit(jax.value_and_grad(lambda w: losses.mel_loss(
        w, batch["clean"], config.codec.arch.sample_rate, **dict(config.mel))))
    add("mel", median_seconds(lambda: block(mel(wave)), repeats))

  if models.discriminator is not None:
    disc = models.discriminator
    def d_and_g(d_params, w):
      d_loss, d_grads = jax.value_and_grad(lambda p: losses.discriminator_loss(
          disc.apply({"params": p}, w), disc.apply({"params": p}, batch["clean"])))(d_params)
      g_grad = jax.grad(lambda w: sum(losses.generator_loss(
          disc.apply({"params": d_params}, w), disc.apply({"params": d_params}, batch["clean"]))))(w)
      return d_loss, d_grads, g_grad
    dg = jax.jit(d_and_g)
    add("discriminators", median_seconds(lambda: block(dg(state["d"]["params"], wave)), repeats))
    add("discriminators (DAC torch)", torch_disc_seconds(config, np.array(wave),
                                                         np.array(batch["clean"]), repeats))

  g_params, g_opt = state["g"]["params"], state["g"]["opt"]
  def opt_update(params, opt, d_params, d_opt):
    grads = jax.tree.map(jnp.ones_like, params)
    upd, opt = models.g_tx.update(grads, opt, params)
    out = [optax.apply_updates(params, upd), opt]
    if models.d_tx is not None:
      d_upd, d_opt = models.d_tx.update(jax.tree.map(jnp.ones_like, d_params), d_opt, d_params)
      out += [optax.apply_updates(d_params, d_upd), d_opt]
    return out
  opt = jax.jit(opt_update)
  d_p, d_o = state["d"].get("params", {}), state["d"].get("opt", {})
  add("optimizer", median_seconds(lambda: block(opt(g_params, g_opt, d_p, d_o)), repeats))

  # The whole step, as training compiles it.
  step_fn, run_step, compile_s, temp_mb = train_step(config, run, state, batch)
  t_step = median_seconds(run_step, repeats)
  cache = step_fn._cache_size()  # pylint: disable=protected-access
  if cache != 1:
    raise RuntimeError(f"{preset}: the train step compiled {cache} times; expected once.")
  add("step", t_step, compile_s=compile_s, xla_temp_mb=temp_mb, compiles=cache,
      peak_rss_mb=peak_rss_mb(), examples_per_s=config.batch_size / t_step)
  return rows


def program_rows(preset: str, backend: str) -> list[dict]:
  """The train step's program, the frozen codec as an argument vs closed over (see the
  module docstring); each lowered and compiled once, in that order."""
  config = preset_config(preset, backend)
  if not steps.uses_waveform(config):
    config.lambda_mel = 15.0
  batch = {k: jnp.asarray(v) for k, v in random_batch(config).items()}
  run = build_run(config, example=batch)
  state = run.init_state()
  step = steps.make_train_step(config, run.models, total_steps=max(config.train.max_steps, 1))
  rows = []
  for frozen, fn, args in (("argument", step, (state, batch, run.frozen)),
                           ("closed over", lambda s, b: step(s, b, run.frozen), (state, batch))):
    start = time.perf_counter()
    lowered = jax.jit(fn, donate_argnums=0).lower(*args)
    lower_s = time.perf_counter() - start
    text = lowered.as_text()
    start = time.perf_counter()
    lowered.compile()
    constants = sum(len(h) // 2 for h in re.findall(r'dense<"0x([0-9A-F]+)">', text))
    rows.append(dict(preset=preset, backend=backend, frozen=frozen, hlo_chars=len(text),
                     constants_mb=constants / 2 ** 20, lower_s=lower_s,
                     compile_s=time.perf_counter() - start))
  frozen_mb = sum(x.nbytes for x in jax.tree.leaves(run.frozen)) / 2 ** 20
  for r in rows:
    r["frozen_mb"] = frozen_mb
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--presets", nargs="+", default=["demo", "cocktail"])
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--programs", action="store_true",
                 help="the step's program size and compile time instead (module docstring)")
  p.add_argument("--backends", nargs="+", default=None,
                 help="codec backends (default: the preset's; with --programs: torch jax)")
  p.add_argument("--waveform", action="store_true",
                 help="DAC's waveform terms (15/1/2) when the preset has none")
  p.add_argument("--full_disc", action="store_true",
                 help="DAC's own discriminator (its periods, FFT sizes, width 1)")
  add_malloc_flag(p)
  args = p.parse_args(argv)
  set_malloc(args.malloc)
  if args.programs:
    rows = [r for preset in args.presets for b in (args.backends or ["torch", "jax"])
            for r in program_rows(preset, b)]
    report("step_program", ["preset", "backend", "frozen", "frozen_mb", "hlo_chars",
                            "constants_mb", "lower_s", "compile_s"], rows,
           notes=f"train step with a waveform term on, random inputs of each preset's "
                 f"shapes; CPU, {jax.device_count()} device(s)")
    return rows
  peak = matmul_gflops()
  rows = []
  for preset in args.presets:
    for backend in args.backends or [None]:
      rows += measure(preset, args.repeats, peak, backend, args.waveform, args.full_disc)
  report("step", ["preset", "backend", "part", "ms", "gflop", "pct_of_peak", "compile_s", "xla_temp_mb",
                  "compiles", "peak_rss_mb", "examples_per_s"], rows,
         notes=f"random inputs of each preset's shapes; cocktail: DAC 44.1 kHz architecture "
               f"with random weights, batch 1; matmul peak {peak:.1f} GFLOP/s; "
               f"CPU, {jax.device_count()} device(s); malloc {args.malloc}")
  return rows


if __name__ == "__main__":
  main()
