"""`make demo` (and `make reproduce`): train and evaluate a demo preset with its trained codec.

``python -m neurocodec_jax.cli.demo [--preset auto|demo|reproduce|speech]``; ``speech`` is
the recipe on recorded speech, ``demo`` on synthetic talkers, ``reproduce`` the
longer synthetic run (neurocodec_jax/configs/neurocodec.py). ``auto`` (the default,
``make demo``) runs ``speech`` where the recordings are at hand or can be fetched
(Debian's apt), and otherwise says why and runs ``demo``.

1. generates the preset's AAD dataset if absent (recorded or synthetic talkers);
2. precomputes its DAC codes (inside training, when the cache is missing or stale);
3. trains the preset (its recipe: neurocodec_jax/configs/neurocodec.py); for the
   speech preset, then the spectral mask refiner behind it (``cli.refine``);
4. evaluates the best checkpoint on the test split with the true EEG, with the
   noise cue and with shuffled EEG, writes samples, and prints the comparison and
   two verdicts: does it use the EEG (identification), and is its output better
   than the mixture it was given (floor: the mixture; ceiling: the codec oracle).

Re-running resumes (or skips) training from the run's latest checkpoint, and the
refiner's from its train state (``<run>/refiner.msgpack.state``); the refiner's
back-off is chosen on val again each time (a few minutes).
"""

import argparse
import logging
import math
import os
import sys
import time

import codec_bridge  # pylint: disable=unused-import  (registers the codec loader)
from neurocodec_jax.cli import one_line_errors, use_refiner
from neurocodec_jax.configs import neurocodec
from neurocodec_jax import evaluation, report
from neurocodec_jax.data import open_split, speech, synthetic
from neurocodec_jax.training import train_and_evaluate

PRESETS = ("demo", "reproduce", "speech")
AUTO = "auto"
# Presets whose output is the refined mask, with the back-off chosen on val: it raises
# the speech preset's output from +1.4 dB SI-SDR and +0.01 STOI over the mixture to
# +3.6 dB and +0.05 (docs/research-log.md "A spectral refiner behind the streams").
REFINED = ("speech",)


def workdir_of(preset: str) -> str:
  return f"runs/{preset}"


def prepare_data(config) -> str:
  """Generates the synthetic dataset at ``config.root`` unless it exists."""
  spec = synthetic.spec_from_config(config)
  if os.path.isdir(config.root):
    stale = synthetic.mismatch(config.root, spec)
    if stale:
      raise ValueError(f"{os.path.join(config.root, 'manifest.json')}: {stale}; the "
                       f"{config.root} dataset was written for other settings: delete "
                       "it (or move it aside) to regenerate.")
    print(f"[demo] synthetic dataset found at {config.root} (delete it to regenerate)")
  else:
    if spec.talkers != "synthetic":
      ensure_speech(spec.talkers)
    print(f"[demo] generating the synthetic AAD dataset at {config.root}")
    synthetic.generate(config.root, spec)
  print(synthetic.summarize(config.root))
  for split in ("train", "val", "test"):
    open_split(config, split)            # validates the layout against the config
  return config.root


def ensure_speech(root: str) -> None:
  """Builds the recorded-speech corpus at ``root`` unless it is there (fetching its
  packages with apt; ``speech.SpeechSourceError`` says what to do where it cannot)."""
  try:
    speech.SpeechCorpus(root)
    print(f"[demo] speech corpus found at {root}")
  except speech.SpeechSourceError:
    print(f"[demo] building the speech corpus at {root} (Debian packages via apt-get)")
    speech.build(root)


def choose_preset(preset: str, speech_root: str) -> str:
  """``preset``, or for ``auto`` the speech preset when its corpus is at
  ``speech_root`` or can be built there, else the synthetic demo (saying why)."""
  if preset != AUTO:
    return preset
  try:
    ensure_speech(speech_root)
    return "speech"
  except speech.SpeechSourceError as e:
    print(f"[demo] recorded speech unavailable ({e}); running the synthetic demo instead "
          f"(--preset demo)")
    return "demo"


def describe_codec(config) -> str:
  """Which codec the run uses, for the log (the trained demo codec, or random weights)."""
  if config.codec.random:
    return "RANDOM-weight DAC (not a real codec: waveforms are not speech)"
  path = config.codec.weights
  manifest = os.path.join(os.path.dirname(path or ""), "manifest.json")
  if path and os.path.exists(manifest):
    import json  # pylint: disable=g-import-not-at-top
    m = json.load(open(manifest))
    return (f"the project's trained demo DAC {path} (sha256 {m['sha256'][:12]}..., "
            f"{m['steps']} steps; held-out STOI {m['quality']['mixture_stoi']:.2f}, "
            f"SI-SDR {m['quality']['mixture_si_sdr']:.1f} dB; see {manifest})")
  return f"DAC weights {path or '(DAC cache)'}"


def verdict(metrics: dict[str, dict]) -> str:
  """One line from the measured identification rates (``{ablation: metrics}``).

  "Uses the EEG" only when identification with the true EEG beats BOTH ablations
  by more than three standard errors of the difference of two proportions.
  """
  n = metrics["n"]
  ident = {a: metrics[a]["id_latent"] for a in ("none", "noise_cue", "shuffle_eeg")}
  def z(a):
    p = (ident["none"] + ident[a]) / 2
    se = math.sqrt(max(2 * p * (1 - p) / n, 1e-12))
    return (ident["none"] - ident[a]) / se
  uses = min(z("noise_cue"), z("shuffle_eeg")) > 3
  return (f"{'uses the EEG' if uses else 'does NOT demonstrably use the EEG'}: "
          f"identification {100 * ident['none']:.1f}% vs {100 * ident['noise_cue']:.1f}% with "
          f"the noise cue and {100 * ident['shuffle_eeg']:.1f}% with shuffled EEG "
          f"(n = {n} test trials; copy-the-mixture baseline "
          f"{100 * metrics['none']['id_latent_mixture']:.1f}%)")


def decoder_comparison(metrics: dict, linear: dict, paired: dict | None = None) -> str:
  """The model's EEG decoder beside the classic linear one, both with perfectly
  separated talkers (their true envelopes); ``paired``: their comparison trial by
  trial (``evaluation.compare_decoders``)."""
  ours = metrics.get("id_cue_true_envelopes")
  ours = f"{100 * ours:.1f}%" if ours is not None else "n/a (no selector)"
  line = (f"EEG decoders with perfectly separated talkers: the model's {ours}, the linear "
          f"backward decoder's {100 * linear['identification']:.1f}% "
          f"(± {100 * linear['identification_se']:.1f}; ridge {linear['ridge']:g}, fit on "
          f"train, chosen on val)")
  forward = linear.get("forward")
  if forward:
    line += (f"; the linear forward decoder's {100 * forward['identification']:.1f}% "
             f"(± {100 * forward['identification_se']:.1f})")
  if paired:
    line += f"\n[demo] {evaluation.format_decoder_pairing(paired)}"
  return line


def refine(config, workdir: str, run):
  """Trains the refiner behind the run's best checkpoint (``cli.refine``'s recipe;
  a finished one is reused) and returns a copy of ``config`` whose output is its
  refined mask, with the back-off chosen on val."""
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.cli.refine import format_back_off  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.refine import Recipe  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  out = os.path.join(workdir, "refiner.msgpack")
  splits = (config.data.train_split, config.data.val_split)
  refine_with = build_run(config, {s: refining.fields(config) for s in splits}, reuse=run)
  state, where = refine_with.restore_generator(workdir=workdir, which="best")
  print(f"[demo] the mask refiner behind {where} ({out})")
  back_off = refining.refine_run(refine_with, state, Recipe(), out, checkpoint=where)
  print(f"[demo] {format_back_off(back_off)}")
  refined = config.copy_and_resolve_references()    # the run's own config stays as trained
  use_refiner(refined, out)
  return refined


@one_line_errors
def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=(AUTO,) + PRESETS, default=AUTO)
  args = p.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
  start = time.time()
  preset = choose_preset(args.preset, neurocodec.get_config("speech").synthetic.talkers)
  config = neurocodec.get_config(preset)
  workdir = workdir_of(preset)
  prepare_data(config)
  print(f"[demo] codec: {describe_codec(config)}")
  print(f"[demo] training the {preset} preset in {workdir}")
  run = train_and_evaluate(config, workdir)["run"]
  if preset in REFINED:
    config = refine(config, workdir, run)
  results = {}
  for ablation in evaluation.ABLATIONS:
    results[ablation] = evaluation.evaluate(
        config, workdir=workdir, split="test", ablation=ablation,
        num_samples=3 if ablation == "none" else 0, reuse=run)   # shared codec, programs
    run = results[ablation]["run"]
  print("\n[demo] test split, true EEG vs ablations:")
  for ablation in ("noise_cue", "shuffle_eeg"):
    print(evaluation.compare(os.path.join(results["none"]["out_dir"], "metrics.json"),
                             os.path.join(results[ablation]["out_dir"], "metrics.json")))
  metrics = {a: r["metrics"] for a, r in results.items()}
  metrics["n"] = results["none"]["n"]
  print(f"\n[demo] {verdict(metrics)}")
  print("\n[demo] output quality vs the attended talker (test split, true EEG):\n"
        + evaluation.format_quality(results["none"]["quality"]))
  print(f"\n[demo] {evaluation.quality_verdict(results['none']['metrics'])}")
  linear = evaluation.linear_baseline(config, "test", out_dir=results["none"]["out_dir"])
  paired = (evaluation.compare_decoders(
      os.path.join(results["none"]["out_dir"], "per_example.csv"), linear)
      if "id_cue_true_envelopes" in results["none"]["metrics"] else None)
  print(f"\n[demo] {decoder_comparison(results['none']['metrics'], linear, paired)}")
  print(f"[demo] report: {report.write_report(results['none']['out_dir'])}")
  print(f"\n[demo] done in {time.time() - start:.0f} s. Outputs:\n"
        f"  data:        {config.root}\n"
        f"  run:         {workdir}/ (config.json, metrics.jsonl, checkpoints/, best/)\n"
        + "".join(f"  eval {a:<11} {r['out_dir']}/ (metrics.json, per_example.csv"
                  + (", wavs, plots)\n" if a == "none" else ")\n")
                  for a, r in results.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
