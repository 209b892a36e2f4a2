"""Train the project's own small DAC (the demo codec) with DAC's own objectives.

DAC's release weights cannot be downloaded everywhere (not on our CI machines),
and a random-weight DAC's quantized latent space is a hash (see
``neurocodec_jax.latent_structure``), so the demo ships a small DAC trained here::

  python -m codec_training.train --out runs/codec/demo --threads 1 \
      --lambda_sisdr 1.0 --gan_start 100000   # the shipped codec (its manifest's command)
  python -m codec_training.ship --src runs/codec/demo  # weights + manifest

What it trains: ``dac.DAC`` at the sizes of ``neurocodec_jax.codec_arch.DEMO_CODEC``
(16 kHz, hop 320) with the installed package's objectives, as DAC's
``scripts/train.py`` and ``conf/base.yml`` do:

  * ``dac.nn.loss.MelSpectrogramLoss`` (DAC's 7-scale setting), weight 15;
  * ``dac.nn.loss.GANLoss`` with ``dac.model.discriminator.Discriminator``:
    generator adversarial loss 1, feature matching 2; the discriminator is updated
    first on the detached reconstruction, each side with its own gradient clip
    (discriminator 10, generator 1e3);
  * the quantizer's commitment (0.25) and codebook (1) losses, quantizer dropout;
  * ``dac.nn.loss.L1Loss`` on the waveform (DAC computes it with weight 0).

What we changed for a 2-core CPU budget (``CodecSpec`` holds every value, saved
in the checkpoint and the manifest): a smaller discriminator (``--periods``,
``--fft_sizes``); a higher learning rate with warm-up (DAC: AdamW 1e-4,
betas 0.8/0.99, ExponentialLR 0.999996 for ~400k steps; we have a few thousand)
and the GAN switched on after ``gan_start`` steps of reconstruction-only training;
an optional SI-SDR term (``dac.nn.loss.SISDRLoss``) to pull the waveform phase in
early, which DAC leaves to the GAN over GPU-weeks.

Data: speech-like clips drawn fresh from the synthetic talker generator
(``neurocodec_jax.data.synthetic.talker``) — a new random talker for every clip,
never the same clip twice — half of them single talkers, half two-talker mixtures
at a random level difference (the demo's trials), each at a random peak level.
Clip ``i`` of step ``s`` is a pure function of ``(seed, s, i)``, so runs are
deterministic by seed and a resumed run sees exactly the clips it would have.

The result is written in DAC's OWN format (``DAC.save(path, package=False)``:
``{"state_dict", "metadata": {"kwargs"}}``, the format of DAC's release files)
to ``<out>/weights.pth``, loadable with ``codec_bridge.load_dac(weights=...)``,
plus ``<out>/train_state.pt`` (resume) and ``<out>/log.jsonl`` (the curve).
Interrupt at any time; re-running the same command resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from codec_bridge import loading
from codec_training import widen
from neurocodec_jax import codec
from neurocodec_jax.data import speech, synthetic


@dataclasses.dataclass
class CodecSpec:
  """Everything that defines a codec training run (saved with it)."""
  # DAC architecture (configs.neurocodec.DEMO_CODEC by default).
  sample_rate: int = 16000
  encoder_dim: int = 8
  encoder_rates: tuple = (2, 4, 5, 8)
  latent_dim: int = 64
  decoder_dim: int = 128
  decoder_rates: tuple = (8, 5, 4, 2)
  n_codebooks: int = 8
  codebook_size: int = 1024
  codebook_dim: int = 8
  quantizer_dropout: float = 0.5
  # Discriminator (DAC: periods 2,3,5,7,11; fft 2048,1024,512).
  periods: tuple = (2, 3, 5, 7, 11)
  fft_sizes: tuple = (512, 256, 128)
  # Optimisation.
  steps: int = 5500
  batch_size: int = 8
  clip_seconds: float = 0.4          # DAC trains on 0.38 s excerpts
  lr: float = 1e-3
  d_lr: float = 1e-4
  warmup: int = 100
  lr_decay: float = 0.9995           # per step after warm-up (DAC: 0.999996)
  # A warm restart: from this step on (0: none) the rate starts again at lr and decays
  # from there (a continued run may take a new cycle, e.g. to train a widened network).
  lr_restart: int = 0
  # The peak rate of the codebooks the run's first ``init`` file lacks (0: the run's
  # ``lr``), on the run's schedule. They start silent, and an annealed run's rate barely
  # opens them (at 5e-5 their output gains reached 0.5% of the trained codebooks' in
  # 1500 steps).
  added_codebook_lr: float = 0.0
  gan_start: int = 1000              # steps of reconstruction-only training first
  # Loss weights (DAC's conf/base.yml, plus the extras named in the docstring).
  lambda_mel: float = 15.0
  lambda_gen: float = 1.0
  lambda_feat: float = 2.0
  lambda_commit: float = 0.25
  lambda_codebook: float = 1.0
  lambda_waveform: float = 0.0
  lambda_sisdr: float = 0.0
  lambda_stft: float = 0.0           # log-magnitude multi-scale STFT (DAC computes it at 0)
  stft_windows: tuple = (2048, 512)  # dac.nn.loss.MultiScaleSTFTLoss's default
  stft_clamp: float = 1e-5           # its log floor (power); DAC's default
  lambda_cstft: float = 0.0          # L1 of the complex STFT (real, imag) at stft_windows
  # SI-SDR of pre-emphasized signals (x[n] - pre_emphasis x[n-1]): speech puts ~70% of
  # its energy below 500 Hz, so plain SI-SDR barely sees the phase above 1 kHz, where
  # a waveform match is what SI-SDR needs next (scripts/codec_bitrate.py).
  lambda_sisdr_pre: float = 0.0
  pre_emphasis: float = 0.97
  # Data: "synthetic" (the synthetic talker generator) or "speech" (the recorded
  # corpus of ``neurocodec_jax.data.speech`` at ``speech_root``), with the voices in
  # ``holdout_voices`` left out of training (quality reports them as "unseen").
  data: str = "synthetic"
  speech_root: str = "data/speech"
  holdout_voices: tuple = ("ru_f",)
  mixture_fraction: float = 0.5
  level_db: float = 3.0
  seed: int = 0
  # A DAC weights file to start the generator from ("": random): the same architecture,
  # fewer codebooks (the added ones start silent: a bit-rate increase, warm-started) or a
  # narrower encoder or decoder (widened, its function kept: load_init).
  init: str = ""
  # Continue the step count ``init``'s file records (this trainer writes it): its run's
  # learning-rate schedule and clip stream go on where they were, e.g. a run carried
  # across machines by its shipped weights. The optimizer's moments start afresh.
  continue_init: bool = False

  @classmethod
  def from_dict(cls, saved: dict) -> "CodecSpec":
    """The spec a ``spec.json`` (or a manifest's ``spec``) holds: JSON's lists back to tuples."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})

  @property
  def arch(self) -> dict:
    return {k: getattr(self, k) for k in codec.ARCH_KEYS}

  @property
  def clip_length(self) -> int:
    return codec.frame_count(self, self.clip_seconds) * codec.hop_length(self)


# ------------------------------------------------------------------- data ----

def corpus(spec: CodecSpec) -> speech.SpeechCorpus:
  c = speech.open_corpus(spec.speech_root)
  if c.sample_rate != spec.sample_rate:
    raise ValueError(f"{spec.speech_root}: corpus at {c.sample_rate} Hz, codec at "
                     f"{spec.sample_rate} Hz; rebuild it with --sample_rate.")
  return c


def training_voices(spec: CodecSpec) -> list[str]:
  c = corpus(spec)
  unknown = set(spec.holdout_voices) - set(c.voices())
  if unknown:
    raise ValueError(f"--holdout_voices {sorted(unknown)}: not in {spec.speech_root} "
                     f"(voices: {c.voices()}).")
  return [v for v in c.voices("train") if v not in spec.holdout_voices]


def source(spec: CodecSpec, rng: np.random.Generator, n: int, exclude: str | None = None):
  """One talker's ``[n]`` excerpt and its voice: synthetic, or a recorded training voice
  (another talker than ``exclude``'s)."""
  if spec.data == "synthetic":
    return synthetic.talker(rng, n, spec.sample_rate), None
  c = corpus(spec)
  voices = [v for v in training_voices(spec)
            if exclude is None or c.talker(v) != c.talker(exclude)]
  voice = voices[int(rng.integers(len(voices)))]
  return c.segment(rng, "train", voice, n), voice


def clip(spec: CodecSpec, step: int, index: int) -> np.ndarray:
  """Clip ``index`` of ``step``: ``[clip_length]`` float32, a pure function of its ids."""
  rng = np.random.default_rng([spec.seed, step, index])
  n = spec.clip_length
  x, voice = source(spec, rng, n)
  if rng.random() < spec.mixture_fraction:
    gain = 10 ** (rng.uniform(-spec.level_db, spec.level_db) / 20)
    x = x + gain * source(spec, rng, n, exclude=voice)[0]
  # Random peak level: single talkers inside a mixture sit well below its peak.
  x = x / (np.abs(x).max() + 1e-8) * rng.uniform(0.15, 0.95)
  return x.astype(np.float32)


def batch(spec: CodecSpec, step: int) -> torch.Tensor:
  """``[batch, 1, clip_length]``."""
  return torch.from_numpy(np.stack([clip(spec, step, i) for i in range(spec.batch_size)])[:, None])


def _heldout_source(spec: CodecSpec, rng, length: int, unseen: bool, exclude=None,
                    split: str = "val", turn: int | None = None):
  """A held-out excerpt: a fresh synthetic talker, or a recorded clip training never
  saw (the ``split`` of a training voice, or the test split of a held-out voice).
  ``turn``: the voice is the candidates' ``turn``-th in rotation, else a random one."""
  if spec.data == "synthetic":
    return synthetic.talker(rng, length, spec.sample_rate), None
  c = corpus(spec)
  if unseen:
    voices, split = list(spec.holdout_voices), "test"
  else:
    voices = training_voices(spec)
  assert turn is None or exclude is None, "a rotation over a filtered list would be uneven"
  voices = [v for v in voices if exclude is None or c.talker(v) != c.talker(exclude)] or voices
  voice = voices[turn % len(voices) if turn is not None else int(rng.integers(len(voices)))]
  x = c.segment(rng, split, voice, length)
  return x / (np.abs(x).max() + 1e-8), voice


def heldout(spec: CodecSpec, n: int, seconds: float = 2.0, kind: str = "mixture",
            unseen: bool = False, split: str = "val", voices: list | None = None,
            rotate: bool = True):
  """Held-out clips (a seed stream disjoint from training's): ``[n, T]``.

  ``kind``: "single" (one talker), "mixture" (two), or "parts": returns
  ``(mixture, a, b)`` as the demo's trials (sources at their level in the mixture).
  ``unseen`` (speech data): the single talker is a held-out voice. ``split``: "val"
  (where recipes are chosen) or "test" (where the chosen codec is reported), each its
  own seed stream; with speech data the training voices' clips come from that split
  (the held-out voice's always from its test split). Clip ``i``'s single (or first)
  talker is the voices' ``i``-th in rotation: every voice has the same share of the
  single clips on either split (a random draw let the split decide the mix of voices,
  which code 10 dB apart); a mixture's second talker is drawn at random. ``rotate=False``:
  the random draw, to compare with scores taken so. ``voices``: a list that receives each
  clip's (first) voice, None for synthetic talkers.
  """
  if split not in ("val", "test"):
    raise ValueError(f"split={split!r}: expected 'val' or 'test'.")
  length = codec.frame_count(spec, seconds) * codec.hop_length(spec)
  out = []
  for i in range(n):
    # Never a training id; val and test each their own stream.
    rng = np.random.default_rng([spec.seed, 10 ** 9 + (split == "test"), i])
    a, voice = _heldout_source(spec, rng, length, unseen, split=split,
                               turn=i if rotate else None)
    if voices is not None:
      voices.append(voice)
    b = 10 ** (rng.uniform(-spec.level_db, spec.level_db) / 20) * _heldout_source(
        spec, rng, length, False, exclude=voice, split=split)[0]
    if kind == "single":
      out.append(a / np.abs(a).max() * 0.9)
      continue
    peak = np.abs(a + b).max() / 0.9
    out.append(((a + b) / peak, a / peak, b / peak) if kind == "parts" else (a + b) / peak)
  if kind == "parts":
    return tuple(np.stack(x).astype(np.float32) for x in zip(*out))
  return np.stack(out).astype(np.float32)


# ----------------------------------------------------------------- models ----

def build(spec: CodecSpec):
  """``(generator, discriminator)`` with seeded initial weights."""
  import dac  # pylint: disable=g-import-not-at-top
  from dac.model.discriminator import Discriminator  # pylint: disable=g-import-not-at-top
  torch.manual_seed(spec.seed)
  arch = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.arch.items()}
  gen = dac.DAC(**arch, quantizer_dropout=spec.quantizer_dropout)
  disc = Discriminator(rates=[], periods=list(spec.periods), fft_sizes=list(spec.fft_sizes),
                       sample_rate=spec.sample_rate)
  return gen, disc


def mel_loss():
  """DAC's training mel loss (``conf/base.yml``: 7 scales, log10 L1)."""
  from dac.nn import loss  # pylint: disable=g-import-not-at-top
  return loss.MelSpectrogramLoss(
      n_mels=[5, 10, 20, 40, 80, 160, 320], window_lengths=[32, 64, 128, 256, 512, 1024, 2048],
      mag_weight=0.0, log_weight=1.0, pow=1.0, clamp_eps=1e-5,
      mel_fmin=[0.0] * 7, mel_fmax=[None] * 7)


class Objectives:
  """DAC's loss modules from the installed package (``dac.nn.loss``)."""

  def __init__(self, spec: CodecSpec, disc):
    from dac.nn import loss  # pylint: disable=g-import-not-at-top
    self.spec = spec
    self.mel = mel_loss()
    self.waveform = loss.L1Loss()
    self.sisdr = loss.SISDRLoss()
    self.gan = loss.GANLoss(disc)
    # Log magnitude only: the linear-magnitude part (DAC's mag_weight 1) is dominated by
    # the loudest cells, while the term is here for the quiet ones (see CodecSpec).
    self.stft = loss.MultiScaleSTFTLoss(window_lengths=list(spec.stft_windows),
                                        mag_weight=0.0, log_weight=1.0,
                                        clamp_eps=spec.stft_clamp)


def _signal(x, sr):
  from audiotools import AudioSignal  # pylint: disable=g-import-not-at-top
  return AudioSignal(x, sr)


def _fit(y: torch.Tensor, length: int) -> torch.Tensor:
  """DAC's 16/24 kHz decoders return a few samples fewer than the input: zero-pad."""
  return torch.nn.functional.pad(y, (0, length - y.shape[-1])) if y.shape[-1] < length else y


def complex_stft_l1(y: torch.Tensor, x: torch.Tensor, windows) -> torch.Tensor:
  """Mean over ``windows`` of the L1 distance of the complex STFTs (real and imaginary
  parts; hann, hop = window / 4) of ``[B, 1, T]`` signals: magnitude and phase."""
  total = 0.0
  for w in windows:
    stft = lambda s: torch.view_as_real(torch.stft(
        s[:, 0], w, w // 4, window=torch.hann_window(w, device=s.device), return_complex=True))
    total = total + (stft(y) - stft(x)).abs().mean()
  return total / len(windows)


def pre_emphasize(x: torch.Tensor, coefficient: float) -> torch.Tensor:
  """``[..., T]`` -> ``[..., T - 1]``: ``x[n] - coefficient * x[n - 1]``, a first-order
  high-pass (about +6 dB per octave above a few hundred Hz at 0.97)."""
  return x[..., 1:] - coefficient * x[..., :-1]


def learning_rate(spec: CodecSpec, base: float, step: int, restart: int = 0) -> float:
  """Linear warm-up, then ``lr_decay`` per step; from step ``restart`` (0: never) the
  decay starts again at ``base`` (a warm restart)."""
  if restart and step >= restart:
    return base * spec.lr_decay ** (step - restart)
  if step < spec.warmup:
    return base * (step + 1) / spec.warmup
  return base * spec.lr_decay ** (step - spec.warmup)


def train_step(spec, gen, disc, obj, opt_g, opt_d, audio, step) -> dict:
  """One DAC training step (discriminator first, then generator); returns floats."""
  sr = spec.sample_rate
  gan_on = step >= spec.gan_start and (spec.lambda_gen > 0 or spec.lambda_feat > 0)
  # Groups (generator_groups): the generator, then the codebooks --init added.
  for group, base in zip(opt_g.param_groups, (spec.lr, spec.added_codebook_lr)):
    group["lr"] = learning_rate(spec, base, step, spec.lr_restart)
  for group in opt_d.param_groups:
    group["lr"] = learning_rate(spec, spec.d_lr, max(step - spec.gan_start, 0))
  gen.train()
  out = gen(audio, sr)
  recons, signal = _signal(_fit(out["audio"], audio.shape[-1]), sr), _signal(audio, sr)
  logs = {}
  if gan_on:
    disc.train()
    d_loss = obj.gan.discriminator_loss(recons, signal)
    opt_d.zero_grad()
    d_loss.backward()
    logs["d_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(disc.parameters(), 10.0))
    opt_d.step()
    logs["d_loss"] = float(d_loss)
  terms = {"mel": obj.mel(recons, signal),
           "commit": out["vq/commitment_loss"], "codebook": out["vq/codebook_loss"]}
  if spec.lambda_waveform > 0:
    terms["waveform"] = obj.waveform(recons, signal)
  if spec.lambda_sisdr > 0:
    terms["sisdr"] = obj.sisdr(signal, recons)
  if spec.lambda_sisdr_pre > 0:
    terms["sisdr_pre"] = obj.sisdr(
        _signal(pre_emphasize(audio, spec.pre_emphasis), sr),
        _signal(pre_emphasize(recons.audio_data, spec.pre_emphasis), sr))
  if spec.lambda_stft > 0:
    terms["stft"] = obj.stft(recons, signal)
  if spec.lambda_cstft > 0:
    terms["cstft"] = complex_stft_l1(recons.audio_data, signal.audio_data, spec.stft_windows)
  if gan_on:
    terms["gen"], terms["feat"] = obj.gan.generator_loss(recons, signal)
  total = sum(getattr(spec, f"lambda_{k}") * v for k, v in terms.items())
  opt_g.zero_grad()
  total.backward()
  logs["g_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(gen.parameters(), 1e3))
  opt_g.step()
  logs.update({k: float(v) for k, v in terms.items()}, loss=float(total),
              lr=opt_g.param_groups[0]["lr"])
  return logs


# ------------------------------------------------------------- evaluation ----

@torch.no_grad()
def reconstruct(gen, audio: np.ndarray, n_quantizers: int | None = None) -> np.ndarray:
  """``[n, T]`` -> ``[n, T]`` through encode, quantize, decode (eval mode)."""
  gen.eval()
  x = torch.from_numpy(audio)[:, None]
  y = gen(x, gen.sample_rate, n_quantizers=n_quantizers)["audio"][:, 0]
  out = np.zeros_like(audio)
  m = min(out.shape[1], y.shape[1])
  out[:, :m] = y[:, :m].numpy()
  return out


def si_sdr_db(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
  """Per-row SI-SDR (dB), no alignment: ``[n, T]`` -> ``[n]``."""
  ref = ref - ref.mean(1, keepdims=True)
  est = est - est.mean(1, keepdims=True)
  alpha = (est * ref).sum(1, keepdims=True) / ((ref ** 2).sum(1, keepdims=True) + 1e-12)
  target = alpha * ref
  return 10 * np.log10(((target ** 2).sum(1) + 1e-12) / (((est - target) ** 2).sum(1) + 1e-12))


def polarity(ref: np.ndarray, est: np.ndarray) -> np.ndarray:
  """``[n]`` Pearson correlation of each output row with its input (at lag 0): a codec
  trained with sign-invariant objectives (mel, SI-SDR) may learn to invert."""
  ref = ref - ref.mean(1, keepdims=True)
  est = est - est.mean(1, keepdims=True)
  return (ref * est).sum(1) / np.sqrt((ref ** 2).sum(1) * (est ** 2).sum(1) + 1e-12)


def intelligibility(ref: np.ndarray, est: np.ndarray, sample_rate: int):
  """``([n], [n])``: STOI and ESTOI of each output row against its input."""
  from pystoi import stoi  # pylint: disable=g-import-not-at-top
  return (np.array([stoi(a, b, sample_rate) for a, b in zip(ref, est)]),
          np.array([stoi(a, b, sample_rate, extended=True) for a, b in zip(ref, est)]))


def output_conv(gen) -> torch.nn.Module:
  """The decoder's last convolution (its output goes through tanh to the waveform)."""
  convs = [m for m in gen.decoder.modules() if isinstance(m, torch.nn.Conv1d)]
  return convs[-1]


@torch.no_grad()
def invert_output(gen) -> None:
  """Negates the decoded waveform exactly: tanh is odd, so negating the last conv's
  weight (its weight-norm direction) and bias negates the output."""
  conv = output_conv(gen)
  if hasattr(conv, "parametrizations"):
    conv.parametrizations.weight.original1.neg_()
  else:
    conv.weight_v.neg_()
  conv.bias.neg_()


def clip_scores(spec: CodecSpec, gen, obj=None, n: int = 16, stoi: bool = True,
                split: str = "val") -> dict:
  """Per-clip reconstruction scores on fresh held-out 2 s clips: ``{"<set>_<metric>":
  [n]}`` for the sets ``single`` and ``mixture`` (with speech data also ``unseen``,
  single clips of the held-out voices) and the metrics ``si_sdr`` (no alignment),
  ``polarity`` (input/output correlation), ``stoi`` and ``estoi``; ``<set>_mel`` is the
  set's mel loss (a scalar). Clip ``i`` is the same for any ``n`` > ``i``, so two codecs
  scored with the same spec can be compared clip by clip. ``split``: :func:`heldout`'s."""
  mel = obj.mel if obj is not None else mel_loss()
  res = {}
  kinds = [("single", "single", False), ("mixture", "mixture", False)]
  if spec.data != "synthetic" and spec.holdout_voices:
    kinds.append(("unseen", "single", True))
  for name, kind, unseen in kinds:
    x = heldout(spec, n, kind=kind, unseen=unseen, split=split)
    y = reconstruct(gen, x)
    res[f"{name}_si_sdr"] = si_sdr_db(x, y)
    res[f"{name}_polarity"] = polarity(x, y)
    with torch.no_grad():
      res[f"{name}_mel"] = float(mel(_signal(torch.from_numpy(y)[:, None], spec.sample_rate),
                                     _signal(torch.from_numpy(x)[:, None], spec.sample_rate)))
    if stoi:
      res[f"{name}_stoi"], res[f"{name}_estoi"] = intelligibility(x, y, spec.sample_rate)
  return res


def quality(spec: CodecSpec, gen, obj=None, n: int = 16, stoi: bool = True,
            split: str = "val") -> dict:
  """:func:`clip_scores` summarized: means over the ``n`` clips, and ``*_se``, their
  standard errors (SI-SDR, STOI, ESTOI), without which a target a few thousandths away
  cannot be called met or missed."""
  return summarize(clip_scores(spec, gen, obj, n, stoi, split))


def summarize(scores: dict) -> dict:
  """:func:`clip_scores`' per-clip arrays as means (and ``*_se`` but for polarity);
  scalars as they are."""
  res = {}
  for key, v in scores.items():
    if np.ndim(v) == 0:
      res[key] = v
    elif key.endswith("_polarity"):
      res[key] = float(np.mean(v))
    else:
      res.update(mean_se(key, v))
  return res


def mean_se(key: str, values) -> dict:
  """``{key: mean, key_se: standard error}`` of per-clip values (se 0 for one clip)."""
  v = np.asarray(values, np.float64)
  se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
  return {key: float(v.mean()), f"{key}_se": float(se)}


# --------------------------------------------------------------- the run ----

def _atomic_torch_save(obj, path: str) -> None:
  tmp = path + ".tmp"
  torch.save(obj, tmp)
  os.replace(tmp, path)


def save_weights(gen, path: str, spec: CodecSpec, step: int) -> None:
  """DAC's own format (``DAC.save(package=False)``), written atomically."""
  tmp = path + ".tmp"
  gen.save(tmp, metadata={"neurocodec": dict(trained_by="codec_training.train",
                                             step=step, spec=dataclasses.asdict(spec))},
           package=False)
  os.replace(tmp, path)


def recorded_step(path: str, meta: dict | None = None) -> int:
  """The training step a weights file written by :func:`save_weights` records
  (``meta``: the file's ``metadata``, when already read)."""
  if meta is None:
    meta = torch.load(path, map_location="cpu", weights_only=True).get("metadata", {})
  step = (meta.get("neurocodec") or {}).get("step")
  if not isinstance(step, int):
    raise ValueError(f"{path}: no 'metadata.neurocodec.step' (a file codec_training.train "
                     f"wrote); --continue_init needs it.")
  return step


def load_init(gen, spec: CodecSpec) -> int:
  """Copies ``spec.init``'s weights into ``gen``: the same architecture, or one that
  grows. More codebooks: the file's quantizers become ``gen``'s first ones (the residual
  quantizer decodes with any leading subset, so the file's codec is kept exactly at its
  own bit rate); the added ones start silent (their output projection's weight-norm
  gain and bias zero: the grown codec decodes as the file's with every codebook, and
  training opens them through the gain's gradient; freshly initialised, four added to a
  trained codec's twelve cost it 0.4 dB that 1000 steps did not win back). A wider
  encoder or decoder: the file's widened by :mod:`widen` (its function kept up to the
  copies' symmetry-breaking noise, :data:`WIDEN_NOISE`). Returns the file's codebook
  count."""
  init = loading.load_dac(weights=spec.init, device="cpu")
  have = loading.arch_of(init)
  want = {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.arch.items()}
  grown = {k: want[k] for k in ("n_codebooks", "encoder_dim", "decoder_dim")
           if want[k] > have[k]}
  if {**have, **grown} != want:
    raise ValueError(f"--init {spec.init}: a DAC of another architecture (file, run): "
                     f"{have}, {want}; only n_codebooks, encoder_dim and decoder_dim may "
                     f"grow.")
  state = init.state_dict()
  for part, grow in (("encoder_dim", widen.widen_encoder), ("decoder_dim", widen.widen_decoder)):
    if part in grown:
      state = grow(state, have[part], want[part], noise=WIDEN_NOISE, seed=spec.seed)
  # Only the added quantizers' weights are missing from the file (the sizes match).
  state = {**gen.state_dict(), **state}
  for i in range(have["n_codebooks"], want["n_codebooks"]):
    for name in ("weight_g", "bias"):
      key = f"quantizer.quantizers.{i}.out_proj.{name}"
      state[key] = torch.zeros_like(state[key])
  gen.load_state_dict(state)
  if grown:
    logging.info("--init %s: grown %s.", spec.init,
                 {k: (have[k], v) for k, v in grown.items()})
  return have["n_codebooks"]


def generator_groups(gen, spec: CodecSpec, first: int) -> list[dict]:
  """The generator's optimizer groups: every parameter, or with ``added_codebook_lr``
  the parameters of the quantizers after the ``first`` (the run's --init file's) in a
  second group."""
  params = dict(gen.named_parameters())
  if not spec.added_codebook_lr:
    return [dict(params=list(params.values()))]
  if first >= spec.n_codebooks:
    raise ValueError(f"--added_codebook_lr: the rate of the codebooks --init adds, but the "
                     f"run's {spec.n_codebooks} codebooks add none to the {first} it "
                     f"started from.")
  added = tuple(f"quantizer.quantizers.{i}." for i in range(first, spec.n_codebooks))
  return [dict(params=[p for n, p in params.items() if not n.startswith(added)]),
          dict(params=[p for n, p in params.items() if n.startswith(added)])]


# The widened layers' copies: 1% multiplicative noise on their incoming weights
# changed a test decoder's output by about 0.5% of its peak.
WIDEN_NOISE = 0.01


# CodecSpec fields a resume may change: the run's length, where it started, its
# learning-rate schedule (a run continued at another rate, as the model's trainer allows)
# and the objective's weights (a fine-tune of the same networks under another weighting).
# Not added_codebook_lr: turning it on or off changes the optimizer's groups.
RESUME_FREE = ("steps", "init", "continue_init", "lr", "lr_decay", "lr_restart") + tuple(
    f.name for f in dataclasses.fields(CodecSpec) if f.name.startswith("lambda_"))


def train(spec: CodecSpec, out: str, *, threads: int | None = None,
          checkpoint_every: int = 250, eval_every: int = 1000,
          stop_after: int | None = None) -> dict:
  """Trains (or resumes) a codec in ``out``; returns the final quality dict."""
  if threads:
    torch.set_num_threads(threads)
  os.makedirs(out, exist_ok=True)
  state_path = os.path.join(out, "train_state.pt")
  gen, disc = build(spec)
  resumed = os.path.exists(state_path)
  # The codebooks the run started with (its --init file's): those after them are the
  # added ones (added_codebook_lr); a checkpoint records the count.
  first = load_init(gen, spec) if spec.init and not resumed else spec.n_codebooks
  obj = Objectives(spec, disc)
  opt_d = torch.optim.AdamW(disc.parameters(), lr=spec.d_lr, betas=(0.8, 0.99))
  start, seconds = 0, 0.0
  if resumed:
    st = torch.load(state_path, map_location="cpu", weights_only=False)
    # RESUME_FREE fields may change (a resumed run continues its own state, whatever
    # --init says). Fields added since a run was saved take their defaults.
    saved = {**dataclasses.asdict(CodecSpec()), **st["spec"]}
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
    diff = {k: (saved[k], v) for k, v in dataclasses.asdict(spec).items()
            if saved[k] != v and k not in RESUME_FREE}
    if diff:
      raise ValueError(f"{state_path}: a run with another spec (saved, requested): {diff}. "
                       f"Use another --out or delete the folder.")
    # The codebook count the run started with (its checkpoint records it; a resume needs
    # no --init file).
    first = st.get("first_codebooks", spec.n_codebooks)
  opt_g = torch.optim.AdamW(generator_groups(gen, spec, first), lr=spec.lr, betas=(0.8, 0.99))
  if resumed:
    gen.load_state_dict(st["gen"])
    disc.load_state_dict(st["disc"])
    opt_g.load_state_dict(st["opt_g"])
    opt_d.load_state_dict(st["opt_d"])
    torch.set_rng_state(st["torch_rng"])
    start, seconds = st["step"], st["seconds"]
    logging.info("Resumed %s at step %d.", out, start)
  elif spec.init and spec.continue_init:
    start = recorded_step(spec.init)
    logging.info("Continuing %s's run at step %d.", spec.init, start)
  # spec.json: the spec the run trains with from now on, where it started kept from
  # its first start (a resume needs no --init; ship reads it for the run's history).
  spec_path = os.path.join(out, "spec.json")
  written = dataclasses.asdict(spec)
  if resumed and os.path.exists(spec_path):
    began = json.load(open(spec_path))
    written.update({k: began[k] for k in ("init", "continue_init") if k in began})
  with open(spec_path + ".tmp", "w") as f:
    json.dump(written, f, indent=2)
  os.replace(spec_path + ".tmp", spec_path)
  n_params = sum(p.numel() for p in gen.parameters())
  logging.info("DAC %s: %.2fM parameters; discriminator %.2fM.", spec.arch, n_params / 1e6,
               sum(p.numel() for p in disc.parameters()) / 1e6)
  log_path = os.path.join(out, "log.jsonl")
  if os.path.exists(log_path):
    # Rows logged after the checkpoint we resume from are repeated by this run.
    keep = [line for line in open(log_path) if json.loads(line)["step"] <= start]
    with open(log_path + ".tmp", "w") as f:
      f.writelines(keep)
    os.replace(log_path + ".tmp", log_path)
  bar = tqdm(total=spec.steps, initial=start, desc="codec", unit="step", dynamic_ncols=True)
  t0 = time.perf_counter() - seconds
  done = start
  with open(log_path, "a") as log:
    for step in range(start, spec.steps):
      logs = train_step(spec, gen, disc, obj, opt_g, opt_d, batch(spec, step), step)
      done = step + 1
      bar.set_postfix(mel=f"{logs['mel']:.3f}", refresh=False)
      bar.update(1)
      row = dict(step=done, seconds=round(time.perf_counter() - t0, 1), **logs)
      if done % eval_every == 0 or done == spec.steps:
        row.update(quality(spec, gen, obj, n=8, stoi=True))
        tqdm.write(json.dumps({k: round(v, 3) for k, v in row.items()}))
      log.write(json.dumps(row) + "\n")
      if done % checkpoint_every == 0 or done == spec.steps:
        log.flush()
        _atomic_torch_save(dict(step=done, seconds=time.perf_counter() - t0,
                                spec=dataclasses.asdict(spec), gen=gen.state_dict(),
                                disc=disc.state_dict(), opt_g=opt_g.state_dict(),
                                opt_d=opt_d.state_dict(), torch_rng=torch.get_rng_state(),
                                first_codebooks=first),
                           state_path)
        save_weights(gen, os.path.join(out, "weights.pth"), spec, done)
      if stop_after is not None and done >= stop_after:
        break
  bar.close()
  return dict(step=done, seconds=time.perf_counter() - t0)


def _boolean(text: str) -> bool:
  if text.lower() not in ("true", "false", "1", "0"):
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
  return text.lower() in ("true", "1")


def _parse(argv) -> tuple[CodecSpec, argparse.Namespace]:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--threads", type=int, default=None)
  p.add_argument("--checkpoint_every", type=int, default=250)
  p.add_argument("--eval_every", type=int, default=1000)
  for f in dataclasses.fields(CodecSpec):
    if isinstance(f.default, bool):
      p.add_argument(f"--{f.name}", type=_boolean, default=f.default)
    elif isinstance(f.default, tuple):
      p.add_argument(f"--{f.name}", type=type(f.default[0]), nargs="*", default=list(f.default))
    else:
      p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
  args = p.parse_args(argv)
  kw = {f.name: (tuple(getattr(args, f.name)) if isinstance(f.default, tuple)
                 else getattr(args, f.name)) for f in dataclasses.fields(CodecSpec)}
  return CodecSpec(**kw), args


def main(argv=None) -> int:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  spec, args = _parse(argv)
  train(spec, args.out, threads=args.threads, checkpoint_every=args.checkpoint_every,
        eval_every=args.eval_every)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
