"""Extraction over a whole recording: the trained model on overlapping segments.

The model was trained on ``data.segment_seconds`` windows and its selector decides
once per window (``model.select_window="trial"``), so a recording of any length is
cut into windows of exactly that length with a hop of half a window, each window
runs as in evaluation (encode, predict, re-quantize unless
``codec.requantize_output`` is False, decode; with ``model.output_waveform=
"mixture_mask"`` the window's mixture through both decoded streams' ratio mask, refined
by ``model.refiner`` with ``"refined_mask"``), and the
output windows are overlap-added with Hann weights normalized by their sum. A recording shorter than
one window is zero-padded to it and cut back.
"""

from __future__ import annotations

import jax
import numpy as np

from neurocodec_jax import codec, mixture_mask
from neurocodec_jax.run import Run, pad_batch
from neurocodec_jax.train import steps


def window_starts(n: int, window: int, hop: int) -> list[int]:
  """Starts of windows of ``window`` samples covering ``[0, n)`` with hop ``hop``;
  the last window ends at ``n`` (one window at 0 when ``n <= window``)."""
  if n <= window:
    return [0]
  starts = list(range(0, n - window + 1, hop))
  if starts[-1] + window < n:
    starts.append(n - window)
  return starts


def segments(run: Run) -> tuple[int, int]:
  """``(audio samples, EEG samples)`` of one window, as in training."""
  config = run.config
  arch = config.codec.arch
  audio = codec.frame_count(arch, config.data.segment_seconds) * codec.hop_length(arch)
  return audio, int(round(config.data.segment_seconds * config.data.eeg_rate))


def make_window_batch(run: Run, mixture: np.ndarray, eeg: np.ndarray,
                      starts: list[int], subject: int = -1) -> dict:
  """The model's inputs for the windows at ``starts`` (audio samples): ``noisy_codes``
  (and ``noisy_latent``) from the codec, ``eeg [n, C, T_eeg]``, the windows' audio
  ``noisy [n, 1, T]``, and for per-subject models ``subject [n]`` (-1: a listener the
  model was not trained on, who gets the pooled fit)."""
  config = run.config
  n_audio, n_eeg = segments(run)
  sr, rate = config.codec.arch.sample_rate, config.data.eeg_rate
  audio = np.zeros((len(starts), 1, n_audio), np.float32)
  cue = np.zeros((len(starts), eeg.shape[0], n_eeg), np.float32)
  for i, a in enumerate(starts):
    part = mixture[a:a + n_audio]
    audio[i, 0, :len(part)] = part
    e0 = int(round(a / sr * rate))
    part = eeg[:, e0:e0 + n_eeg]
    cue[i, :, :part.shape[1]] = part
  codes, _, latent = run.codec.encode(audio)
  batch = {"noisy_codes": np.asarray(codes, np.int32), "eeg": cue, "noisy": audio}
  if steps.subject_fields(config):
    batch["subject"] = np.full(len(starts), subject, np.int32)
  if "noisy_latent" in steps.mix_fields(config):
    batch["noisy_latent"] = np.asarray(latent, np.float32)
  return batch


def _programs(run: Run):
  config, models = run.config, run.models
  n_q = config.codec.n_quantizers_eval
  with_cue = config.model.selector != "none"
  kind, power, floor = (config.model.output_waveform, config.model.mask_power,
                        config.model.mask_floor)

  @jax.jit
  def predict(state, batch, frozen):
    z, _, *aux = steps.predict(models, state, batch, frozen, return_aux=with_cue)
    latent = lambda z: codec.output_latent(frozen["quantizer"], z,
                                           config.codec.requantize_output, n_q)
    masked = with_cue and kind != "decoded"
    competing = latent(aux[0]["competing"]) if masked else None
    margin = mixture_mask.selector_margin(aux[0]["logits"]) if masked else None
    return latent(z), competing, (aux[0]["cue"] if with_cue else None), margin

  @jax.jit
  def output(decoder, refiner, z, competing, mixture, margin):
    decode = lambda z: models.decode(decoder, z)[:, 0]
    other = decode(competing) if competing is not None else None
    refine = None if models.refine is None else (
        lambda *signals: models.refine(refiner, *signals))
    wave = mixture_mask.output_waveform(kind, power, floor, decode(z), other, mixture, refine)
    if margin is not None and config.model.unsure_margin > 0:
      wave = mixture_mask.back_off(wave, mixture, margin, config.model.unsure_margin,
                                   config.model.unsure_mix)
    return wave

  return predict, output


def extract(run: Run, state: dict, mixture: np.ndarray, eeg: np.ndarray,
            subject: int = -1) -> dict:
  """The attended talker from a whole recording.

  Args:
    run: the trained run (``run.build_run`` with an ``example`` of window shape).
    state: its generator (``run.restore_generator``).
    mixture: ``[T]`` audio at the codec's rate.
    eeg: ``[C, T_eeg]`` microvolts at ``data.eeg_rate``, covering the audio.
    subject: the listener's id in the training data (``model.encoding_subjects``);
      -1, a new listener.

  Returns:
    ``{"wave": [T], "cue": [frames] or None}``: the extracted audio and, with the
    selector, the EEG-decoded envelope at the latent frame rate (overlap-added).
  """
  predict, output = run.compiled(("extract",), lambda: _programs(run))
  n_audio, _ = segments(run)
  hop = codec.hop_length(run.config.codec.arch)
  frames = n_audio // hop
  starts = window_starts(len(mixture), n_audio, (frames // 2) * hop)
  total = max(len(mixture), n_audio)
  out, weight = np.zeros(total), np.zeros(total)
  cue_out, cue_weight = np.zeros(total // hop + frames), np.zeros(total // hop + frames)
  window, frame_window = np.hanning(n_audio + 2)[1:-1], np.hanning(frames + 2)[1:-1]
  b = run.local_batch
  has_cue = False
  for i in range(0, len(starts), b):
    chunk = starts[i:i + b]
    batch = pad_batch(make_window_batch(run, mixture, eeg, chunk, subject), b)
    audio = batch.pop("noisy")[:, 0]
    z, competing, cue, margin = predict(state, batch, run.frozen)
    wave = np.asarray(output(run.frozen["decoder"], run.frozen.get("refiner"), z, competing,
                             audio, margin))[:len(chunk)]
    for j, a in enumerate(chunk):
      out[a:a + n_audio] += window * wave[j, :n_audio]
      weight[a:a + n_audio] += window
      if cue is not None:
        has_cue = True
        f0 = a // hop
        c = np.asarray(cue)[j, :frames]
        cue_out[f0:f0 + len(c)] += frame_window[:len(c)] * c
        cue_weight[f0:f0 + len(c)] += frame_window[:len(c)]
  # Every sample lies in a window whose weight there is > 0 (the Hann window without
  # its zero end points): dividing by the weight itself keeps the recording's first
  # and last samples, where one window covers them, at their level.
  ratio = lambda x, w: np.where(w > 0, x / np.where(w > 0, w, 1.0), 0.0)
  wave = ratio(out, weight)[:len(mixture)].astype(np.float32)
  n_frames = len(mixture) // hop
  cue = ratio(cue_out, cue_weight)[:n_frames] if has_cue else None
  return dict(wave=wave, cue=cue)
