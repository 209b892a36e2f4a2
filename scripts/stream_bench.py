"""Streaming extraction on a trained run: latency, real-time factor, quality vs offline.

  OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false" \
      python scripts/stream_bench.py --workdir runs/demo --seconds 10 --blocks 20,40,80

Input: a synthetic mixture (two harmonic "talkers" with syllable-rate envelopes plus
noise) and random EEG of the run's channel count: timing needs no real data, and
the quality columns compare outputs of the same input. Per block size: the
algorithmic latency, the real-time factor (block processing seconds / audio
seconds, compile excluded) and its split (the encoder and decoder stages timed
alone, the generator the rest), and the streamed output against (a) the offline
causal reference (whole encode, ``apply(..., streaming=True)``, whole decode): max
abs error and SI-SDR, and (b) ``extraction.extract`` (the offline windows with the
trial-wide selector): SI-SDR.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import codec_bridge  # pylint: disable=unused-import,wrong-import-position


def si_sdr(est: np.ndarray, ref: np.ndarray) -> float:
  est, ref = est - est.mean(), ref - ref.mean()
  target = (est @ ref) / (ref @ ref + 1e-12) * ref
  return float(10 * np.log10((target @ target + 1e-12) / ((est - target) @ (est - target) + 1e-12)))


def synthetic(seconds: float, sr: int, channels: int, eeg_rate: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * sr)) / sr
  talker = lambda f0, rate: (np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(4 * np.pi * f0 * t)) * (
      0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6)))
  mix = 0.2 * talker(140, 4.0) + 0.2 * talker(230, 5.5) + 0.01 * rng.standard_normal(len(t))
  eeg = 10 * rng.standard_normal((channels, int(np.ceil(seconds * eeg_rate)) + 1))
  return mix.astype(np.float32), eeg.astype(np.float32)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", default="runs/demo")
  p.add_argument("--seconds", type=float, default=10.0)
  p.add_argument("--blocks", default="20,40,80", help="block sizes in ms")
  p.add_argument("--chunked", action="store_true",
                 help="re-encode/re-decode a chunk with context per block (the run's codec) "
                      "instead of the stateful JAX codec")
  args = p.parse_args(argv)

  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import codec, extraction, streaming  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import dac_jax, dac_stream  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from codec_bridge.converters import dac_params_from_torch  # pylint: disable=g-import-not-at-top

  config = load_run_config(args.workdir)
  arch = config.codec.arch
  sr, hop = arch.sample_rate, codec.hop_length(arch)
  mix, eeg = synthetic(args.seconds, sr, config.eeg_channels, config.data.eeg_rate)
  run = build_run(config)
  run.example = {k: v[:1] for k, v in extraction.make_window_batch(run, mix, eeg, [0]).items()}
  state, where = run.restore_generator(workdir=args.workdir)
  with open("/proc/loadavg") as f:
    load = f.read().split()[:3]
  print(f"{where}: {args.seconds:g} s synthetic input, codec backend "
        f"{config.codec.get('backend', 'torch')}, loadavg {' '.join(load)}")

  # Offline references.
  offline = extraction.extract(run, state, mix, eeg)["wave"]
  encode, enc_params = run.codec.encoder()
  # A torch-backend run streams with the JAX port of its DAC (the same weights); its
  # causal reference is then the port's too (hard decisions at near-ties flip on the
  # two codecs' float rounding).
  dac_params = None
  if not args.chunked and enc_params is None:
    dac_params = dac_params_from_torch(run.codec.model)
  n = len(mix) // hop * hop
  variables = {"params": state["g"]["params"], "batch_stats": state["g"]["batch_stats"]}
  n_eeg = int(np.ceil(n / sr * config.data.eeg_rate))
  generate = jax.jit(lambda v, zz, e: run.models.generator.apply(v, zz, e, train=False,
                                                                 streaming=True))

  def causal_reference(encode, enc_params, decode, dec_params):
    latent = jax.jit(encode)(enc_params, jnp.asarray(mix[:n])[None, None])
    if config.model.mix_input == "quantized":
      latent = codec.requantize(run.frozen["quantizer"], latent, None)
    z, _ = generate(variables, latent, jnp.asarray(eeg[:, :n_eeg])[None])
    if config.codec.requantize_output:
      z = codec.requantize(run.frozen["quantizer"], z, config.codec.n_quantizers_eval)
    return np.asarray(jax.jit(decode)(dec_params, z))[0, 0]

  causal = causal_reference(encode, enc_params, run.models.decode, run.frozen["decoder"])
  if dac_params is not None:
    port = causal_reference(
        lambda p, a: dac_jax.encoder_module(p).apply({"params": p}, a), dac_params["encoder"],
        lambda p, zz: dac_jax.decode(dict(decoder=p), zz), dac_params["decoder"])
    print(f"causal reference, JAX port vs the run's codec: max abs difference "
          f"{np.abs(port - causal).max():.1e}, SI-SDR {si_sdr(port, causal):.1f} dB")
    causal = port

  rows = []
  for block_ms in [float(b) for b in args.blocks.split(",")]:
    streamer = streaming.Streamer.from_run(run, state, block_ms=block_ms,
                                           max_seconds=args.seconds + 1, dac_params=dac_params,
                                           stateful=not args.chunked)
    out = streamer.run(mix, eeg, timings=True)
    lay = streamer.layout
    # The codec stages alone, block by block, for the time split.
    bs = lay.block * hop
    blocks = len(mix) // bs
    zb = jnp.zeros((1, int(arch.latent_dim), lay.block))
    if streamer.stateful:
      cp = streamer.codec_params
      enc = jax.jit(lambda s, a, k: dac_stream.encoder_step(cp["encoder"], s, a, k, lay.enc_ahead))
      dec = jax.jit(lambda s, zz, k: dac_stream.decoder_step(cp["decoder"], s, zz, k,
                                                             lay.gen_delay, lay.dec_ahead))
      st0 = streamer.init_state()
      buf, queue = st0["enc"], st0["dec"]
    else:
      enc = jax.jit(lambda buf, a, k: streaming.encoder_stage(encode, enc_params, lay, buf, a, k))
      dec = jax.jit(lambda q, zz, k: streaming.decoder_stage(
          run.models.decode, run.frozen["decoder"], lay, q, zz, k))
      buf = jnp.zeros((1, 1, (lay.enc_left + lay.block + lay.enc_ahead) * hop))
      queue = jnp.zeros((1, int(arch.latent_dim), lay.dec_left + lay.block + lay.dec_ahead))
    jax.block_until_ready((enc(buf, jnp.zeros((1, 1, bs)), 1), dec(queue, zb, 1)))
    t_enc = t_dec = 0.0
    for k in range(blocks):
      t0 = time.perf_counter()
      buf, f = enc(buf, jnp.asarray(mix[k * bs:(k + 1) * bs])[None, None], k + 1)
      jax.block_until_ready(f)
      t1 = time.perf_counter()
      queue, w = dec(queue, zb, k + 1)
      jax.block_until_ready(w)
      t_enc, t_dec = t_enc + t1 - t0, t_dec + time.perf_counter() - t1
    audio_s = blocks * bs / sr
    m = streaming.exact_frames(lay, len(mix) // hop) * hop
    # Hard decisions: the correlation's first frame (one sample) is rounding noise, a
    # tie either codec path may break differently; the error past its decoded reach
    # (latent frame t0 reaches output frames up to t0 + dec_left).
    model = streamer.model
    t0 = model.select_lag() if model.select_decision == "hard" else -lay.dec_left - 1
    past = (t0 + lay.dec_left + 1) * hop
    med = float(np.median(out["block_seconds"][:blocks])) / (bs / sr)
    rows.append((block_ms, out["latency"]["total"], out["rtf"], out["cpu_rtf"], med,
                 t_enc / audio_s, t_dec / audio_s,
                 out["rtf"] - (t_enc + t_dec) / audio_s,
                 np.abs(out["wave"][:m] - causal[:m]).max(),
                 np.abs(out["wave"][past:m] - causal[past:m]).max(), si_sdr(out["wave"][:m], causal[:m]),
                 si_sdr(out["wave"], offline)))
  print("| block ms | latency ms | RTF | CPU s / audio s | median block RTF | encoder "
        "| generator | decoder | max err vs causal | ... past the first hard decision | SI-SDR vs causal dB | SI-SDR vs offline dB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for b, lat, rtf, cpu, med, te, td, tg, err, err2, s_c, s_o in rows:
    print(f"| {b:g} | {lat:.0f} | {rtf:.3f} | {cpu:.3f} | {med:.3f} | {te:.3f} | {tg:.3f} "
          f"| {td:.3f} | {err:.1e} | {err2:.1e} "
          f"| {s_c:.1f} | {s_o:.1f} |")
  with open("/proc/loadavg") as f:
    print("loadavg after:", " ".join(f.read().split()[:3]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
