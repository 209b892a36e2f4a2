"""The original NeuroCodec's PyTorch train step beside ours: same sizes, one process.

The original is JulianSilva2001/NeuroCodec (checked at 4aad69f), imported from a clone
given by ``--original`` (``git clone https://github.com/JulianSilva2001/NeuroCodec``);
nothing of it is copied here. Its ``models/neurocodec.py`` ``NeuroCodec`` is built at
the demo's generator sizes (hidden 64, 2 layers, 32 EEG channels) around the demo
codec (its ``audio_proj`` / ``output_proj`` resized from DAC 44.1 kHz's 1024 latent
channels to the codec's), with mamba-ssm's ``Mamba`` on its slow path and the
pure-PyTorch ``selective_scan_ref`` on a CPU (its CUDA scan on a GPU). Its module
imports GroupMamba, which NeuroCodec never uses and which needs timm; the bench
registers an empty module under that name instead. Its graph helpers place their
matrices with ``.cuda()``; without CUDA the bench makes ``Tensor.cuda`` a no-op while
the original runs.

The original's repository trains on the latent MSE only; its step with every loss is
the one its design (``configs/neurocodec.yaml``; the reference facts) describes and
ours runs: encode mixture and target with the frozen DAC (the original encodes in the
step; ours reads precomputed codes), forward, decode the prediction, DAC's
discriminator step on the detached waveform (``GANLoss``, AdamW, clip 10), then the
generator step (the discriminator frozen: no weight gradients, as in ours) on cosine
latents + 15 mel (DAC's 7-scale ``MelSpectrogramLoss``) + adversarial + 2 feature
matching (AdamW, clip 1). Ours: ``steps.make_train_step`` of
the demo preset with the original architecture (selector "none", the recipe's extra
terms off) and the same waveform terms and discriminator.

Rows: ``latent`` (latent loss only: no decode, no waveform terms), ``full`` (every
loss; ``--widths``: the discriminator's channel multiplier, 1 = DAC's, 0.0625 = the
demo's, with DAC's full MPD 2-11 / MRD 2048-512 at width 1 and the demo's MPD 2, 3, 5 /
MRD 512, 128 otherwise). With the discriminator, the original is timed twice: with
the discriminator frozen in the generator's backward (``original``: the same work as
ours) and as DAC's train.py writes it (``original_dac_train``: the generator's
backward also computes the discriminator's weight gradients, then discards them).
Each is timed interleaved (original, original as DAC's train.py, ours, original, ...),
median of ``--repeats`` after two warm-ups; the original's in-step encode is timed on
its own beside it (``encode_ms``), so that its step without it can be read off.

The process's allocator (``--malloc``, both sides share it): ``keep`` (the default)
is glibc's malloc as train.py sets it on a CPU (``host_memory.keep_freed_memory``),
``glibc`` as shipped. ``--sides original`` / ``ours`` builds and times one side only
(interleaving the two runtimes slows both).

Run: ``python -m bench.bench_original --original /path/to/NeuroCodec [--widths 0.0625 1]
[--malloc keep|glibc] [--sides both|original|ours]``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import types
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np

from bench.bench_step import preset_config, random_batch, train_step
from bench.common import add_malloc_flag, median_seconds, peak_rss_mb, report, set_malloc
from neurocodec_jax.configs import neurocodec
from neurocodec_jax import codec
from neurocodec_jax.run import build_run
from tests.references import import_mamba_ssm, torch_discriminator
import codec_bridge  # pylint: disable=unused-import,wrong-import-order  (registers the codec loader)

# Fields the demo preset sets for its separate-then-select recipe; the original's
# architecture has the base config's values.
_RECIPE_MODEL_FIELDS = ("selector", "select_window", "eeg_kernel", "output_norm",
                        "select_decision", "mix_input", "mixture_consistency")
_RECIPE_LOSSES = ("lambda_env", "lambda_sep", "lambda_sep_env")


def ours_config(width: float | None):
  """The demo preset with the original's architecture; ``width`` None: latent terms
  only; otherwise every waveform term and that discriminator."""
  config = preset_config("demo", waveform=width is not None, full_disc=width == 1.0)
  base = neurocodec.get_config("cocktail")
  for field in _RECIPE_MODEL_FIELDS:
    config.model[field] = base.model[field]
  for field in _RECIPE_LOSSES:
    config[field] = base[field]
  if width is not None and width != 1.0:
    config.disc.width = width
  return config


@contextlib.contextmanager
def _original_on_path(root: str):
  """Imports resolve into the clone; GroupMamba (timm, unused) is an empty module.
  Leaves ``sys.path`` and ``sys.modules`` as they were."""
  if not os.path.isfile(os.path.join(root, "models", "neurocodec.py")):
    raise FileNotFoundError(f"--original {root!r}: no models/neurocodec.py there; expected a "
                            "clone of https://github.com/JulianSilva2001/NeuroCodec")
  import_mamba_ssm()                       # mamba-ssm importable on a CPU
  ours = lambda k: k.split(".")[0] in ("models", "utility")
  saved = {k: v for k, v in sys.modules.items() if ours(k)}
  for k in saved:
    del sys.modules[k]
  stub = types.ModuleType("models.groupmamba")
  stub.GroupMamba = None
  sys.modules["models.groupmamba"] = stub
  sys.path.insert(0, root)
  try:
    yield
  finally:
    sys.path.remove(root)
    for k in [k for k in sys.modules if ours(k)]:
      del sys.modules[k]
    sys.modules.update(saved)


@contextlib.contextmanager
def _cpu_cuda_calls():
  """The original's graph helpers (utility/utils.py) place their matrices with
  ``.cuda()``: without CUDA, ``Tensor.cuda`` returns the tensor while the original runs."""
  import torch  # pylint: disable=g-import-not-at-top
  if torch.cuda.is_available():
    yield
    return
  with mock.patch.object(torch.Tensor, "cuda", lambda self, *args, **kwargs: self):
    yield


def original_model(root: str, config, dac_model):
  """The original ``NeuroCodec`` at the config's generator sizes around ``dac_model``."""
  import dac  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  with (_original_on_path(root),
        mock.patch.object(dac.utils, "download", lambda model_type: "(the demo codec)"),
        mock.patch.object(dac.DAC, "load", lambda path: dac_model)):
    from models import neurocodec as original  # pylint: disable=g-import-not-at-top
    torch.manual_seed(0)
    model = original.NeuroCodec(eeg_in_channels=config.eeg_channels,
                                hidden_dim=config.hidden_dim, num_layers=config.num_layers)
  latent = config.codec.arch.latent_dim
  model.audio_proj = torch.nn.Linear(latent, config.hidden_dim)
  model.output_proj = torch.nn.Linear(config.hidden_dim, latent)
  return model.train()


def original_step(model, config, width: float | None, noisy, clean, eeg,
                  freeze_disc: bool = True):
  """A callable running one original train step (module docstring), and the encode."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  from audiotools import AudioSignal  # pylint: disable=g-import-not-at-top
  from dac.nn.loss import GANLoss, MelSpectrogramLoss  # pylint: disable=g-import-not-at-top
  sr = config.codec.arch.sample_rate
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt_g = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=config.train.weight_decay)
  noisy, clean, eeg = (torch.from_numpy(np.asarray(a)) for a in (noisy, clean, eeg))
  if width is not None:
    d = config.disc
    gan = GANLoss(torch_discriminator(d.periods, d.fft_sizes, d.width, sr))
    opt_d = torch.optim.AdamW(gan.parameters(), lr=d.lr)
    m = config.mel
    mel = MelSpectrogramLoss(n_mels=list(m.n_mels), window_lengths=list(m.window_lengths),
                             clamp_eps=m.clamp_eps, mag_weight=m.mag_weight,
                             log_weight=m.log_weight, pow=m.pow,
                             mel_fmin=[0.0] * len(m.n_mels), mel_fmax=[None] * len(m.n_mels))
    real = AudioSignal(clean, sr)

  def encode():
    with torch.no_grad():
      return model.dac.encode(clean)[0]

  def step():
    with _cpu_cuda_calls():
      return _step()

  def _step():
    z_tgt = encode()
    z_pred = model(noisy, eeg)[0]
    loss = config.lambda_recon * F.mse_loss(F.normalize(z_pred, dim=1),
                                            F.normalize(z_tgt, dim=1))
    if width is not None:
      wave = model.dac.decode(z_pred)
      wave = F.pad(wave, (0, clean.shape[-1] - wave.shape[-1]))   # as ours: tail to F * hop
      opt_d.zero_grad(set_to_none=True)
      gan.discriminator_loss(AudioSignal(wave.detach(), sr), real).backward()
      torch.nn.utils.clip_grad_norm_(gan.parameters(), config.disc.grad_clip)
      opt_d.step()
      fake = AudioSignal(wave, sr)
      # ``freeze_disc``: no discriminator weight gradients in the generator's backward,
      # as ours. Off: as DAC's train.py, which computes them and discards them.
      gan.requires_grad_(not freeze_disc)
      adv, feat = gan.generator_loss(fake, real)
      loss = (loss + config.lambda_mel * mel(fake, real) + config.lambda_adv * adv
              + config.lambda_feat * feat)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, config.train.grad_clip)
    opt_g.step()
    if width is not None:
      gan.requires_grad_(True)
    return float(loss)

  def both_encodes():
    with torch.no_grad():
      model.dac.encode(noisy)
    return encode()

  return step, both_encodes


def measure(root: str, width: float | None, repeats: int, sides: str = "both") -> dict:
  """``sides``: ``both`` interleaved, or only ``original`` / ``ours`` in this process
  (the other's columns then None)."""
  import torch  # pylint: disable=g-import-not-at-top
  config = ours_config(width)
  batch = {k: jnp.asarray(v) for k, v in random_batch(config).items()}
  run = build_run(config, example=batch)
  ours, temp_mb = None, None
  if sides != "original":
    _, ours, _, temp_mb = train_step(config, run, run.init_state(), batch)
  arch = config.codec.arch
  shape = (config.batch_size, 1,
           codec.hop_length(arch) * codec.frame_count(arch, config.data.segment_seconds))
  noisy, clean = (0.1 * np.random.default_rng(1).standard_normal((2, *shape))).astype(np.float32)
  runs = {}
  if sides != "ours":
    model = original_model(root, config, _torch_codec(config))
    eeg = np.asarray(batch["eeg"])
    runs["original"], encodes = original_step(model, config, width, noisy, clean, eeg)
    if width is not None:                   # the generator's backward as DAC's train.py
      runs["original_dac_train"] = original_step(model, config, width, noisy, clean, eeg,
                                                 freeze_disc=False)[0]
  if sides != "original":
    runs["ours"] = ours
  times = {k: [] for k in runs}
  for _ in range(2):                        # warm-up (our compile; first runs' allocations)
    for fn in runs.values():
      fn()
  for _ in range(repeats):
    for name, fn in runs.items():
      times[name].append(median_seconds(fn, 1, 0))
  ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
  row = dict(step="latent" if width is None else "full",
             disc="-" if width is None else
             f"width {width}: MPD {list(config.disc.periods)}, MRD {list(config.disc.fft_sizes)}",
             original_ms=ms.get("original"), original_dac_train_ms=ms.get("original_dac_train"),
             encode_ms=1e3 * median_seconds(encodes, repeats) if "original" in ms else None,
             ours_ms=ms.get("ours"), xla_temp_mb=temp_mb,
             peak_rss_mb=peak_rss_mb(), torch_threads=torch.get_num_threads())
  if sides == "both":
    row["ratio"] = row["ours_ms"] / row["original_ms"]
    row["ratio_without_encode"] = row["ours_ms"] / (row["original_ms"] - row["encode_ms"])
    if width is not None:
      row["ratio_dac_train"] = row["ours_ms"] / row["original_dac_train_ms"]
  print(row, flush=True)
  return row


def _torch_codec(config):
  from codec_bridge.loading import load_dac_from_config  # pylint: disable=g-import-not-at-top
  return load_dac_from_config(config.codec)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--original", required=True,
                 help="a clone of https://github.com/JulianSilva2001/NeuroCodec")
  p.add_argument("--widths", nargs="*", type=float, default=[0.0625, 1.0],
                 help="discriminator widths for the full step (1 = DAC's discriminator)")
  p.add_argument("--no_latent", action="store_true", help="skip the latent-only row")
  p.add_argument("--repeats", type=int, default=3)
  add_malloc_flag(p)
  p.add_argument("--sides", choices=("both", "original", "ours"), default="both",
                 help="time both interleaved, or one alone in this process")
  args = p.parse_args(argv)
  set_malloc(args.malloc)
  rows = [] if args.no_latent else [measure(args.original, None, args.repeats, args.sides)]
  rows += [measure(args.original, w, args.repeats, args.sides) for w in args.widths]
  report("original_step", ["step", "disc", "original_ms", "encode_ms", "original_dac_train_ms",
                           "ours_ms", "ratio", "ratio_without_encode", "ratio_dac_train",
                           "xla_temp_mb", "peak_rss_mb"], rows,
         notes="demo generator sizes (hidden 64, 2 layers, 32 EEG channels), demo codec, "
               "batch 8 x 2 s at 16 kHz, original architecture on both sides; "
               f"interleaved, median of {args.repeats} after two warm-ups; ratio = ours / original; "
               f"malloc {args.malloc}, sides {args.sides}")
  return rows


if __name__ == "__main__":
  main()
