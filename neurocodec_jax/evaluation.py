"""Evaluation behind ``evaluate.py``: metrics, EEG ablations, samples, comparisons.

Per example (``per_example.csv``) and averaged (``metrics.json``, also per
subject when subjects are known):

  latent_loss     the training latent loss (cosine when normalize_latents)
  si_sdr          dB, decoded re-quantized prediction vs the clean target,
                  aligned by the cross-correlation lag as the original
  pesq_wb         wide-band PESQ on 16 kHz resampled audio (NaN if undefined)
  stoi, estoi     (extended) short-time objective intelligibility
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
through :class:`EEGAblation`, not just a flag.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import signal
from tqdm import tqdm

from neurocodec_jax import codec, losses
from neurocodec_jax.data import atomic, eval_dataset, find_split_files
from neurocodec_jax.train import steps
from neurocodec_jax.train.checkpoint import CheckpointError, Checkpoints, reason

ABLATIONS = ("none", "noise_cue", "shuffle_eeg")


# ----------------------------------------------------------------- config ----

def load_run_config(workdir: str):
  """The config a run saved in ``<workdir>/config.json``, as a locked ConfigDict."""
  from configs import neurocodec  # pylint: disable=g-import-not-at-top
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir? "
                            f"Otherwise pass --checkpoint and --config.")
  with open(path) as f:
    saved = json.load(f)
  config = neurocodec.get_config(saved.get("preset", "cocktail"))
  _update(config, saved, path)
  # A key the saved run lacks is an option added since: that run trained without it,
  # i.e. with the option's base default (the original behaviour), not the preset's.
  base = neurocodec.get_config("cocktail")
  for key in _absent(config, saved):
    node, base_node = config, base
    *parents, leaf = key.split(".")
    for p in parents:
      node, base_node = node[p], base_node[p]
    if node[leaf] != base_node[leaf]:
      logging.warning("%s has no %r (a run from before that option): using its base "
                      "default %r, not the preset's %r.", path, key, base_node[leaf], node[leaf])
      node[leaf] = base_node[leaf]
  return config


def _absent(config, values: dict, prefix: str = "") -> list[str]:
  """Dotted keys of ``config`` missing from the saved ``values`` (``arch`` is whole)."""
  out = []
  for key in config.keys():
    current = config[key]
    if key not in values:
      out.append(prefix + key)
    elif hasattr(current, "keys") and isinstance(values[key], dict) and key != "arch":
      out += _absent(current, values[key], prefix + key + ".")
  return out


def _update(config, values: dict, path: str, prefix: str = ""):
  for key, value in values.items():
    if key not in config:
      raise KeyError(f"{path}: unknown config key {prefix + key!r}.")
    current = config[key]
    if hasattr(current, "keys") and isinstance(value, dict):
      if key == "arch":            # a plain dict field: replace whole
        config[key] = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
      else:
        _update(current, value, path, prefix + key + ".")
    else:
      config[key] = _as_tuple(value) if isinstance(current, tuple) else value


def _as_tuple(value):
  return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


# --------------------------------------------------------------- ablations ----

class EEGAblation:
  """A source whose ``eeg`` field is replaced: matched noise or another trial's EEG.

  ``noise_cue``: Gaussian noise with each channel's mean and std (per trial,
  over time) — the seed's ablation, made per channel as its README says.
  ``shuffle_eeg``: each example gets the EEG of another trial (a random
  derangement), a stronger control: real EEG, wrong stimulus.
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
      ex["eeg"] = self.source[int(self.partner[index])]["eeg"]
    return ex


# ----------------------------------------------------------------- metrics ----

def make_predict_fn(config, models: steps.Models, has_unattended: bool):
  """Jitted per-example latent metrics and the decoded re-quantized waveform."""
  n_q = config.codec.n_quantizers_eval

  selector = config.model.selector != "none" and has_unattended

  @jax.jit
  def predict(state, batch):
    if selector:
      z_pred, _, aux = steps.predict(models, state, batch, return_aux=True)
    else:
      z_pred, _ = steps.predict(models, state, batch)
    z_tgt = codec.codes_to_z(models.qparams, batch["clean_codes"])
    wave = models.decode(codec.requantize(models.qparams, z_pred, n_q))
    out = dict(latent_loss=steps.per_example(
        lambda p, t: losses.latent_loss(p, t, config.normalize_latents), z_pred, z_tgt),
               si_sdr=losses.si_sdr(batch["clean"], wave, align=True),
               cos_attended=losses.frame_cosine(z_pred, z_tgt), wave=wave[:, 0])
    if has_unattended:
      z_un = codec.codes_to_z(models.qparams, batch["unattended_codes"])
      out["cos_unattended"] = losses.frame_cosine(z_pred, z_un)
      z_mix = codec.codes_to_z(models.qparams, batch["noisy_codes"])
      out["cos_mix_attended"] = losses.frame_cosine(z_mix, z_tgt)
      out["cos_mix_unattended"] = losses.frame_cosine(z_mix, z_un)
      out["si_sdr_unattended"] = losses.si_sdr(batch["unattended"], wave, align=True)
      if selector:
        out.update(selector_diagnostics(config, aux, batch, z_tgt, z_un))
    return out

  return predict


def selector_diagnostics(config, aux: dict, batch: dict, z_att, z_unatt) -> dict:
  """Where a separate-then-select model loses trials: the cue or the separation.

  Per example, with the talkers' true frame-rate envelopes (from their audio):
  ``cue_r_attended`` / ``cue_r_unattended``, the decoded EEG envelope's Pearson
  correlation with each talker, and ``id_cue_true_envelopes`` (1 when it is closer
  to the attended one: the identification a PERFECT separation would give with this
  EEG decoder); ``stream_r_own`` / ``stream_r_other``, the stream envelopes'
  correlation with their own talker and with the other one (assignment by latent
  cosine), and ``id_oracle_cue`` (1 when selecting by the TRUE attended envelope
  picks the stream closer to the attended talker: the identification a perfect cue
  would give with this separation).
  """
  pear = losses.envelope.pearson
  streams, stream_env, cue = aux["streams"], aux["stream_env"], aux["cue"]
  env_att, env_unatt = steps.talker_envelopes(config, batch, stream_env.shape[1])
  cos_att = jnp.stack([losses.frame_cosine(streams[:, k], z_att) for k in (0, 1)], -1)     # [b, 2]
  cos_un = jnp.stack([losses.frame_cosine(streams[:, k], z_unatt) for k in (0, 1)], -1)
  att_stream = jnp.argmax(cos_att - cos_un, axis=-1)                               # [b]
  r_att = jnp.stack([pear(stream_env[..., k], env_att) for k in (0, 1)], -1)        # [b, 2]
  r_un = jnp.stack([pear(stream_env[..., k], env_unatt) for k in (0, 1)], -1)
  take = lambda x, k: jnp.take_along_axis(x, k[:, None], axis=-1)[:, 0]
  other = 1 - att_stream
  picked = jnp.argmax(r_att, axis=-1)
  r_cue_att, r_cue_un = pear(cue, env_att), pear(cue, env_unatt)
  return dict(cue_r_attended=r_cue_att, cue_r_unattended=r_cue_un,
              id_cue_true_envelopes=(r_cue_att > r_cue_un).astype(jnp.float32),
              stream_r_own=(take(r_att, att_stream) + take(r_un, other)) / 2,
              stream_r_other=(take(r_un, att_stream) + take(r_att, other)) / 2,
              id_oracle_cue=(take(cos_att, picked) > take(cos_un, picked)).astype(jnp.float32))


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
  """Means over examples (NaN-aware) and the identification rates."""
  keys = [k for k in rows[0] if k not in ("index", "subject")]
  out = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
  if "cos_unattended" in rows[0]:
    out["id_latent"] = float(np.mean([r["cos_attended"] > r["cos_unattended"] for r in rows]))
    out["id_si_sdr"] = float(np.mean([r["si_sdr"] > r["si_sdr_unattended"] for r in rows]))
    out["id_latent_mixture"] = float(np.mean([r["cos_mix_attended"] > r["cos_mix_unattended"]
                                              for r in rows]))
  return out


def compare(normal_path: str, ablation_path: str) -> str:
  """A table of each metric under both runs and the drop (normal - ablation)."""
  a, b = (json.load(open(p)) for p in (normal_path, ablation_path))
  lines = [f"{'metric':<20}{a['ablation']:>12}{b['ablation']:>14}{'drop':>10}"]
  for k, v in a["metrics"].items():
    if k in b["metrics"]:
      w = b["metrics"][k]
      lines.append(f"{k:<20}{v:>12.4f}{w:>14.4f}{v - w:>10.4f}")
  return "\n".join(lines)


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

def restore_state(config, models: steps.Models, example: dict, *, workdir: str | None,
                  checkpoint: str | None, which: str = "best") -> tuple[Any, str]:
  """Restores the generator state from a workdir (best or latest) or a step folder.

  From a workdir, the newest readable step (an unreadable one is named in a warning
  and left in place: a training run may own the folder).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  template = steps.init_state(config, models, example, config.seed)
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), template)
  if checkpoint:
    path = os.path.join(os.path.abspath(checkpoint), "state")
    try:
      return ocp.StandardCheckpointer().restore(path, target), checkpoint
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"{checkpoint} is not a readable checkpoint of this config "
                            f"({reason(e)}).") from e
  ckpt = Checkpoints(workdir, use_async=False, writable=False)
  try:
    best = which == "best" and ckpt.best.latest_step() is not None
    manager = ckpt.best if best else ckpt.latest
    try:
      state, _ = ckpt.restore(target, best=best)
    except CheckpointError as e:
      hint = " (--which latest evaluates the latest checkpoint)" if best else ""
      raise CheckpointError(f"{e}{hint}") from None
    return state, os.path.join(str(manager.directory), str(ckpt.restored_step))
  finally:
    ckpt.close()


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
             num_samples: int = 0, which: str = "best", perceptual: bool = True) -> dict:
  """Evaluates a checkpoint on ``split``; writes metrics.json, per_example.csv, samples."""
  import codec_bridge  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import loop  # pylint: disable=g-import-not-at-top
  dac_model = codec_bridge.load_dac_from_config(config.codec)
  fields = steps.mix_fields(config) + ["clean_codes", "eeg", "clean", "noisy", "subject", "index"]
  has_unattended = "unattended" in find_split_files(config.root, split)
  if has_unattended:
    fields += ["unattended", "unattended_codes"]
  source = loop.codes_and_sources(config, dac_model, {split: fields})[split]
  # The full model set (discriminator included) so the state matches the checkpoint.
  models = loop.build_models(config, dac_model, need_decoder=True)
  state, restored_from = restore_state(config, models, loop._first_example(source),
                                       workdir=workdir, checkpoint=checkpoint, which=which)
  predict = make_predict_fn(config, models, has_unattended)
  data = EEGAblation(source, ablation, seed=config.seed) if ablation != "none" else source
  out_dir = out_dir or os.path.join(workdir or os.path.dirname(checkpoint),
                                    "eval", f"{split}_{ablation}")
  os.makedirs(out_dir, exist_ok=True)
  sr = config.codec.arch.sample_rate
  rows, written = [], 0
  for batch in tqdm(eval_dataset(data, config.batch_size), desc=f"eval {split} ({ablation})",
                    unit="batch"):
    device_batch = {k: jnp.asarray(v) for k, v in batch.items()
                    if k not in ("noisy", "subject", "index")}
    out = jax.device_get(predict(state, device_batch))
    for j in range(len(batch["index"])):
      row = dict(index=int(batch["index"][j]), subject=int(batch["subject"][j]))
      row.update({k: float(v[j]) for k, v in out.items() if k != "wave"})
      if perceptual:
        row.update(perceptual_metrics(batch["clean"][j, 0], out["wave"][j], sr))
      rows.append(row)
      if written < num_samples:
        write_sample(out_dir, written, batch["noisy"][j, 0], out["wave"][j],
                     batch["clean"][j, 0], sr, dict(row, pesq_wb=row.get("pesq_wb", math.nan),
                                                    stoi=row.get("stoi", math.nan)))
        written += 1
  result = dict(split=split, ablation=ablation, checkpoint=restored_from, n=len(rows),
                metrics=summarize(rows))
  protocol = dataset_protocol(config.root)
  if protocol is not None:
    result["protocol"] = protocol
  subjects = sorted({r["subject"] for r in rows})
  if subjects != [-1]:
    result["per_subject"] = {str(s): summarize([r for r in rows if r["subject"] == s])
                             for s in subjects}
  atomic.write_text(os.path.join(out_dir, "per_example.csv"), _csv(rows))
  atomic.write_text(os.path.join(out_dir, "metrics.json"), json.dumps(result, indent=2))
  result["out_dir"] = out_dir
  return result


def _csv(rows: list[dict]) -> str:
  import io  # pylint: disable=g-import-not-at-top
  buf = io.StringIO()
  writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
  writer.writeheader()
  writer.writerows(rows)
  return buf.getvalue()


