"""Does a latent frame attend to the EEG recorded at the same time?

  python scripts/attention_maps.py --workdir runs/demo [--split val --n 64 --which latest]

Runs a trained model on ``--n`` trials of ``--split`` with the true EEG and records
every cross-attention layer's weights (flax's ``sow_weights``, switched on by a
method interceptor: the model is unchanged). Each weight links latent frame i (the
audio up to the end of frame i) to EEG feature j (EEG samples j + first .. j + last,
``EEGEncoder.receptive_field``); its lag is the EEG feature's centre time minus the
frame's end time. The cortical response to sound arrives 50-250 ms after it
(the synthetic TRF's P1/N1/P2), so a frame that uses "its" EEG attends at lags of
about +50..+250 ms. Per layer, the script prints the attention-weighted mean lag,
the mass in that window, and the same for uniform attention (what a layer that ignores
time would give), and writes ``<workdir>/attention/attention_<split>.json`` and a plot
of the mass per 50 ms lag bin.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RESPONSE_WINDOW = (0.05, 0.25)     # s after the sound: the synthetic TRF's P1..P2
BIN = 0.05                          # s, the plot's lag bins


def attention_weights(model, variables, z_mix, eeg) -> list[np.ndarray]:
  """Per cross-attention layer, ``[batch, heads, frames, eeg_features]`` weights."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top

  def sow_weights(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.MultiHeadDotProductAttention) and \
        context.method_name == "__call__":
      kwargs = dict(kwargs, sow_weights=True)
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(sow_weights):
    _, state = model.apply(variables, z_mix, eeg, train=False, mutable=["intermediates"])
  found = []

  def walk(tree, path=""):
    for k, v in tree.items():
      if k == "attention_weights":
        found.append((path, np.asarray(v[0])))
      elif isinstance(v, dict):
        walk(v, f"{path}/{k}")
  walk(state["intermediates"])
  # Transformer backbones have self-attention too: keep the EEG cross-attention.
  return [w for path, w in sorted(found) if "/attn/" in path + "/"]


def lag_seconds(n_frames: int, n_eeg: int, frame_seconds: float, eeg_rate: float,
                receptive_field: tuple[int, int]) -> np.ndarray:
  """``[frames, eeg_features]``: EEG feature centre time minus latent frame end time."""
  first, last = receptive_field
  eeg_centre = (np.arange(n_eeg) + (first + last) / 2) / eeg_rate
  frame_end = (np.arange(n_frames) + 1) * frame_seconds
  return eeg_centre[None, :] - frame_end[:, None]


def summarize(weights: np.ndarray, lags: np.ndarray) -> dict:
  """Mean lag and response-window mass of ``weights [b, h, F, T']`` vs uniform."""
  w = weights.mean(axis=(0, 1))                           # [F, T'], rows sum to 1
  w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
  uniform = np.full_like(w, 1.0 / w.shape[-1])
  in_window = (lags >= RESPONSE_WINDOW[0]) & (lags <= RESPONSE_WINDOW[1])
  per_head = weights.mean(axis=0)                         # [h, F, T']
  return dict(
      mean_lag_s=float((w * lags).sum(-1).mean()),
      mass_in_response_window=float((w * in_window).sum(-1).mean()),
      uniform_mean_lag_s=float((uniform * lags).sum(-1).mean()),
      uniform_mass_in_response_window=float((uniform * in_window).sum(-1).mean()),
      # How peaked the attention is: entropy relative to uniform (1 = uniform).
      relative_entropy=float(np.mean(-(w * np.log(w + 1e-12)).sum(-1)) / np.log(w.shape[-1])),
      per_head_mass_in_response_window=[
          float((h / np.maximum(h.sum(-1, keepdims=True), 1e-12) * in_window).sum(-1).mean())
          for h in per_head])


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="a training run's directory")
  p.add_argument("--split", default="val")
  p.add_argument("--n", type=int, default=64, help="trials to average over")
  p.add_argument("--which", default="latest", choices=("best", "latest"))
  args = p.parse_args(argv)

  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import codec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models.eeg_encoder import EEGEncoder  # pylint: disable=g-import-not-at-top
  import codec_bridge  # pylint: disable=g-import-not-at-top,unused-import  (the codec loader)
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top

  config = load_run_config(args.workdir)
  fields = steps.mix_fields(config) + ["clean_codes", "eeg"]
  run = build_run(config, {args.split: fields})
  models, source = run.models, run.sources[args.split]
  state, restored = run.restore_generator(workdir=args.workdir, which=args.which)
  n = min(args.n, len(source))
  batch = {k: np.stack([np.asarray(source[i][k]) for i in range(n)]) for k in fields}
  z_mix = steps.mix_latent(run.frozen["quantizer"], batch, config.model.mix_input)
  variables = {"params": state["g"]["params"], "batch_stats": state["g"]["batch_stats"]}
  layers = attention_weights(models.generator, variables, z_mix, jnp.asarray(batch["eeg"]))
  if not layers:
    raise SystemExit("no cross-attention weights recorded (unexpected model structure)")
  _, _, n_frames, n_eeg = layers[0].shape
  lags = lag_seconds(n_frames, n_eeg, codec.frame_seconds(config.codec.arch),
                     config.data.eeg_rate, EEGEncoder.receptive_field(config.model.eeg_kernel))
  result = dict(workdir=args.workdir, checkpoint=restored, split=args.split, n=n,
                response_window_s=RESPONSE_WINDOW,
                layers=[summarize(w, lags) for w in layers])
  out_dir = os.path.join(args.workdir, "attention")
  os.makedirs(out_dir, exist_ok=True)
  from neurocodec_jax.data import atomic  # pylint: disable=g-import-not-at-top
  atomic.write_text(os.path.join(out_dir, f"attention_{args.split}.json"),
                    json.dumps(result, indent=2))
  _plot(layers, lags, os.path.join(out_dir, f"attention_{args.split}.png"))
  for i, r in enumerate(result["layers"]):
    print(f"layer {i}: mean lag {1e3 * r['mean_lag_s']:+.0f} ms (uniform "
          f"{1e3 * r['uniform_mean_lag_s']:+.0f}), mass in +50..+250 ms "
          f"{r['mass_in_response_window']:.3f} (uniform {r['uniform_mass_in_response_window']:.3f}), "
          f"entropy {r['relative_entropy']:.3f} of uniform")
  return 0


def _plot(layers, lags, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  edges = np.arange(np.floor(lags.min() / BIN) * BIN, lags.max() + BIN, BIN)
  fig, ax = plt.subplots(figsize=(7, 3.5))
  for i, w in enumerate(layers):
    w = w.mean(axis=(0, 1))
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-12)
    mass, _ = np.histogram(lags.ravel(), bins=edges, weights=w.ravel() / w.shape[0])
    ax.plot(edges[:-1] + BIN / 2, mass, label=f"layer {i}")
  uniform, _ = np.histogram(lags.ravel(), bins=edges, weights=np.full(lags.size, 1.0 / lags.size))
  ax.plot(edges[:-1] + BIN / 2, uniform, "k--", label="uniform")
  ax.axvspan(*RESPONSE_WINDOW, color="grey", alpha=0.2, label="cortical response")
  ax.set_xlabel("EEG time - latent frame time (s)")
  ax.set_ylabel("attention mass per 50 ms")
  ax.legend(fontsize=7)
  fig.tight_layout()
  tmp = path + ".tmp.png"
  fig.savefig(tmp, dpi=120)
  plt.close(fig)
  os.replace(tmp, path)


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
