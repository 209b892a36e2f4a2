"""Every config field, declared once: what it accepts and whether a run may resume
after it changes.

``FIELDS[path] = Field(check, resume)``:

* ``check(value)`` returns None when ``value`` is valid, else what is expected; None
  for an enumeration, whose valid values are the consuming code's own constants
  (:func:`choices`, imported lazily: they pull in JAX, and a bad ``--config`` key
  must be reported before that);
* ``resume`` says what a change does to a saved run:
  ``HOST``   steers only the host loop (the compiled programs are shared; resumes),
  ``RESUME`` changes the programs but a run resumes with it (rates, schedule, dropout),
  ``WEIGHT`` a loss weight: resumes while its term stays on (or off),
  ``FIXED``  alters the parameter or optimizer-state tree, the data's shapes or what
             the saved data position indexes: refused.

``configs.validate`` reads the checks; ``run.program_key`` and ``training`` read
``resume``. ``tests/test_config.py`` holds the declaration to the presets' key set.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Sequence
from typing import Callable

HOST, RESUME, WEIGHT, FIXED = "host", "resume", "weight", "fixed"


@dataclasses.dataclass(frozen=True)
class Field:
  check: Callable[[object], str | None] | None
  resume: str = FIXED


# An enumeration whose consuming code has no importable constant yet: the code accepts
# exactly these (training's non-finite handling).
NONFINITE = ("stop", "skip")
# codec_bridge.loading.resolve_device: "auto", or a torch device this project runs on.
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def choices() -> dict[str, tuple[str, ...]]:
  """The valid values of each enumerated field, as the consuming code accepts them
  (``preset``'s are the configs' own, added by ``configs.validate``)."""
  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import codec_arch, mixture_mask
  from neurocodec_jax.data import hdf5, synthetic
  from neurocodec_jax.models import cue, eeg_encoder, generator, layers
  from neurocodec_jax.ops import scan
  from neurocodec_jax.train import optim, steps
  return {
      "activation": layers.ACTIVATIONS,
      "backbone": generator.BACKBONES,
      "model.scan_backend": tuple(scan.BACKENDS),
      "model.selector": tuple(generator.SELECTORS),
      "model.select_window": generator.SELECT_WINDOWS,
      "model.eeg_norm": eeg_encoder.EEG_NORMS,
      "model.output_norm": generator.OUTPUT_NORMS,
      "model.stream_form": generator.STREAM_FORMS,
      "model.output_waveform": mixture_mask.OUTPUT_WAVEFORMS,
      "model.select_decision": generator.SELECT_DECISIONS,
      "model.cue_form": cue.CUE_FORMS,
      "model.mix_input": tuple(steps.MIX_INPUTS),
      "model.target_latent": tuple(steps.TARGET_LATENTS),
      "train.schedule": optim.SCHEDULES,
      "train.waveform_output": steps.WAVEFORM_OUTPUTS,
      "train.nonfinite": NONFINITE,
      "data.eeg_units": ("auto",) + tuple(hdf5.EEG_UNITS),
      "codec.model_type": tuple(codec_arch.DAC_ARCHS),
      "codec.backend": codec_arch.CODEC_BACKENDS,
      "synthetic.eeg_model": synthetic.EEG_MODELS,
      "synthetic.subject_split": synthetic.SUBJECT_SPLITS,
  }


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(lo: int, *, or_value: int | None = None):
  expected = f"an integer >= {lo}" + (f", or {or_value}" if or_value is not None else "")
  return lambda v: None if _is_int(v) and (v >= lo or v == or_value) else expected


def _number(lo: float | None = None, hi: float | None = None, *, lo_open=False,
            hi_open=False):
  """A finite number in the interval (NaN and inf never pass)."""
  if lo is not None and hi is not None:
    expected = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
  elif lo is not None:
    expected = f"a finite number {'>' if lo_open else '>='} {lo:g}"
  else:
    expected = "a finite number"

  def check(v):
    ok = (_is_number(v) and math.isfinite(v)
          and (lo is None or (v > lo if lo_open else v >= lo))
          and (hi is None or (v < hi if hi_open else v <= hi)))
    return None if ok else expected
  return check


def _bool(v):
  return None if isinstance(v, bool) else "True or False"


def _text(v):
  return None if isinstance(v, str) and v else "a non-empty string"


def _optional_text(v):
  return None if v is None or (isinstance(v, str) and v) else "None or a non-empty string"


def _ints(lo: int, *, nonempty: bool):
  expected = f"a {'non-empty ' if nonempty else ''}list of integers >= {lo}"

  def check(v):
    ok = (isinstance(v, Sequence) and not isinstance(v, str) and (v or not nonempty)
          and all(_is_int(x) and x >= lo for x in v))
    return None if ok else expected
  return check


def _codebook_dim(v):
  ok = (_is_int(v) and v >= 1) or _ints(1, nonempty=True)(v) is None
  return None if ok else "an integer >= 1, or a list of them (one per codebook)"


def _bands(v):
  def band_ok(b):
    return (isinstance(b, Sequence) and len(b) == 2 and all(_is_number(x) for x in b)
            and 0 <= b[0] < b[1] <= 1)
  ok = isinstance(v, Sequence) and not isinstance(v, str) and v and all(map(band_ok, v))
  return None if ok else "a non-empty list of (low, high) fractions with 0 <= low < high <= 1"


def _device(v):
  ok = isinstance(v, str) and DEVICE_PATTERN.fullmatch(v)
  return None if ok else "'auto', 'cpu', 'cuda' or 'cuda:N'"


def _choice(values: tuple[str, ...]):
  listed = ", ".join(repr(x) for x in values)

  def check(v):
    if isinstance(v, str) and v in values:
      return None
    close = difflib.get_close_matches(v, values, n=1) if isinstance(v, str) else []
    return f"one of {listed}" + (f" (did you mean {close[0]!r}?)" if close else "")
  return check


_positive, _count = _int(1), _int(0)
_weight = _number(0.0)                               # loss weights, decay: finite >= 0
_rate = _number(0.0, lo_open=True)                   # learning rates, clips, epsilons
_ENUM = None

FIELDS: dict[str, Field] = {
    "preset": Field(_ENUM), "activation": Field(_ENUM), "backbone": Field(_ENUM),
    "normalize_latents": Field(_bool), "noise_cue": Field(_bool, HOST),
    **{f"lambda_{k}": Field(_weight, WEIGHT)
       for k in ("recon", "env", "mel", "adv", "feat", "sisdr", "sep", "sep_env", "select",
                 "token", "env_contrast")},
    "env_contrast_temperature": Field(_rate, RESUME),
    "hidden_dim": Field(_positive), "num_layers": Field(_positive),
    "batch_size": Field(_positive), "lr": Field(_rate, RESUME),
    "epochs": Field(_positive, HOST), "eeg_channels": Field(_positive),
    "root": Field(_text, HOST), "checkpoint_dir": Field(_text, HOST), "seed": Field(_count),
    # data
    "data.segment_seconds": Field(_rate), "data.eeg_rate": Field(_positive),
    "data.eeg_units": Field(_ENUM), "data.train_split": Field(_text),
    "data.val_split": Field(_text), "data.test_split": Field(_text),
    "data.num_workers": Field(_count, RESUME), "data.check_finite": Field(_bool, RESUME),
    # codec
    "codec.model_type": Field(_ENUM), "codec.weights": Field(_optional_text),
    "codec.random": Field(_bool), "codec.device": Field(_device),
    "codec.backend": Field(_ENUM), "codec.cache_dir": Field(_optional_text, RESUME),
    "codec.precompute_batch_size": Field(_positive), "codec.store_z": Field(_bool),
    "codec.n_quantizers_eval": Field(_positive, RESUME),   # <= arch.n_codebooks
    "codec.requantize_output": Field(_bool, RESUME),
    "codec.arch.sample_rate": Field(_positive), "codec.arch.encoder_dim": Field(_positive),
    "codec.arch.encoder_rates": Field(_ints(1, nonempty=True)),
    "codec.arch.latent_dim": Field(_positive), "codec.arch.decoder_dim": Field(_positive),
    "codec.arch.decoder_rates": Field(_ints(1, nonempty=True)),
    "codec.arch.n_codebooks": Field(_positive), "codec.arch.codebook_size": Field(_positive),
    "codec.arch.codebook_dim": Field(_codebook_dim),
    # model
    "model.num_heads": Field(_positive),
    "model.dropout": Field(_number(0.0, 1.0, hi_open=True), RESUME),
    "model.d_state": Field(_positive), "model.d_conv": Field(_positive),
    "model.expand": Field(_positive), "model.dt_min": Field(_rate),
    "model.dt_max": Field(_rate), "model.dt_init_floor": Field(_rate),
    "model.scan_backend": Field(_ENUM), "model.eeg_dim": Field(_positive),
    "model.cheb_k": Field(_positive), "model.max_len": Field(_positive),
    "model.stream_lookahead": Field(_count), "model.time_aligned_pe": Field(_bool),
    "model.eeg_kernel": Field(_positive), "model.eeg_linear_branch": Field(_bool),
    "model.eeg_norm": Field(_ENUM),
    "model.bidirectional": Field(_bool),
    "model.output_waveform": Field(_ENUM, RESUME), "model.mask_power": Field(_rate, RESUME),
    "model.mask_floor": Field(_number(0.0, 1.0), RESUME),
    "model.refiner": Field(_optional_text, RESUME),
    "model.unsure_margin": Field(_number(0.0), RESUME),
    "model.unsure_mix": Field(_number(0.0, 1.0), RESUME),
    "model.selector": Field(_ENUM),
    "model.select_window": Field(_ENUM), "model.output_norm": Field(_ENUM),
    "model.select_decision": Field(_ENUM, RESUME), "model.mixture_consistency": Field(_bool),
    "model.stream_form": Field(_ENUM), "model.cue_form": Field(_ENUM),
    "model.encoding_subjects": Field(_count),
    "model.mix_input": Field(_ENUM), "model.target_latent": Field(_ENUM),
    "model.transformer_ff_dim": Field(_positive),
    # discriminators (a family may be left empty) and the mel loss
    "disc.rates": Field(_ints(1, nonempty=False)), "disc.periods": Field(_ints(1, nonempty=False)),
    "disc.fft_sizes": Field(_ints(1, nonempty=False)), "disc.bands": Field(_bands),
    "disc.width": Field(_rate), "disc.lr": Field(_rate), "disc.grad_clip": Field(_rate, RESUME),
    "mel.n_mels": Field(_ints(1, nonempty=True), RESUME),
    "mel.window_lengths": Field(_ints(1, nonempty=True), RESUME),
    "mel.clamp_eps": Field(_rate, RESUME), "mel.mag_weight": Field(_weight, RESUME),
    "mel.log_weight": Field(_weight, RESUME), "mel.pow": Field(_rate, RESUME),
    # train (log/checkpoint intervals are moduli: >= 1)
    "train.weight_decay": Field(_weight), "train.grad_clip": Field(_rate, RESUME),
    "train.schedule": Field(_ENUM, RESUME),
    "train.plateau_factor": Field(_number(0.0, 1.0, lo_open=True, hi_open=True), RESUME),
    "train.plateau_patience": Field(_count, RESUME),
    "train.warmup_steps": Field(_count, RESUME),
    "train.waveform_start": Field(_count, RESUME),
    "train.waveform_output": Field(_ENUM, RESUME),
    "train.waveform_ramp_steps": Field(_count, RESUME),
    "train.waveform_lr_scale": Field(_rate, RESUME), "train.cue_curriculum_steps": Field(_count),
    "train.max_steps": Field(_int(1, or_value=-1), HOST),
    "train.log_every": Field(_positive, HOST), "train.checkpoint_every": Field(_positive, HOST),
    "train.eval_every": Field(_int(1, or_value=-1), HOST),
    "train.keep_checkpoints": Field(_positive, HOST), "train.nonfinite": Field(_ENUM, HOST),
    "train.tensorboard": Field(_bool, HOST), "train.wandb": Field(_bool, HOST),
    # the synthetic dataset (the generator's settings, checked against its manifest)
    "synthetic.n_train": Field(_positive, HOST), "synthetic.n_val": Field(_positive, HOST),
    "synthetic.n_test": Field(_positive, HOST), "synthetic.subjects": Field(_positive, HOST),
    "synthetic.eeg_snr_db": Field(_number(), HOST), "synthetic.seed": Field(_count, HOST),
    "synthetic.talkers": Field(_text, HOST), "synthetic.eeg_model": Field(_ENUM, HOST),
    "synthetic.snr_spread_db": Field(_number(0.0), HOST),
    "synthetic.subject_split": Field(_ENUM, HOST),
}


def checks(extra_choices: dict | None = None) -> dict[str, Callable]:
  """Every field's check, the enumerations' from :func:`choices` (and ``extra_choices``)."""
  enums = dict(choices(), **(extra_choices or {}))
  return {path: f.check if f.check is not None else _choice(enums[path])
          for path, f in FIELDS.items()}


def host_only() -> tuple[str, ...]:
  """The fields that steer only the host loop: runs differing in them share programs."""
  return tuple(p for p, f in FIELDS.items() if f.resume == HOST)


def resumable(path: str, old, new) -> bool:
  """Whether a run resumes with ``path`` changed from ``old`` to ``new`` (an unknown
  field is refused)."""
  field = FIELDS.get(path)
  if field is None:
    return False
  if field.resume == WEIGHT:
    numbers = all(isinstance(v, (int, float)) for v in (old, new))
    return numbers and (old > 0) == (new > 0)
  return field.resume in (HOST, RESUME)
