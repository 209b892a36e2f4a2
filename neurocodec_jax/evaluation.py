"""Evaluation behind ``evaluate.py``: metrics, EEG ablations, samples, comparisons.

Per example (``per_example.csv``) and averaged (``metrics.json``, also per
subject when subjects are known):

  latent_loss     the training latent loss (cosine when normalize_latents)
  si_sdr          dB, decoded re-quantized prediction vs the clean target,
                  aligned within a few ms by |cross-correlation| (losses.sisdr)
  pesq_wb         wide-band PESQ on 16 kHz resampled audio (NaN if undefined)
  stoi, estoi     (extended) short-time objective intelligibility
  <metric>_mixture  the floor: the unprocessed mixture vs the attended talker
  <metric>_oracle   the ceiling: the attended talker's codes re-quantized with
                  ``codec.n_quantizers_eval`` and decoded (the best any generator
                  in this latent space can output)
  si_sdri, stoii, estoii, pesq_wbi  the improvement over the mixture (model -
                  floor), with ``<key>_se``, the standard error of its mean
  cos_attended / cos_unattended     mean frame cosine of the predicted latents
                  with the attended / unattended talker's latents
  si_sdr_unattended                 SI-SDR of the prediction vs the unattended talker
  id_latent, id_si_sdr              attended-talker identification: 1 when the
                  prediction is closer to the attended talker (when
                  ``unattended_<split>.h5`` exists, e.g. the synthetic data)
  cos_mix_attended / cos_mix_unattended, id_latent_mixture
                  the same for the mixture's own quantized latents (the "copy the
                  input" baseline, EEG-free: a model must beat its id_latent_mixture;
                  quantized whatever model.mix_input, like the targets)
  cue_r_*, id_cue_true_envelopes, stream_r_*, id_oracle_cue
                  with model.selector: how good the decoded EEG envelope and the
                  separated streams are, each on its own (``selector_diagnostics``)

Next to the metrics, ``metrics.json`` reports the dataset's evaluation protocol
(``protocol``: within-trial, trial-held-out, subject-held-out, ...) when the data
root's ``manifest.json`` has one (``python -m neurocodec_jax.data.prepare`` writes
it): scores under different protocols are not comparable.

Ablations (``--noise_cue``, ``--shuffle_eeg``) replace the EEG the model sees,
through :class:`EEGAblation`, not just a flag. The diagnostic ``--oracle_cue``
(selector models) gives the selector the attended talker's true envelope: the
quality of the separation itself, with perfect attention decoding.

The run (codec, codes, source, models) is ``neurocodec_jax.run``'s; only the
generator is read from the checkpoint; the per-example metrics are validation's
(``neurocodec_jax.metrics``).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os

import numpy as np
from scipy import signal
from tqdm import tqdm

from neurocodec_jax.data import atomic, eval_dataset, find_split_files, open_split
from neurocodec_jax.metrics import make_metrics
from neurocodec_jax.run import Run, build_run
from neurocodec_jax.train import steps

ABLATIONS = ("none", "noise_cue", "shuffle_eeg")
# Diagnostics beside the ablations: "oracle_cue", the selector choosing by the attended
# talker's true envelope (perfect attention decoding; metrics.make_metrics's cue);
# "oracle_norm", the output decoded at the attended talker's frame norms (its norm).
DIAGNOSTICS = ("oracle_cue", "oracle_norm")

# The per-example metrics evaluation writes: per_example.csv's columns after index and
# subject, before the perceptual ones, in this order (those the split's fields allow).
COLUMNS = ("cos_attended", "cos_mix_attended", "cos_mix_unattended", "cos_unattended",
           "cue_r_attended", "cue_r_unattended", "id_cue_true_envelopes", "id_oracle_cue",
           "latent_loss", "si_sdr", "si_sdr_mixture", "si_sdr_oracle", "si_sdr_unattended",
           "stream_r_other", "stream_r_own")

# The output-quality metrics, each reported for the model, the floor and the ceiling;
# the improvement's key is the metric's with an "i" appended (si_sdri, stoii, ...).
QUALITY = ("si_sdr", "stoi", "estoi", "pesq_wb")
REFERENCES = ("mixture", "oracle")


# --------------------------------------------------------------- ablations ----

class EEGAblation:
  """A source whose ``eeg`` field is replaced: matched noise or another trial's EEG.

  ``noise_cue``: Gaussian noise with each channel's mean and std (per trial,
  over time) — the seed's ablation, made per channel as its README says.
  ``shuffle_eeg``: each example gets the EEG of another trial (a random
  derangement), a stronger control: real EEG, wrong stimulus. The EEG's subject goes
  with it (a per-subject model decodes it as its own subject's).
  """

  def __init__(self, source, mode: str, seed: int = 0):
    if mode not in ABLATIONS:
      raise ValueError(f"ablation must be one of {ABLATIONS}, got {mode!r}.")
    self.source, self.mode, self.seed = source, mode, seed
    n = len(source)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # Derangement: shift a random permutation by one position.
    self.partner = np.empty(n, np.int64)
    self.partner[perm] = np.roll(perm, 1) if n > 1 else perm

  def __len__(self):
    return len(self.source)

  def __getitem__(self, index):
    ex = dict(self.source[index])
    if self.mode == "noise_cue":
      eeg = ex["eeg"]
      rng = np.random.default_rng([self.seed, int(index)])
      mean, std = eeg.mean(1, keepdims=True), eeg.std(1, keepdims=True)
      ex["eeg"] = (mean + std * rng.standard_normal(eeg.shape)).astype(np.float32)
    elif self.mode == "shuffle_eeg":
      partner = self.source[int(self.partner[index])]
      ex["eeg"] = partner["eeg"]
      if "subject" in ex:
        ex["subject"] = partner["subject"]
    return ex


# ----------------------------------------------------------------- metrics ----

def perceptual_metrics(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> dict:
  """PESQ (wide band, at 16 kHz), STOI and ESTOI of one pair of ``[T]`` signals."""
  from pesq import pesq  # pylint: disable=g-import-not-at-top
  from pystoi import stoi  # pylint: disable=g-import-not-at-top
  g = math.gcd(sample_rate, 16000)
  ref16 = signal.resample_poly(reference, 16000 // g, sample_rate // g)
  est16 = signal.resample_poly(estimate, 16000 // g, sample_rate // g)
  try:
    pesq_wb = float(pesq(16000, ref16, est16, "wb"))
  except Exception as e:  # pylint: disable=broad-except  (silence, too short)
    logging.warning("PESQ undefined for this pair (%s); recorded as NaN.", e)
    pesq_wb = float("nan")
  return dict(pesq_wb=pesq_wb,
              stoi=float(stoi(reference, estimate, sample_rate, extended=False)),
              estoi=float(stoi(reference, estimate, sample_rate, extended=True)))


def summarize(rows: list[dict]) -> dict:
  """Means over examples (NaN-aware), the improvements over the mixture with their
  standard errors, and the identification rates."""
  keys = [k for k in rows[0] if k not in ("index", "subject")]
  out = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
  for k in QUALITY:
    if k in rows[0] and f"{k}_mixture" in rows[0]:
      d = np.array([r[k] - r[f"{k}_mixture"] for r in rows], np.float64)
      d = d[np.isfinite(d)]
      out[f"{k}i"] = float(d.mean()) if len(d) else float("nan")
      out[f"{k}i_se"] = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
  if "cos_unattended" in rows[0]:
    out["id_latent"] = float(np.mean([r["cos_attended"] > r["cos_unattended"] for r in rows]))
    out["id_si_sdr"] = float(np.mean([r["si_sdr"] > r["si_sdr_unattended"] for r in rows]))
    out["id_latent_mixture"] = float(np.mean([r["cos_mix_attended"] > r["cos_mix_unattended"]
                                              for r in rows]))
  return out


def quality_table(metrics: dict) -> dict:
  """``{"floor" | "model" | "ceiling": {metric: mean}, "improvement": {metric + "i":
  {"mean", "se"}}}`` from summarized metrics (those present)."""
  rows = dict(floor="_mixture", model="", ceiling="_oracle")
  table = {name: {k: metrics[k + suffix] for k in QUALITY if k + suffix in metrics}
           for name, suffix in rows.items()}
  table["improvement"] = {f"{k}i": dict(mean=metrics[f"{k}i"], se=metrics[f"{k}i_se"])
                          for k in QUALITY if f"{k}i" in metrics}
  return table


def format_quality(table: dict) -> str:
  """The floor / model / ceiling rows and the improvements as text."""
  keys = [k for k in QUALITY if k in table["model"]]
  lines = [f"{'':<28}" + "".join(f"{k:>10}" for k in keys)]
  names = dict(floor="floor: the mixture", model="model",
               ceiling="ceiling: codec oracle")
  for row, label in names.items():
    lines.append(f"{label:<28}" + "".join(f"{table[row].get(k, float('nan')):>10.3f}"
                                          for k in keys))
  imp = table["improvement"]
  lines.append(f"{'improvement (model - floor)':<28}" + "".join(
      f"{imp[k + 'i']['mean']:>+7.3f}" + f"{'':>3}" if k + "i" in imp else f"{'':>10}"
      for k in keys))
  lines.append(f"{'  standard error':<28}" + "".join(
      f"{imp[k + 'i']['se']:>10.3f}" if k + "i" in imp else f"{'':>10}" for k in keys))
  return "\n".join(lines)


def quality_verdict(metrics: dict) -> str:
  """One line: is the output better than the mixture it was given? "Better" only when
  both SI-SDR and STOI improve by more than two standard errors."""
  better = all(metrics[f"{k}i"] > 2 * metrics[f"{k}i_se"] for k in ("si_sdr", "stoi"))
  gains = (f"SI-SDRi {metrics['si_sdri']:+.2f} dB (± {metrics['si_sdri_se']:.2f}), "
           f"STOI {metrics['stoii']:+.3f} (± {metrics['stoii_se']:.3f})")
  levels = ", ".join(f"{name} {metrics['stoi' + suffix]:.3f}" for name, suffix in
                     (("floor STOI", "_mixture"), ("model", ""), ("ceiling", "_oracle")))
  return f"output {'better' if better else 'NOT better'} than the mixture: {gains}; {levels}"


def compare(normal_path: str, ablation_path: str) -> str:
  """A table of each metric under both runs and the drop (normal - ablation)."""
  a, b = (json.load(open(p)) for p in (normal_path, ablation_path))
  lines = [f"{'metric':<20}{a['ablation']:>12}{b['ablation']:>14}{'drop':>10}"]
  for k, v in a["metrics"].items():
    if k in b["metrics"] and not k.endswith("_se"):
      w = b["metrics"][k]
      lines.append(f"{k:<20}{v:>12.4f}{w:>14.4f}{v - w:>10.4f}")
  if "quality" in a:
    lines += ["", f"output quality vs the attended talker ({a['ablation']}):",
              format_quality(a["quality"])]
  return "\n".join(lines)


def compare_decoders(per_example_csv: str, linear: dict) -> dict:
  """The model's EEG decoder against the linear baseline on the same trials, both with
  perfectly separated talkers: identification of each, their paired difference
  (model - linear) with its standard error, the discordant trials (right by one
  decoder only) and McNemar's exact two-sided p-value on them.

  ``per_example_csv``: an evaluation's per-example rows (``id_cue_true_envelopes``);
  ``linear``: :func:`linear_baseline`'s result on that split (its ``per_trial``, in
  trial order).
  """
  with open(per_example_csv) as f:
    rows = list(csv.DictReader(f))
  lin = np.asarray(linear["per_trial"], np.float64)
  if not rows or "id_cue_true_envelopes" not in rows[0]:
    raise ValueError(f"{per_example_csv}: no 'id_cue_true_envelopes' column (a model "
                     f"with a selector, evaluated with the unattended talker, writes it).")
  model = {int(r["index"]): float(r["id_cue_true_envelopes"]) for r in rows}
  if sorted(model) != list(range(len(lin))):
    raise ValueError(f"{per_example_csv}: trials {min(model)}..{max(model)} ({len(model)}) "
                     f"are not the linear baseline's 0..{len(lin) - 1}.")
  ours = np.asarray([model[i] for i in range(len(lin))])
  d, n = ours - lin, len(lin)
  only_ours, only_linear = int(np.sum(d > 0)), int(np.sum(d < 0))
  k, m = min(only_ours, only_linear), only_ours + only_linear
  p = min(1.0, 2 * sum(math.comb(m, j) for j in range(k + 1)) / 2 ** m) if m else 1.0
  return dict(model=float(ours.mean()), linear=float(lin.mean()), n=n,
              difference=float(d.mean()),
              difference_se=float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
              model_only=only_ours, linear_only=only_linear, mcnemar_p=p)


def format_decoder_pairing(c: dict, other: str = "linear") -> str:
  """One line of :func:`compare_decoders`'s result (``other``: the decoder it paired
  the model with)."""
  return (f"the same trials paired: model - {other} {100 * c['difference']:+.1f} ± "
          f"{100 * c['difference_se']:.1f} points; right by the model only on "
          f"{c['model_only']}, by the {other} decoder only on {c['linear_only']} "
          f"(McNemar p = {c['mcnemar_p']:.2g})")


# ----------------------------------------------------------------- samples ----

SPEC_FLOOR_DB = -120.0


def spectrogram_db(x, sample_rate: int):
  """``(freqs, times, power dB [freqs, times])`` with silence at the floor, not -inf.

  Exact zeros (the synthetic talkers' pauses) give log(0) = -inf, which
  matplotlib leaves blank; clamping the power puts them at the floor colour.
  """
  freqs, times, power = signal.spectrogram(np.asarray(x, np.float64), fs=sample_rate,
                                           window="hann", nperseg=512, noverlap=384)
  return freqs, times, 10 * np.log10(np.maximum(power, 10 ** (SPEC_FLOOR_DB / 10)))


def write_sample(out_dir: str, i: int, noisy, pred, clean, sample_rate: int, row: dict):
  """``input_noisy_i.wav``, ``prediction_i.wav``, ``target_clean_i.wav``, plot."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  signals = dict(input_noisy=noisy, prediction=pred, target_clean=clean)
  for name, x in signals.items():
    sf.write(os.path.join(out_dir, f"{name}_{i}.wav"), np.asarray(x, np.float32), sample_rate)
  fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True, sharey=True)
  for ax, (name, x) in zip(axes, signals.items()):
    freqs, times, db = spectrogram_db(x, sample_rate)
    ax.pcolormesh(times, freqs, db, cmap="magma", vmin=SPEC_FLOOR_DB, vmax=db.max(),
                  shading="auto")
    ax.set_ylabel("Hz")
    ax.set_title(name)
  axes[-1].set_xlabel("seconds")
  fig.suptitle(f"example {row['index']}: SI-SDR {row['si_sdr']:.2f} dB, "
               f"PESQ {row['pesq_wb']:.2f}, STOI {row['stoi']:.3f}")
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, f"inference_plot_{i}.png"), dpi=80)
  plt.close(fig)


# -------------------------------------------------------------------- run ----

def dataset_protocol(root: str) -> dict | None:
  """The ``protocol`` entry of ``<root>/manifest.json`` with the dataset's name, or
  None when there is no manifest or it names no protocol (synthetic data)."""
  try:
    with open(os.path.join(root, "manifest.json")) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    logging.warning("Cannot read %s/manifest.json (%s): no protocol reported.", root, e)
    return None
  if not isinstance(manifest, dict) or not isinstance(manifest.get("protocol"), dict):
    return None
  return dict(manifest["protocol"], dataset=manifest.get("dataset"))


def evaluate(config, *, workdir: str | None = None, checkpoint: str | None = None,
             split: str = "test", ablation: str = "none", out_dir: str | None = None,
             num_samples: int = 0, which: str = "best", perceptual: bool = True,
             reuse: Run | None = None) -> dict:
  """Evaluates a checkpoint on ``split``; writes metrics.json, per_example.csv, samples.

  ``reuse``: an earlier run of this process (a result's ``"run"``) whose codec, models
  and compiled programs to share where they fit (``run.build_run``).
  """
  fields = steps.mix_fields(config) + ["clean_codes", "eeg", "clean", "noisy", "subject", "index"]
  if "unattended" in find_split_files(config.root, split):
    fields += ["unattended", "unattended_codes"]
  if ablation not in ABLATIONS + DIAGNOSTICS:
    raise ValueError(f"ablation must be one of {ABLATIONS + DIAGNOSTICS}, got {ablation!r}.")
  run = build_run(config, {split: fields}, reuse=reuse)
  state, restored_from = run.restore_generator(workdir=workdir, checkpoint=checkpoint,
                                               which=which)
  # Cosines and loss against the codes; the floor and the ceiling on the same trials.
  metrics = make_metrics(run, target="quantized", references=True,
                         cue="oracle" if ablation == "oracle_cue" else "eeg",
                         norm="oracle" if ablation == "oracle_norm" else "model")
  source = run.sources[split]
  data = EEGAblation(source, ablation, seed=config.seed) if ablation in ABLATIONS[1:] else source
  floor = config.model.mask_floor
  kind = config.model.output_waveform
  masked = ("_masked" + (f"_floor{floor:g}" if floor else "") if kind == "mixture_mask"
            else "_refined" if kind == "refined_mask" else "")
  unsure = (config.model.unsure_margin, config.model.unsure_mix)
  if masked and unsure[0] > 0:
    masked += f"_unsure{unsure[0]:g}x{unsure[1]:g}"
  out_dir = out_dir or os.path.join(workdir or os.path.dirname(checkpoint),
                                    "eval", f"{split}_{ablation}{masked}")
  os.makedirs(out_dir, exist_ok=True)
  sr = config.codec.arch.sample_rate
  rows, written = [], 0
  for batch in tqdm(eval_dataset(data, run.local_batch), desc=f"eval {split} ({ablation})",
                    unit="batch"):
    out = metrics(state, batch)
    for j in range(len(batch["index"])):
      row = dict(index=int(batch["index"][j]), subject=int(batch["subject"][j]))
      row.update({k: float(out[k][j]) for k in COLUMNS if k in out})
      if perceptual:
        clean = batch["clean"][j, 0]
        row.update(perceptual_metrics(clean, out["wave"][j], sr))
        for name, est in (("mixture", batch["noisy"][j, 0]), ("oracle", out["oracle_wave"][j])):
          row.update({f"{k}_{name}": v for k, v in perceptual_metrics(clean, est, sr).items()})
      rows.append(row)
      if written < num_samples:
        write_sample(out_dir, written, batch["noisy"][j, 0], out["wave"][j],
                     batch["clean"][j, 0], sr, dict(row, pesq_wb=row.get("pesq_wb", math.nan),
                                                    stoi=row.get("stoi", math.nan)))
        written += 1
  summary = summarize(rows)
  result = dict(split=split, ablation=ablation, checkpoint=restored_from, n=len(rows),
                output_waveform=config.model.output_waveform, metrics=summary,
                mask_floor=floor if masked else None,
                refiner=config.model.refiner if kind == "refined_mask" else None,
                unsure_margin=unsure[0] if masked else None,
                unsure_mix=unsure[1] if masked and unsure[0] > 0 else None,
                quality=quality_table(summary))
  protocol = dataset_protocol(config.root)
  if protocol is not None:
    result["protocol"] = protocol
  subjects = sorted({r["subject"] for r in rows})
  if subjects != [-1]:
    result["per_subject"] = {str(s): summarize([r for r in rows if r["subject"] == s])
                             for s in subjects}
  atomic.write_text(os.path.join(out_dir, "per_example.csv"), _csv(rows))
  atomic.write_text(os.path.join(out_dir, "metrics.json"), json.dumps(result, indent=2))
  return dict(result, out_dir=out_dir, run=run)


def decoder_arrays(config, split: str):
  """What a linear decoder reads from ``split``: EEG ``[trials, C, T]``, the attended
  and unattended talkers' envelopes at the EEG rate ``[trials, T]`` and the subjects
  ``[trials]``."""
  from neurocodec_jax import linear_decoder  # pylint: disable=g-import-not-at-top
  source = open_split(config, split, fields=("eeg", "clean", "unattended", "subject"))
  rows = [source[i] for i in range(len(source))]
  eeg = np.stack([r["eeg"] for r in rows])
  env = lambda k: linear_decoder.envelopes(np.stack([r[k][0] for r in rows]),
                                           config.codec.arch.sample_rate,
                                           config.data.eeg_rate, eeg.shape[-1])
  return eeg, env("clean"), env("unattended"), np.array([int(r["subject"]) for r in rows])


def linear_baseline(config, split: str = "test", out_dir: str | None = None) -> dict:
  """The classic linear backward decoder (:mod:`neurocodec_jax.linear_decoder`) on this
  dataset: fit on the train split, ridge chosen on val, identification on ``split``
  with perfectly separated talkers (their true envelopes); on the val split itself,
  cross-fitted (``LinearDecoder.cross_fit_score``: no trial scored by a ridge chosen on
  it). Needs the unattended talker's audio. ``result["forward"]``: the same for the
  linear forward decoder (``linear_decoder.ForwardDecoder``, fit on both talkers).
  Writes ``linear_baseline.json`` to ``out_dir`` when given."""
  from neurocodec_jax import linear_decoder  # pylint: disable=g-import-not-at-top
  d = config.data
  names = dict(train=d.train_split, val=d.val_split, test=d.test_split)
  splits = {names["train"], names["val"], split}
  for s in splits:
    if "unattended" not in find_split_files(config.root, s):
      raise ValueError(f"{config.root}: the linear baseline needs unattended_{s}.h5 (the "
                       f"competing talker's audio).")
  train, val = decoder_arrays(config, names["train"]), decoder_arrays(config, names["val"])
  test = val if split == names["val"] else decoder_arrays(config, split)

  def scored(model):
    val_scores = model.choose(*val[:3])
    result = (model.cross_fit_score(*test[:3]) if split == names["val"] else
              model.score(*test[:3]))
    per_trial = result["per_trial"]
    result.update(per_trial=per_trial.tolist(), split=split,
                  val_identification={str(k): v for k, v in val_scores.items()},
                  per_subject={str(s): float(per_trial[test[3] == s].mean())
                               for s in sorted(set(test[3].tolist()))})
    return result

  result = scored(linear_decoder.LinearDecoder(d.eeg_rate).fit(train[0], train[1]))
  result["forward"] = scored(linear_decoder.ForwardDecoder(d.eeg_rate).fit(*train[:3]))
  if out_dir:
    os.makedirs(out_dir, exist_ok=True)
    atomic.write_text(os.path.join(out_dir, "linear_baseline.json"),
                      json.dumps(result, indent=2))
  return result


def _csv(rows: list[dict]) -> str:
  import io  # pylint: disable=g-import-not-at-top
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


