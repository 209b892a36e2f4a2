"""Extract the attended talker from your own recordings.

  python -m neurocodec_jax.cli.extract --workdir RUN --mixture mix.wav --eeg eeg.fif \
      --out attended.wav
  python -m neurocodec_jax.cli.extract --checkpoint RUN/best/STEP \
      --config neurocodec_jax/configs/neurocodec.py:demo --mixture mix.flac \
      --eeg eeg.npy --eeg_rate 512 --out attended.wav

The mixture (wav, flac or ogg, any rate, at least 1 s) is resampled to the codec's
rate; the EEG (``.npy``, ``.h5``, ``.mat``, or MNE's ``.fif``, ``.edf``, ``.bdf``,
``.set``, ``.vhdr``) is re-referenced, band-passed and resampled as ``prepare`` does
(``neurocodec_jax.recordings``), its channel count checked against the run. The
model runs over the whole recording in overlapping training-length windows
(``neurocodec_jax.extraction``), or with ``--stream [--block_ms 40]`` block by block
as it would run live (``neurocodec_jax.streaming``: the causal model; prints the
latency and the real-time factor). Writes the extracted wav and, beside it, a PNG with
the mixture's and the output's spectrograms and the EEG-decoded envelope beside the
output's envelope. Every bad input stops with one line naming the file and field.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

import codec_bridge  # pylint: disable=unused-import  (registers the codec loader)
from neurocodec_jax import recordings
from neurocodec_jax.cli import one_line_errors, use_refiner


def load_config(args):
  """The run's config: its saved one (``--workdir``) or ``--config FILE:PRESET``."""
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  if args.workdir:
    config = load_run_config(args.workdir)
  elif not args.config:
    raise SystemExit("error: --checkpoint needs --config FILE:PRESET.")
  else:
    from neurocodec_jax.configs.validate import load_config_file  # pylint: disable=g-import-not-at-top
    config = load_config_file(args.config)
  from neurocodec_jax.configs.validate import ConfigError  # pylint: disable=g-import-not-at-top
  if args.refiner:
    if args.output_waveform not in (None, "refined_mask"):
      raise ConfigError(f"--refiner outputs the refined mask, not --output_waveform "
                        f"{args.output_waveform}.")
    use_refiner(config, args.refiner)
    args.output_waveform = "refined_mask"
  if args.output_waveform:
    if config.model.selector == "none" and args.output_waveform != "decoded":
      raise ConfigError(f"--output_waveform {args.output_waveform} needs a selector model "
                        "(model.selector='correlation'); this run has none.")
    config.model.output_waveform = args.output_waveform
  if args.stream and config.model.bidirectional:
    raise ConfigError("--stream needs a causal model; this run's separator is offline "
                      "(model.bidirectional=True).")
  if args.stream and config.model.eeg_norm != "batch":
    raise ConfigError(f"--stream needs a causal model; this run normalizes each EEG window "
                      f"by its own statistics (model.eeg_norm={config.model.eeg_norm!r}).")
  if args.stream and config.model.output_waveform != "decoded":
    if args.output_waveform:
      raise ConfigError(f"--stream outputs the decoded prediction, not "
                        f"--output_waveform {args.output_waveform} (offline).")
    print(f"[extract] --stream outputs the decoded prediction (this run's "
          f"model.output_waveform={config.model.output_waveform!r} is offline).")
    config.model.output_waveform = "decoded"
  return config


def plot(path: str, mixture, wave, cue, sample_rate: int, frame_rate: float) -> None:
  """Mixture and output spectrograms; the decoded EEG envelope beside the output's."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.evaluation import SPEC_FLOOR_DB, spectrogram_db  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.losses.envelope import speech_envelope  # pylint: disable=g-import-not-at-top
  rows = 3 if cue is not None else 2
  fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), sharex=True)
  for ax, (name, x) in zip(axes, (("mixture", mixture), ("extracted", wave))):
    freqs, times, db = spectrogram_db(x, sample_rate)
    ax.pcolormesh(times, freqs, db, cmap="magma", vmin=SPEC_FLOOR_DB, vmax=db.max(),
                  shading="auto")
    ax.set_ylabel("Hz")
    ax.set_title(name)
  if cue is not None:
    z = lambda v: (v - v.mean()) / (v.std() + 1e-8)
    env = np.asarray(speech_envelope(wave[None], sample_rate, frame_rate, len(cue)))[0]
    t = np.arange(len(cue)) / frame_rate
    axes[2].plot(t, z(env), label="output envelope", lw=1)
    axes[2].plot(t, z(cue), label="decoded from the EEG", lw=1)
    axes[2].set_title(f"envelopes (r = {np.corrcoef(env, cue)[0, 1]:.2f})")
    axes[2].legend(loc="upper right")
  axes[-1].set_xlabel("seconds")
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=80)
  plt.close(fig)
  os.replace(tmp, path)


def parse(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", help="a training run (config.json, best/, checkpoints/)")
  p.add_argument("--checkpoint", help="a checkpoint step folder (with --config)")
  p.add_argument("--config", help="FILE:PRESET, with --checkpoint")
  p.add_argument("--which", choices=("best", "latest"), default="best")
  p.add_argument("--mixture", required=True, help="wav, flac or ogg")
  p.add_argument("--eeg", required=True, help=".npy .h5 .mat .fif .edf .bdf .set .vhdr")
  p.add_argument("--eeg_rate", type=float, default=None,
                 help="the EEG file's rate in Hz (read from MNE's formats)")
  p.add_argument("--eeg_units", default="auto", help="auto, volts, millivolts, microvolts")
  p.add_argument("--eeg_key", default=None, help="the .h5 dataset or .mat variable")
  p.add_argument("--eeg_channels", default=None,
                 help="comma-separated channel names to keep, in order (MNE's formats)")
  p.add_argument("--reference", default="average", help="average, none, or a channel")
  p.add_argument("--out", required=True, help="the extracted wav")
  p.add_argument("--stream", action="store_true",
                 help="stream block by block (neurocodec_jax.streaming): the causal model "
                      "as it would run live; prints its latency and real-time factor")
  p.add_argument("--output_waveform", choices=("decoded", "mixture_mask", "refined_mask"),
                 default=None,
                 help="the decoded prediction, the mixture masked by both decoded "
                      "streams, or that mask refined by --refiner (default: the run's "
                      "model.output_waveform)")
  p.add_argument("--refiner", default=None,
                 help="a trained refiner (python -m neurocodec_jax.cli.refine); implies "
                      "--output_waveform refined_mask and the back-off chosen for it on val")
  p.add_argument("--block_ms", type=float, default=40.0,
                 help="--stream's block, a multiple of the codec's frame (20 ms)")
  p.add_argument("--subject", type=int, default=-1,
                 help="the listener's subject id in the training data, for a run with "
                      "model.encoding_subjects (its own encoding model); default -1: a "
                      "new listener, the pooled one")
  args = p.parse_args(argv)
  if bool(args.workdir) == bool(args.checkpoint):
    p.error("pass --workdir, or --checkpoint with --config")
  return args


@one_line_errors
def main(argv=None) -> int:
  args = parse(argv)
  config = load_config(args)
  arch = config.codec.arch
  # Inputs first: a bad file is reported before the codec and model load.
  mixture = recordings.read_mixture(args.mixture, arch.sample_rate)
  eeg = recordings.read_eeg(
      args.eeg, channels=config.eeg_channels, eeg_rate=config.data.eeg_rate,
      rate=args.eeg_rate, units=args.eeg_units, key=args.eeg_key,
      pick=args.eeg_channels.split(",") if args.eeg_channels else None,
      reference=args.reference)
  needed = len(mixture) / arch.sample_rate * config.data.eeg_rate
  if eeg.shape[1] < needed - 1:
    raise recordings.RecordingError(
        f"{args.eeg}: {eeg.shape[1] / config.data.eeg_rate:.2f} s of EEG for "
        f"{len(mixture) / arch.sample_rate:.2f} s of audio in {args.mixture}; expected EEG "
        f"covering the audio.")
  from neurocodec_jax import codec, extraction  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  run = build_run(config)
  run.example = {k: v[:1] for k, v in extraction.make_window_batch(run, mixture, eeg, [0]).items()}
  state, where = run.restore_generator(workdir=args.workdir, checkpoint=args.checkpoint,
                                       which=args.which)
  if args.stream:
    from neurocodec_jax import streaming  # pylint: disable=g-import-not-at-top
    dac_params = None
    if run.codec.encoder()[1] is None:      # torch weights: stream with their JAX port
      from codec_bridge.converters import dac_params_from_torch  # pylint: disable=g-import-not-at-top
      dac_params = dac_params_from_torch(run.codec.model)
    streamer = streaming.Streamer.from_run(run, state, block_ms=args.block_ms,
                                           max_seconds=len(mixture) / arch.sample_rate + 1,
                                           dac_params=dac_params)
    result = streamer.run(mixture, eeg)
    ms = result["latency"]
    print(f"streamed in {args.block_ms:g} ms blocks: latency {ms['total']:.0f} ms (block "
          f"{ms['block']:.0f} + encoder look-ahead {ms['encoder']:.0f} + EEG {ms['eeg']:.0f} "
          f"+ decoder look-ahead {ms['decoder']:.0f}), real-time factor {result['rtf']:.3f} "
          f"({result['cpu_rtf']:.3f} CPU s per audio s)")
    result["cue"] = None
  else:
    result = extraction.extract(run, state, mixture, eeg, subject=args.subject)
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  tmp = args.out + ".tmp.wav"
  sf.write(tmp, result["wave"], arch.sample_rate)
  os.replace(tmp, args.out)
  png = os.path.splitext(args.out)[0] + ".png"
  plot(png, mixture, result["wave"], result["cue"], arch.sample_rate, codec.frame_rate(arch))
  print(f"extracted {len(mixture) / arch.sample_rate:.2f} s with {where}: wrote {args.out} "
        f"and {png}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
