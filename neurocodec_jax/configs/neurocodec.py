"""NeuroCodec configurations (ml-collections).

Select a preset with ``--config neurocodec_jax/configs/neurocodec.py:<preset>`` and override any
field with ``--config.<field>=<value>``. Presets:

* ``cocktail`` (default): Cocktail Party data, 44.1 kHz DAC, 128 EEG channels, read
  from ``data/cocktail``, where ``python -m neurocodec_jax.data.prepare cocktail
  --src DIR`` writes it (at this preset's codec rate, its default ``--sample_rate``).
* ``kul``: KU Leuven data, 16 kHz DAC, 64 EEG channels, read from ``data/kul``,
  where ``python -m neurocodec_jax.data.prepare kul --src DIR`` writes it.
* ``demo``: the synthetic AAD dataset, the project's trained small DAC
  (codec_bridge/weights) and the EEG recipe (separate-then-select), sized to train
  in minutes on two CPU cores.
* ``reproduce``: the demo, longer (``make reproduce``, within an hour on two cores).
* ``speech``: the demo recipe on recorded speech (``neurocodec_jax.data.speech``) with
  the codec trained on it.

Top-level keys keep the names of the original ``configs/neurocodec.yaml``;
everything the original hard-coded lives in the nested groups. The returned
config is locked: setting an unknown key raises an error naming it.
``configs/validate.py`` knows every field's valid values and ranges
(``validate(config)``; train.py and evaluate.py call it after the overrides).
"""

import importlib.util
import os

import ml_collections

from neurocodec_jax.codec_arch import DAC_ARCHS, DEMO_CODEC

PRESETS = ("cocktail", "kul", "demo", "reproduce", "speech")

# The demo codec: a small DAC trained by this project (codec_training; its manifest
# says how), shipped as package data of codec_bridge. Located without importing the
# bridge (its package holds torch).
_BRIDGE = importlib.util.find_spec("codec_bridge")
_WEIGHTS = os.path.join(list(_BRIDGE.submodule_search_locations)[0], "weights") if _BRIDGE else ""
DEMO_CODEC_WEIGHTS = os.path.join(_WEIGHTS, "demo_codec_16khz.pth")
SPEECH_CODEC_WEIGHTS = os.path.join(_WEIGHTS, "speech", "speech_codec_16khz.pth")


def _codec(model_type: str, random: bool, demo: bool = False) -> ml_collections.ConfigDict:
  arch = dict(DEMO_CODEC if (random or demo) else DAC_ARCHS[model_type])
  return ml_collections.ConfigDict(dict(
      model_type=model_type,
      # Path to a DAC ``.pth`` (any form DAC writes); None looks in DAC's download
      # cache. Never replaced by random weights unless ``random`` is True.
      weights=ml_collections.FieldReference(DEMO_CODEC_WEIGHTS if demo else None,
                                            field_type=str),
      random=random,       # build DAC with ``arch`` sizes and random weights
      arch=arch,           # sizes used to build (random) or to check (loaded)
      device="auto",       # "auto" (cuda if available), "cpu", "cuda", "cuda:1"
      # Where the frozen encoder/decoder run: "torch" (DAC itself; the decoder through
      # host callbacks) or "jax" (ported to Flax, weights copied from the torch DAC).
      backend="torch",
      cache_dir=ml_collections.FieldReference(None, field_type=str),
      precompute_batch_size=8,
      store_z=False,       # also store continuous z next to the codes
      n_quantizers_eval=arch["n_codebooks"],
      # Evaluation decodes the prediction re-quantized with n_quantizers_eval (the
      # original) or, False, as predicted (continuous: no codebook rounding).
      requantize_output=True,
  ))


def get_config(preset: str = "cocktail") -> ml_collections.ConfigDict:
  """Returns the locked config for ``preset`` (one of ``PRESETS``)."""
  preset = preset or "cocktail"
  if preset not in PRESETS:
    raise ValueError(f"Unknown preset {preset!r}; expected one of {PRESETS}.")
  c = ml_collections.ConfigDict()
  c.preset = preset

  # ---- keys of the original configs/neurocodec.yaml --------------------------
  c.activation = "snake"          # "snake" | "prelu"
  c.normalize_latents = True      # L2-normalize prediction and target (cosine)
  c.lambda_recon = 1.0
  c.lambda_env = 0.0
  # Attended-versus-unattended term of the EEG's decoded envelope (not in the
  # original; losses.envelope_contrast_loss at env_contrast_temperature); needs
  # unattended_*.h5.
  c.lambda_env_contrast = 0.0
  c.env_contrast_temperature = 0.1
  c.lambda_mel = 15.0
  c.lambda_adv = 1.0
  c.lambda_feat = 2.0
  # Negative SI-SDR (dB) of the decoded output against the attended talker's waveform
  # (not in the original; a waveform term like mel, decoded as evaluation decodes).
  c.lambda_sisdr = 0.0
  # Separate-then-select (model.selector="correlation"; not in the original):
  # permutation-invariant latent loss of the two streams against both talkers,
  # and of their envelopes against both talkers' envelopes. Need unattended_*.h5.
  c.lambda_sep = 0.0
  c.lambda_sep_env = 0.0
  # Attended-vs-unattended contrastive term of the selector (train/steps.py
  # separation_terms "select"); also needs unattended_*.h5.
  c.lambda_select = 0.0
  # Per-codebook classification of the streams' codes (model.stream_form="tokens"):
  # PIT cross-entropy against both talkers' codes (separation_terms "token").
  c.lambda_token = 0.0
  c.hidden_dim = 256
  c.num_layers = 4
  c.batch_size = 8
  c.lr = 1e-3
  c.epochs = 50
  c.eeg_channels = 128
  c.backbone = "mamba"            # "mamba" | "transformer"
  c.noise_cue = False             # evaluation ablation: EEG -> matched noise
  c.root = "data/cocktail"        # python -m neurocodec_jax.data.prepare cocktail's default --out
  c.checkpoint_dir = "checkpoints/neurocodec"
  c.seed = 42

  # ---- data ------------------------------------------------------------------
  c.data = ml_collections.ConfigDict(dict(
      segment_seconds=2.0,
      eeg_rate=128,
      # The EEG's units, converted to microvolts: "auto" (volts detected from
      # the data's scale: x 1e6), "volts" (x 1e6), "millivolts" (x 1e3),
      # "microvolts" (as is).
      eeg_units="auto",
      train_split="train", val_split="val", test_split="test",
      num_workers=0,           # grain worker processes (0: in the main process)
      check_finite=True,       # reject non-finite values on read
  ))

  # ---- frozen codec ----------------------------------------------------------
  c.codec = _codec("44khz", random=False)

  # ---- model -----------------------------------------------------------------
  c.model = ml_collections.ConfigDict(dict(
      num_heads=8,
      dropout=0.3,
      d_state=16, d_conv=4, expand=2,
      dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4,
      scan_backend="sequential_vjp",  # fastest on CPU (bench_scan); see ops/scan.py
      eeg_dim=64,                   # EEG encoder width (original: 64)
      cheb_k=3,
      max_len=5000,                 # positional-encoding table length
      stream_lookahead=0,           # EEG frames past "now" visible when streaming
      time_aligned_pe=False,        # True: EEG positions in latent-frame time (see generator)
      eeg_kernel=8,                 # EEG encoder's temporal kernel (original 8 = 62 ms)
      # + a linear backward decoder over eeg_kernel lags in the envelope head (not in
      # the original; models/eeg_encoder.py)
      eeg_linear_branch=False,
      # "batch" (the original's BatchNorm over electrodes) | "trial" (each window's
      # channels z-scored, as the linear baseline's; offline: it reads the whole window)
      eeg_norm="batch",
      # The output: "decoded" (the original: the codec decodes the prediction) |
      # "mixture_mask" (the mixture through the ratio mask of both decoded streams,
      # |A|^p / (|A|^p + |B|^p), p = mask_power; a selector model, offline; mixture_mask.py)
      # | "refined_mask" (that mask corrected by model.refiner)
      output_waveform="decoded",
      mask_power=0.5,
      mask_floor=0.0,               # the mask's lower bound (0: the plain ratio mask)
      # "refined_mask": the ratio mask corrected by a spectral refiner that reads the
      # mixture's STFT beside both streams (models/refiner.py; not in the original),
      # trained after the model by `python -m neurocodec_jax.cli.refine`, saved here
      refiner=None,
      # A masked output's back-off: where the selector's logit gap is below
      # unsure_margin (0: off), unsure_mix of the output is the mixture instead
      # (mixture_mask.back_off; docs/research-log.md "Backing off where the choice is unsure")
      unsure_margin=0.0,
      unsure_mix=0.5,
      # True: an offline separator, a second Mamba per block reading the frames
      # backwards (not in the original; no streaming)
      bidirectional=False,
      selector="none",              # "none" (original) | "correlation" (see generator)
      select_window="causal",       # selector's correlation: "causal" (frames 0..t) | "trial"
      output_norm="unit",           # "unit" (original) | "mixture": decode at the mix's frame norms
                                    # | "none": as predicted (stream_form="mask": masked latents)
      select_decision="soft",       # selector at evaluation: "soft" (softmax blend) | "hard" (argmax)
      cue_form="backward",          # selector's cue: "backward" (a decoded envelope) | "forward"
                                    # (the EEG's source against each envelope's predicted
                                    # response, whitened per trial; models/cue.py)
                                    # | "encoding" (the same from a linear encoding model
                                    # fit by regression in training; models/encoding.py)
      encoding_subjects=0,          # "encoding": a fit per subject id 0 .. N-1 beside the
                                    # pooled one (which unseen subjects get); 0: pooled only
      mixture_consistency=False,    # selector's streams projected to sum to the mixture
      stream_form="direct",         # selector's streams: "direct" (a head predicts them) |
                                    # "mask" (softmax masks on the mixture latent; see generator)
                                    # | "tokens" (per-codebook code classification, lambda_token)
      mix_input="quantized",        # "quantized" (original: z from the codes) | "continuous"
                                    # (the encoder's output before quantization; steps.mix_latent)
      target_latent="quantized",    # talkers' latent targets: "quantized" (original) |
                                    # "continuous" (before quantization; steps.target_latent)
      transformer_ff_dim=1024,      # 'transformer' backbone feed-forward width
  ))

  # ---- discriminators and waveform losses (DAC's training setting) ------------
  c.disc = ml_collections.ConfigDict(dict(
      rates=(),
      periods=(2, 3, 5, 7, 11),
      fft_sizes=(2048, 1024, 512),
      bands=((0.0, 0.1), (0.1, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)),
      width=1.0,           # channel multiplier (1.0 = DAC's discriminator)
      lr=1e-4,
      grad_clip=10.0,
  ))
  c.mel = ml_collections.ConfigDict(dict(
      n_mels=(5, 10, 20, 40, 80, 160, 320),
      window_lengths=(32, 64, 128, 256, 512, 1024, 2048),
      clamp_eps=1e-5, mag_weight=0.0, log_weight=1.0, pow=1.0,
  ))

  # ---- optimisation and bookkeeping --------------------------------------------
  c.train = ml_collections.ConfigDict(dict(
      weight_decay=5e-2,
      grad_clip=1.0,
      schedule="plateau",          # "plateau" | "constant" | "cosine"
      plateau_factor=0.5,
      plateau_patience=5,
      warmup_steps=0,
      waveform_start=0,            # curriculum: waveform terms (mel, GAN) from this step
      waveform_ramp_steps=0,       # their weights ramp linearly from 0 over this many steps
      # The learning rate's factor while the waveform terms are on: their loss is far
      # sharper in the parameters than the latent terms' (docs/research-log.md).
      waveform_lr_scale=1.0,
      # What the waveform terms decode (model.selector="correlation"): "output" (the
      # selector's output as trained, its soft blend of the streams), "attended_stream"
      # (the stream nearer the attended talker's latent, the choice held: the waveform
      # terms shape the separation, not the selection) or "attended_stream_masked" (the
      # mixture through the ratio mask of that stream and the other, decoded:
      # model.output_waveform="mixture_mask"'s output).
      waveform_output="output",
      # Cue curriculum (model.selector="correlation"): the selector's cue starts as the
      # attended talker's own envelope and anneals linearly to the EEG's decoded one
      # over this many steps (0: the EEG from the start). Training only.
      cue_curriculum_steps=0,
      max_steps=-1,                # -1: epochs * steps_per_epoch
      log_every=10,
      checkpoint_every=200,
      eval_every=-1,               # -1: once per epoch
      keep_checkpoints=2,
      nonfinite="stop",            # "stop" | "skip"
      tensorboard=False,
      wandb=False,
  ))

  # ---- synthetic AAD dataset (demo and tests) --------------------------------
  c.synthetic = ml_collections.ConfigDict(dict(
      n_train=256, n_val=32, n_test=64,
      subjects=4,
      eeg_snr_db=-15.0,     # easier than real EEG (~-25) so the demo learns in minutes
      seed=1234,
      # "synthetic" talkers, or the recorded speech corpus at this path (preset speech)
      talkers="synthetic",
      eeg_model="classic",   # "classic" | "family" (data/synthetic.py: a family of forward models)
      snr_spread_db=0.0,     # "family": subject SNRs in [eeg_snr_db - spread, eeg_snr_db]
      subject_split="within",  # "within" | "held_out" (val/test subjects never trained on)
  ))

  if preset == "kul":
    c.root = "data/kul"         # python -m neurocodec_jax.data.prepare kul's default --out
    c.eeg_channels = 64
    c.codec = _codec("16khz", random=False)
    c.checkpoint_dir = "checkpoints/neurocodec_kul"
  elif preset in ("demo", "reproduce", "speech"):
    c.root = "data/synthetic_demo"
    c.checkpoint_dir = "checkpoints/neurocodec_demo"
    c.eeg_channels = 32
    c.codec = _codec("16khz", random=False, demo=True)   # the project's trained codec
    c.hidden_dim = 64
    c.num_layers = 2
    c.batch_size = 8
    c.epochs = 8             # (train.max_steps below sets the demo's length)
    c.model.num_heads = 4
    c.model.dropout = 0.1
    c.model.eeg_dim = 32
    c.model.transformer_ff_dim = 128
    c.disc.periods = (2, 3, 5)
    c.disc.fft_sizes = (512, 128)
    c.disc.width = 0.0625    # DAC's discriminator is a GPU-sized critic
    c.train.checkpoint_every = 250
    # The recipe that makes the model use the EEG (docs/research-log.md):
    # separate-then-select with the permutation-invariant and envelope terms (the
    # stream-envelope term x5), streams that add up to the mixture's continuous
    # latent, a hard trial-level decision at evaluation, an EEG kernel covering the
    # cortical response, decoding at the mixture's frame norms.
    # Latent-space terms only: DAC's waveform terms at 15/1/2 raised the validation
    # latent loss and multiply the step time (docs/research-log.md levers table; enable them with
    # lambda_mel/adv/feat and train.waveform_start for a curriculum).
    c.model.selector = "correlation"
    c.model.select_window = "trial"
    c.model.eeg_kernel = 32
    c.model.output_norm = "mixture"
    c.model.select_decision = "hard"
    c.model.mix_input = "continuous"
    c.model.mixture_consistency = True
    c.lambda_env = 1.0
    c.lambda_sep = 1.0
    c.lambda_sep_env = 5.0
    c.lambda_mel = c.lambda_adv = c.lambda_feat = c.lambda_sisdr = 0.0
    # The output: the mixture through the ratio mask of both decoded streams. On val it
    # beats the decoded prediction by 3-4 dB SI-SDR and 0.11-0.21 STOI in every preset
    # (docs/research-log.md "The codec's separation as a mask"); offline only (streaming
    # outputs the decoded prediction).
    c.model.output_waveform = "mixture_mask"
    c.synthetic.n_train, c.synthetic.n_val, c.synthetic.n_test = 2048, 64, 256
    c.train.max_steps = 2000
    c.train.eval_every = 500
    if preset == "speech":
      # The demo recipe on recorded speech (neurocodec_jax.data.speech's corpus): two
      # different people per trial, EEG from their envelopes, the codec trained on
      # that speech (codec_training; its manifest says how and how well).
      c.root = "data/speech_demo"
      c.checkpoint_dir = "checkpoints/neurocodec_speech"
      c.synthetic.talkers = "data/speech"
      c.codec.weights = SPEECH_CODEC_WEIGHTS
      # Recorded speech separates worse than the synthetic talkers: the demo's 64 x 2
      # separator identifies 65.6% on val (a perfect cue 72.7%). A 128 x 4 separator on
      # four times the trials, twice as long, identifies 75.8% (81.2%) with better
      # masked output (docs/research-log.md "The speech preset", chosen on val; 256 val
      # trials so that the choice is not noise).
      c.hidden_dim = 128
      c.num_layers = 4
      c.synthetic.n_train, c.synthetic.n_val = 8192, 256
      # Its validation latent loss still fell at 4000 steps (0.0199, from 0.0217 at
      # 3500); 8000 identify 5.9 points more on val with +0.4 dB (docs/research-log.md
      # "Twice the steps on speech").
      c.train.max_steps = 8000
      # A fifth of the mixture kept in every bin: the plain mask over-suppresses where
      # the streams err, STOI 0.004 below the mixture on val; floored, 0.009 above it
      # with the same SI-SDR (docs/research-log.md "A floor under the mask", on val).
      c.model.mask_floor = 0.2
      # The selector's cue from a linear encoding model fit in training
      # (models/encoding.py): on val 85.2% identification against the backward form's
      # 81.6%, its EEG decoder 99.6% against the linear decoder's 97.3%; one fit per
      # subject gave 84.0% (docs/research-log.md "The speech preset with the encoding
      # cue form").
      c.model.cue_form = "encoding"
    if preset == "reproduce":
      # `make reproduce`: the demo recipe, longer (within 60 min on 2 CPU cores): a
      # larger separator (1.18 M), trained 3x longer on six times the trials (docs/research-log.md
      # "Does it use the EEG?": separation, not the EEG, limits the demo). Six layers
      # need the warm-up: without it the EEG encoder's gradient fills the global-norm
      # clip and the separator does not train (docs/research-log.md levers table; chosen on val).
      c.root = "data/synthetic_reproduce"
      c.checkpoint_dir = "checkpoints/neurocodec_reproduce"
      c.hidden_dim = 128
      c.num_layers = 6
      c.train.warmup_steps = 1000
      c.synthetic.n_train = 12288   # 3x the trials: the 4096-trial run overfit (docs/research-log.md)
      # Continuous targets: quantized ones put the larger separator's output far off
      # the decoder's manifold (STOI 0.34 against the demo's 0.51; docs/research-log.md
      # "The output-quality ladder", chosen on val).
      c.model.target_latent = "continuous"
      # Then a waveform stage: the decoded attended stream's SI-SDR at a hundredth of
      # the rate, through the JAX codec (docs/research-log.md "The waveform stage's
      # learning rate"; on val +1.8 dB SI-SDR, +0.09 STOI). It starts at step 5000, the
      # latent stage's best validation, which keeps the run within the hour.
      c.lambda_sisdr = 1.0
      c.codec.backend = "jax"
      c.train.waveform_output = "attended_stream"
      c.train.waveform_lr_scale = 0.01
      c.train.waveform_start = 5000
      c.train.max_steps = 5600
      c.train.eval_every = 1000
  c.lock()
  return c
