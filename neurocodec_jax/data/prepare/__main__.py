"""Prepare a public AAD dataset in the project's HDF5 layout.

  python -m neurocodec_jax.data.prepare kul --src KUL_DIR [--out data/kul]
      [--protocol trial-held-out] [--segment_seconds 2] [--sample_rate 16000]
      [--eeg_rate 128] [--val_fraction 0.1 --test_fraction 0.1 | --val_count N
      --test_count N | --val_subjects S16 --test_subjects S15] [--seed 0]
      [--exclude_repeated] [--overwrite]

Datasets: kul, kulmix, cocktail, dtu (their own options: ``--<dataset>_...``).
``--out`` defaults to ``data/<dataset>``, the path the config presets read;
``--sample_rate`` to the codec sample rate of the preset that trains on the dataset
(:data:`CODECS`: 44100 for cocktail, 16000 for the others; a test holds it to
neurocodec_jax/configs/neurocodec.py's presets).
"""

from __future__ import annotations

import argparse
import logging
import sys

from neurocodec_jax import codec_arch
from neurocodec_jax.data.prepare import build, protocols, signals

# Dataset -> the DAC model its preset trains with (neurocodec_jax/configs/neurocodec.py:
# cocktail at 44.1 kHz; kul, and kulmix and dtu with --config.root=data/<dataset>, at 16 kHz).
CODECS = {"cocktail": "44khz", "kul": "16khz", "kulmix": "16khz", "dtu": "16khz"}


def default_sample_rate(dataset: str) -> int:
  """The codec sample rate of ``dataset``'s preset."""
  return int(codec_arch.DAC_ARCHS[CODECS[dataset]]["sample_rate"])


def _optional_float(text: str):
  return None if text.lower() == "none" else float(text)


def _eeg_settings(args) -> signals.EEGSettings | None:
  """The EEG options given on the command line over EEGSettings' defaults, or None
  (the reader's recipe) when none was given."""
  given = {k: getattr(args, f"eeg_{k}") for k in ("l_freq", "h_freq", "reference")
           if hasattr(args, f"eeg_{k}")}
  return signals.EEGSettings(**given) if given else None


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m neurocodec_jax.data.prepare",
                              description=__doc__.split("\n")[0])
  p.add_argument("dataset", choices=sorted(build.READERS))
  p.add_argument("--src", required=True, help="the downloaded dataset's folder")
  p.add_argument("--out", default=None, help="output folder (default data/<dataset>)")
  p.add_argument("--overwrite", action="store_true")
  p.add_argument("--quiet", action="store_true", help="no progress bars")
  g = p.add_argument_group("signals")
  g.add_argument("--sample_rate", type=int, default=None,
                 help="codec sample rate (Hz; default: the codec's of the config preset "
                      "that trains on the dataset, " + ", ".join(
                          f"{d}: {default_sample_rate(d)}" for d in sorted(CODECS)) + ")")
  g.add_argument("--eeg_rate", type=int, default=128, help="EEG rate (Hz)")
  g.add_argument("--segment_seconds", type=float, default=2.0)
  g.add_argument("--hop_length", type=int, default=None,
                 help="codec hop in samples (default: DAC's for the sample rate)")
  # Not given: the reader's own recipe (e.g. Cocktail Party's 0.1-45 Hz, mastoids).
  g.add_argument("--eeg_l_freq", type=_optional_float, default=argparse.SUPPRESS,
                 help="EEG high-pass edge in Hz ('none': no high-pass; default: the "
                      "dataset reader's recipe)")
  g.add_argument("--eeg_h_freq", type=_optional_float, default=argparse.SUPPRESS,
                 help="EEG low-pass edge in Hz ('none': no low-pass; default: the recipe)")
  g.add_argument("--eeg_reference", default=argparse.SUPPRESS,
                 help="'average', 'none' or a channel name (default: the recipe)")
  g = p.add_argument_group("protocol")
  g.add_argument("--protocol", choices=protocols.PROTOCOLS, default="trial-held-out")
  g.add_argument("--val_fraction", type=float, default=0.1)
  g.add_argument("--test_fraction", type=float, default=0.1)
  g.add_argument("--val_count", type=int, default=None,
                 help="held-out trials per subject (trial-held-out) or subjects")
  g.add_argument("--test_count", type=int, default=None)
  g.add_argument("--val_subjects", nargs="+", default=(), help="subject-held-out")
  g.add_argument("--test_subjects", nargs="+", default=(), help="subject-held-out")
  g.add_argument("--seed", type=int, default=0)
  g.add_argument("--exclude_repeated", action="store_true",
                 help="drop windows whose stimuli are heard in a held-out split")
  for name in sorted(build.READERS):
    try:
      module = build.reader_module(name)
    except ImportError:
      continue           # a reader not in this checkout
    if hasattr(module, "add_arguments"):
      module.add_arguments(p.add_argument_group(f"{name} options"))
  return p


def main(argv=None):
  p = parser()
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  # The reader's own options: the dests its add_arguments defined.
  try:
    module = build.reader_module(args.dataset)
  except ImportError as e:
    print(f"error: the {args.dataset} reader is not available ({e}).", file=sys.stderr)
    return 2
  options = {}
  if hasattr(module, "add_arguments"):
    probe = argparse.ArgumentParser(add_help=False)
    module.add_arguments(probe)
    options = {a.dest: getattr(args, a.dest) for a in probe._actions}  # pylint: disable=protected-access
  sample_rate = args.sample_rate
  if sample_rate is None:
    sample_rate = default_sample_rate(args.dataset)
  settings = build.Settings(
      sample_rate=sample_rate, eeg_rate=args.eeg_rate,
      segment_seconds=args.segment_seconds, hop_length=args.hop_length,
      eeg=_eeg_settings(args))
  protocol = protocols.Protocol(
      name=args.protocol, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
      val_count=args.val_count, test_count=args.test_count,
      val_subjects=tuple(args.val_subjects), test_subjects=tuple(args.test_subjects),
      seed=args.seed, exclude_repeated=args.exclude_repeated)
  out = args.out or f"data/{args.dataset}"
  try:
    manifest = build.prepare(args.dataset, args.src, out, settings=settings,
                             protocol=protocol, options=options, overwrite=args.overwrite,
                             progress=not args.quiet)
  except (ValueError, FileExistsError) as e:     # DatasetError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    return 2
  counts = manifest["protocol"]["counts"]
  print(f"{out}: protocol {args.protocol}, " + ", ".join(
      f"{s} {n} windows" for s, n in counts.items()) + f" of {args.segment_seconds} s "
      f"at {sample_rate} Hz")
  return 0


if __name__ == "__main__":
  sys.exit(main())
