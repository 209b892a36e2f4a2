"""Evaluate a NeuroCodec checkpoint.

  python evaluate.py --workdir DIR [--split test] [--noise_cue | --shuffle_eeg | --oracle_cue]
                     [--num_samples N] [--which best|latest]
  python evaluate.py --checkpoint DIR/best/STEP --config neurocodec_jax/configs/neurocodec.py:demo
  python evaluate.py --compare RUN/metrics.json ABLATION/metrics.json

Writes metrics.json and per_example.csv (keys in the README) to
``<workdir>/eval/<split>_<ablation>/`` unless --out is given.
"""

import json
import logging
import os

from absl import app, flags

from neurocodec_jax.cli import one_line_errors, use_refiner
from neurocodec_jax.configs.validate import define_config_flag, parse_flags, validate_or_exit

define_config_flag("config", None, "Config (with --checkpoint).")
flags.DEFINE_string("workdir", None, "Training workdir (config.json, best/, checkpoints/).")
flags.DEFINE_string("checkpoint", None, "A checkpoint step folder, e.g. DIR/best/120.")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Checkpoint of the workdir.")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.DEFINE_bool("noise_cue", False, "Replace EEG by noise with each channel's mean/std.")
flags.DEFINE_bool("shuffle_eeg", False, "Give each example another trial's EEG.")
flags.DEFINE_bool("oracle_cue", False,
                  "Diagnostic (selector models): select by the attended talker's true "
                  "envelope, i.e. perfect attention decoding.")
flags.DEFINE_bool("oracle_norm", False,
                  "Diagnostic: decode each output frame at the attended talker's frame "
                  "norm (the prediction's direction kept).")
flags.DEFINE_enum("output_waveform", None, ["decoded", "mixture_mask", "refined_mask"],
                  "The output: the decoded prediction, the mixture masked by both "
                  "decoded streams, or that mask refined by --refiner (default: the "
                  "config's model.output_waveform).")
flags.DEFINE_float("unsure_margin", None,
                   "A masked output backs off toward the mixture (--unsure_mix of it) where "
                   "the selector's logit gap is below this (default: the config's "
                   "model.unsure_margin; 0: off).")
flags.DEFINE_float("unsure_mix", None, "The mixture's share where unsure (default: the "
                   "config's model.unsure_mix).")
flags.DEFINE_string("refiner", None,
                    "A trained refiner (python -m neurocodec_jax.cli.refine); implies "
                    "--output_waveform refined_mask and the back-off chosen for it on val "
                    "(--unsure_margin / --unsure_mix override it).")
flags.DEFINE_float("mask_floor", None,
                   "The masked output's lower bound in [0, 1] (default: the config's "
                   "model.mask_floor).")
flags.DEFINE_integer("num_samples", 0, "Write wavs and a spectrogram plot for N examples.")
flags.DEFINE_string("out", None, "Output folder.")
flags.DEFINE_multi_string("compare", None, "Two metrics.json: print the drop.")
flags.DEFINE_bool("report", False,
                  "Also write report.html in the output folder: the tables, audio players "
                  "and spectrograms of the written samples, links to the JSON.")
flags.DEFINE_bool("linear_baseline", False,
                  "Also fit the classic linear backward decoder (train split, ridge chosen "
                  "on val) and report its identification on --split with perfectly "
                  "separated talkers (linear_baseline.json).")
FLAGS = flags.FLAGS


@one_line_errors
def main(argv):
  del argv
  # The evaluation stack (JAX: seconds to import) comes after the flags, so that an
  # unknown --config key is reported at once.
  import codec_bridge  # pylint: disable=g-import-not-at-top,unused-import  (the codec)
  from neurocodec_jax import evaluation  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  logging.getLogger().setLevel(logging.INFO)
  if FLAGS.compare:
    if len(FLAGS.compare) != 2:
      raise app.UsageError("--compare takes two metrics.json files.")
    print(evaluation.compare(*FLAGS.compare))
    return
  if FLAGS.noise_cue + FLAGS.shuffle_eeg + FLAGS.oracle_cue + FLAGS.oracle_norm > 1:
    raise app.UsageError("Choose one of --noise_cue, --shuffle_eeg, --oracle_cue and "
                         "--oracle_norm.")
  if FLAGS.checkpoint:
    if FLAGS.config is None:
      raise app.UsageError("--checkpoint needs --config.")
    config = FLAGS.config
  elif FLAGS.workdir:
    config = load_run_config(FLAGS.workdir)
  else:
    raise app.UsageError("Pass --workdir, or --checkpoint with --config.")
  if FLAGS.refiner and FLAGS.output_waveform not in (None, "refined_mask"):
    raise app.UsageError(f"--refiner outputs the refined mask, not --output_waveform "
                         f"{FLAGS.output_waveform}.")
  if FLAGS.refiner:
    use_refiner(config, FLAGS.refiner)
  if FLAGS.output_waveform:
    config.model.output_waveform = FLAGS.output_waveform
  if FLAGS.mask_floor is not None:
    config.model.mask_floor = FLAGS.mask_floor
  if FLAGS.unsure_margin is not None:
    config.model.unsure_margin = FLAGS.unsure_margin
  if FLAGS.unsure_mix is not None:
    config.model.unsure_mix = FLAGS.unsure_mix
  validate_or_exit(config)
  ablation = ("noise_cue" if FLAGS.noise_cue or config.noise_cue
              else "shuffle_eeg" if FLAGS.shuffle_eeg
              else "oracle_cue" if FLAGS.oracle_cue
              else "oracle_norm" if FLAGS.oracle_norm else "none")
  result = evaluation.evaluate(
      config, workdir=FLAGS.workdir, checkpoint=FLAGS.checkpoint, split=FLAGS.split,
      ablation=ablation, out_dir=FLAGS.out, num_samples=FLAGS.num_samples,
      which=FLAGS.which)
  print(json.dumps(result["metrics"], indent=2))
  if "protocol" in result:
    p = result["protocol"]
    print(f"protocol: {p.get('name')} ({p.get('dataset')}; metrics are comparable only "
          f"under the same protocol)")
  if FLAGS.linear_baseline:
    linear = evaluation.linear_baseline(config, FLAGS.split, out_dir=result["out_dir"])
    ours = result["metrics"].get("id_cue_true_envelopes")
    print(f"linear backward decoder: identification {linear['identification']:.3f} "
          f"(± {linear['identification_se']:.3f}); the model's EEG decoder: "
          f"{'n/a' if ours is None else f'{ours:.3f}'} (both with the true envelopes)")
    forward = linear["forward"]
    print(f"linear forward decoder: identification {forward['identification']:.3f} "
          f"(± {forward['identification_se']:.3f})")
    if ours is not None:
      per_example = os.path.join(result["out_dir"], "per_example.csv")
      print(evaluation.format_decoder_pairing(evaluation.compare_decoders(per_example, linear)))
      print(evaluation.format_decoder_pairing(
          evaluation.compare_decoders(per_example, forward), "forward"))
  if FLAGS.report:
    from neurocodec_jax import report  # pylint: disable=g-import-not-at-top
    print(f"wrote {report.write_report(result['out_dir'])}")
  print(f"wrote {result['out_dir']}/metrics.json")


def run():
  """The ``neurocodec-evaluate`` console script."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
