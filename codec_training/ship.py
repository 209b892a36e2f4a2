"""Ship a codec trained by ``codec_training.train``: the weights file plus a measured manifest.

  python -m codec_training.ship --src runs/codec/demo \
      --out codec_bridge/weights --name demo_codec_16khz.pth [--n 32]

Copies ``<src>/weights.pth`` (DAC's own format) to ``<out>/<name>`` and writes
``<out>/manifest.json``: the command that trained it, its spec (seed, sizes, loss
weights: the ones it last trained with, as a resume may change the schedule and the
loss weights; the docs record the run's history), steps and wall time, the file's
SHA-256, and its quality on fresh held-out clips (a seed stream training never draws):
reconstruction SI-SDR, mel distance, STOI and ESTOI for single talkers and for
two-talker mixtures (``quality`` on the val clips, where recipes are chosen,
``quality_test`` on the test clips, where the chosen codec is reported), and
``latent_structure``'s additivity, id_copy and id_gate in the continuous and the
quantized latent space, and where the quantized space loses additivity: the same
measures of the quantizer's projections without the codebook rounding
(:func:`unrounded`), the cosine of the quantized latent with that unrounded one,
and the quantized additivity per number of codebooks. ``test_floors`` (the
measured values minus a margin) are
what ``tests/test_train_codec.py`` asserts. Both files are written atomically.

  python -m codec_training.ship --quality WEIGHTS [--against OTHER] [--n 32] [--split test]

only scores a weights file, shipped or a run's (means and standard errors over the
clips) and, against another, the paired difference on the same clips.

  python -m codec_training.ship --rescore WEIGHTS [--n 64]

measures a shipped file again where the measure (the held-out draw, the corpus)
changed, and rewrites its manifest's measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

from codec_bridge import loading
from codec_training import train as train_codec
from codec_bridge.frozen import FrozenDAC
from neurocodec_jax import latent_structure
from neurocodec_jax.losses import frame_cosine

# Margins below the measured values for the test floors (4 held-out clips in the
# test vs ``--n`` here: small samples scatter).
STOI_MARGIN, SI_SDR_MARGIN_DB, ADDITIVITY_MARGIN = 0.05, 2.0, 0.05


def unrounded(quantizer, z: torch.Tensor) -> torch.Tensor:
  """DAC's residual quantizer without its codebook rounding: ``[n, D, F]`` -> same.

  Each stage projects the residual down (``in_proj``) and back up (``out_proj``)
  and subtracts it; rounding to the nearest codeword in between is the only
  non-linear step, so this is a linear map of ``z``: what the quantized latent would
  be if the codebooks were infinitely fine.
  """
  out, residual = torch.zeros_like(z), z
  for stage in quantizer.quantizers:
    part = stage.out_proj(stage.in_proj(residual))
    out, residual = out + part, residual - part
  return out


def rounding_breakdown(dac_model, mix, a, b, batch: int = 16) -> dict:
  """Where the quantized latent loses additivity, on audio ``[n, T]`` triples.

  Returns ``latent_structure.structure`` of the unrounded latents, the mean frame
  cosine of the quantized with the unrounded latent (over the three signals), and
  the quantized additivity with the first 1, 2, 4, ... codebooks.
  """
  n_q = dac_model.quantizer.n_codebooks
  counts = sorted({k for k in (1, 2, 4, 6, 8, n_q) if k <= n_q})
  zu, zq = [], {k: [] for k in counts}
  with torch.no_grad():
    for x in (mix, a, b):
      x = torch.from_numpy(x)[:, None]
      parts = [dac_model.encoder(x[i:i + batch]) for i in range(0, len(x), batch)]
      e = torch.cat(parts)
      zu.append(unrounded(dac_model.quantizer, e))
      for k in counts:
        zq[k].append(dac_model.quantizer(e, n_quantizers=k)[0])
  np_ = lambda ts: [t.numpy() for t in ts]
  return dict(
      unrounded={k: round(v, 4) for k, v in latent_structure.structure(*np_(zu)).items()},
      cos_quantized_unrounded=round(float(np.mean(
          [frame_cosine(q, u).mean() for q, u in zip(np_(zq[n_q]), np_(zu))])), 4),
      quantized_additivity_by_codebooks={
          k: round(latent_structure.structure(*np_(zq[k]))["additivity"], 4) for k in counts})


def level_response(dac_model, audio: np.ndarray, gains=(1.0, 0.5, 0.25, 0.125),
                   batch: int = 16) -> dict:
  """How the latents' size follows the input level, on audio ``[n, T]``.

  For each gain, the mean frame norm of the encoder output ``z``, of its unrounded
  quantization and of the quantized latent, relative to gain 1. DAC's codebook
  lookup compares directions (l2-normalised projections), so a stage's output does
  not scale with its input: also returned are the first stage's projected input
  norm and its codewords' norms (mean, std).
  """
  n = lambda t: float(t.norm(dim=1).mean())
  sizes = {}
  with torch.no_grad():
    x = torch.from_numpy(audio)[:, None]
    for g in gains:
      z = torch.cat([dac_model.encoder(x[i:i + batch] * g) for i in range(0, len(x), batch)])
      sizes[g] = dict(continuous=n(z), unrounded=n(unrounded(dac_model.quantizer, z)),
                      quantized=n(dac_model.quantizer(z)[0]))
      if g == gains[0]:
        stage = dac_model.quantizer.quantizers[0]
        code_norms = stage.codebook.weight.norm(dim=1)
        first = dict(stage1_input_norm=n(stage.in_proj(z)),
                     codeword_norm_mean=float(code_norms.mean()),
                     codeword_norm_std=float(code_norms.std()))
  ref = sizes[gains[0]]
  return dict(relative_norm={str(g): {k: round(v / ref[k], 4) for k, v in d.items()}
                             for g, d in sizes.items()},
              **{k: round(v, 4) for k, v in first.items()})


def correct_polarity(dac_model, spec, path: str, n: int = 16) -> dict:
  """Makes the codec's output positively correlated with its input, saving the
  corrected weights to ``path`` (DAC's format) when it had to invert them.

  Mel and SI-SDR objectives cannot see the sign, so a trained codec may invert; an
  inverted codec breaks every lag-0 comparison with the input (and the demo's
  samples play inverted). :func:`train_codec.invert_output` flips it exactly.
  """
  x = train_codec.heldout(spec, n, kind="single")
  before = float(np.mean(train_codec.polarity(x, train_codec.reconstruct(dac_model, x))))
  inverted = before < 0
  if inverted:
    train_codec.invert_output(dac_model)
    metadata = dict(getattr(dac_model, "metadata", None) or {})
    dac_model.save(path + ".tmp", metadata=metadata, package=False)
    os.replace(path + ".tmp", path)
  after = float(np.mean(train_codec.polarity(x, train_codec.reconstruct(dac_model, x))))
  return dict(inverted_at_ship=inverted, correlation_before=round(before, 4),
              correlation=round(after, 4), clips=n)


CURVE_KEYS = ("step", "seconds", "mel", "sisdr", "single_si_sdr", "mixture_si_sdr",
              "single_stoi", "mixture_stoi", "single_estoi", "mixture_estoi")


def earlier_history(previous: dict | None, name: str, spec, rows: list) -> dict:
  """What came before a run that continued (``--continue_init``) the file ``previous``
  (the manifest at the ship folder) describes: its training seconds and curve, so that
  the new manifest covers the whole run and not only this machine's part of it."""
  start = rows[0]["step"] - 1 if rows else 0
  none = dict(seconds=0.0, curve=[], continued_from=None)
  if not spec.continue_init or previous is None or previous.get("file") != name:
    return none
  curve = [r for r in previous.get("curve", []) if r["step"] <= start]
  if previous.get("steps") == start:
    return dict(seconds=float(previous.get("train_seconds", 0.0)), curve=curve,
                continued_from=dict(steps=start, sha256=previous["sha256"]))
  # The previous file was this run shipped earlier: keep what came before the run.
  earlier = previous.get("continued_from") or {}
  at = [r["seconds"] for r in rows if r["step"] == previous.get("steps")]
  if earlier.get("steps") == start and at:
    return dict(seconds=float(previous["train_seconds"]) - at[0], curve=curve,
                continued_from=earlier)
  return none


def ship(src: str, out_dir: str, name: str, n: int = 32, half: bool = False) -> dict:
  torch.set_num_threads(max(torch.get_num_threads(), 1))
  weights = os.path.join(src, "weights.pth")
  spec_path = os.path.join(src, "spec.json")
  spec = train_codec.CodecSpec.from_dict(json.load(open(spec_path)))
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "manifest.json")
  previous = json.load(open(path)) if os.path.exists(path) else None
  out = os.path.join(out_dir, name)
  shutil.copyfile(weights, out + ".tmp")      # one read: a running trainer replaces it
  os.replace(out + ".tmp", out)
  # The copy's own step and metadata: a run still training logs past its checkpoint.
  meta = torch.load(out, map_location="cpu", weights_only=True)["metadata"]
  step = train_codec.recorded_step(out, meta)
  rows = [r for r in map(json.loads, open(os.path.join(src, "log.jsonl"))) if r["step"] <= step]
  before = earlier_history(previous, name, spec, rows)
  dac_model = loading.load_dac("16khz", weights=out, device="cpu")
  polarity = correct_polarity(dac_model, spec, out)
  # The file: the (polarity-corrected) weights with the run's own metadata (its step,
  # which --continue_init reads), in float16 when asked (half the bytes).
  state = {k: (v.half() if half and v.is_floating_point() else v)
           for k, v in dac_model.state_dict().items()}
  torch.save({"state_dict": state, "metadata": meta}, out + ".tmp")
  os.replace(out + ".tmp", out)
  t0 = time.perf_counter()
  dac_model = loading.load_dac("16khz", weights=out, device="cpu")   # what ships, measured
  load_seconds = time.perf_counter() - t0
  measured = measures(spec, dac_model, n)
  manifest = dict(
      file=name,
      sha256=_sha256(out),
      bytes=os.path.getsize(out),
      format="DAC.save(package=False): {'state_dict', 'metadata': {'kwargs'}} (DAC's release format)"
             + (", weights stored as float16 (loaded into float32)" if half else ""),
      command=("python -m codec_training.train --out " + src + " " + " ".join(
          f"--{k} " + (" ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
          for k, v in json.load(open(spec_path)).items()
          # JSON turns the spec's tuples into lists: compare as tuples.
          if (tuple(v) if isinstance(v, list) else v) != getattr(train_codec.CodecSpec, k, None))),
      spec=json.load(open(spec_path)),
      steps=step, train_seconds=round(before["seconds"] + rows[-1]["seconds"], 1),
      continued_from=before["continued_from"],
      machine="2 CPU cores, torch 1 thread, sharing the machine with other jobs",
      parameters=sum(p.numel() for p in dac_model.parameters()),
      load_seconds=round(load_seconds, 3),
      polarity=polarity,
      curve=before["curve"] + [{k: r[k] for k in r if k in CURVE_KEYS}
                               for r in rows if "single_si_sdr" in r],
      **measured,
  )
  _write_json(path, manifest)
  return manifest


def measures(spec, dac_model, n: int) -> dict:
  """The manifest's measures of a codec on ``n`` held-out clips: ``quality`` (val clips,
  where recipes are chosen), ``quality_test`` (test clips, where the chosen codec is
  reported), the latent structure of two-talker mixtures and its rounding breakdown,
  and the floors the tests assert (each measure minus a margin)."""
  quality = train_codec.quality(spec, dac_model, n=n, stoi=True)
  quality_test = train_codec.quality(spec, dac_model, n=n, stoi=True, split="test")
  mix, a, b = train_codec.heldout(spec, n, kind="parts")
  latent = latent_structure.measure_arrays(FrozenDAC(dac_model), mix, a, b)
  return dict(
      heldout_clips=n,
      quality={k: round(v, 4) for k, v in quality.items()},
      quality_test={k: round(v, 4) for k, v in quality_test.items()},
      latent_structure={s: ({k: round(v, 4) for k, v in d.items()} if isinstance(d, dict)
                            else round(d, 4)) for s, d in latent.items()},
      quantizer_rounding=rounding_breakdown(dac_model, mix, a, b),
      test_floors=quality_floors(quality),
      test_floors_latent=dict(
          additivity=round(latent["quantized"]["additivity"] - ADDITIVITY_MARGIN, 3)))


def _write_json(path: str, obj: dict) -> None:
  """``obj`` to ``path`` atomically (a temporary file, then a rename)."""
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=2)
  os.replace(path + ".tmp", path)


def _sha256(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def quality_floors(quality: dict) -> dict:
  """What the tests assert of a shipped codec: its measured ``quality`` minus margins."""
  return dict(single_stoi=round(quality["single_stoi"] - STOI_MARGIN, 3),
              mixture_stoi=round(quality["mixture_stoi"] - STOI_MARGIN, 3),
              single_si_sdr=round(quality["single_si_sdr"] - SI_SDR_MARGIN_DB, 2),
              mixture_si_sdr=round(quality["mixture_si_sdr"] - SI_SDR_MARGIN_DB, 2))


def rescore(weights: str, n: int | None = None) -> dict:
  """A shipped file's :func:`measures` taken again on ``n`` clips (default: as many as
  its manifest's) of the current held-out draw and corpus, written into the manifest
  beside it: for a measure that changed under unchanged weights. Refuses a file that is
  not the one its manifest hashes."""
  manifest_path = os.path.join(os.path.dirname(weights), "manifest.json")
  with open(manifest_path) as f:
    manifest = json.load(f)
  digest = _sha256(weights)
  if digest != manifest["sha256"]:
    raise ValueError(f"{weights}: sha256 {digest[:12]}..., not the {manifest_path}'s "
                     f"{manifest['sha256'][:12]}...; ship it instead.")
  spec = train_codec.CodecSpec.from_dict(manifest["spec"])
  dac_model = loading.load_dac("16khz", weights=weights, device="cpu")
  manifest.update(measures(spec, dac_model, n or manifest["heldout_clips"]))
  _write_json(manifest_path, manifest)
  return json.loads(json.dumps(manifest))       # as written (JSON's keys are strings)


def fix_shipped_polarity(weights: str) -> dict:
  """:func:`correct_polarity` of a shipped file; its manifest gets the new hash and size
  (the quality figures stand: SI-SDR, mel and STOI are all blind to the sign)."""
  manifest_path = os.path.join(os.path.dirname(weights), "manifest.json")
  manifest = json.load(open(manifest_path))
  spec = train_codec.CodecSpec.from_dict(manifest["spec"])
  dac_model = loading.load_dac("16khz", weights=weights, device="cpu")
  manifest["polarity"] = correct_polarity(dac_model, spec, weights)
  manifest["sha256"] = _sha256(weights)
  manifest["bytes"] = os.path.getsize(weights)
  _write_json(manifest_path, manifest)
  return manifest["polarity"]


def compare(spec, gen, against=None, n: int = 32, split: str = "val") -> dict:
  """Quality of the codec ``gen`` on ``n`` held-out clips (means and standard errors)
  and, with another codec ``against``, the paired differences on the same clips
  (``diff_*``: gen - against; the clip-to-clip spread cancels, so a small change can be
  resolved). ``split``: the training voices' "val" clips (where recipes are chosen) or
  "test" (where the chosen codec is reported)."""
  scores = train_codec.clip_scores(spec, gen, n=n, stoi=True, split=split)
  out = train_codec.summarize(scores)
  if against is not None:
    other = train_codec.clip_scores(spec, against, n=n, stoi=True, split=split)
    for key, v in scores.items():
      if np.ndim(v) and not key.endswith("_polarity"):
        out.update(train_codec.mean_se("diff_" + key, v - other[key]))
  return {k: round(v, 4) for k, v in out.items()}


def spec_of(weights: str):
  """The training spec of a weights file: the one the trainer stores in the metadata of
  the files it writes (``ship`` keeps it), else the ``manifest.json`` beside the file
  (older files, and forms other than a plain ``.pth``: a folder)."""
  saved = None
  if os.path.isfile(weights):
    meta = torch.load(weights, map_location="cpu", weights_only=True).get("metadata") or {}
    saved = (meta.get("neurocodec") or {}).get("spec")
  if saved is None:
    manifest = os.path.join(os.path.dirname(weights), "manifest.json")
    if not os.path.exists(manifest):
      raise FileNotFoundError(f"{weights}: no training spec in its metadata and no "
                              f"{manifest} beside it.")
    saved = json.load(open(manifest))["spec"]
  return train_codec.CodecSpec.from_dict(saved)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--src", help="a codec_training.train run directory (required unless --levels)")
  p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "weights"))
  p.add_argument("--name", default="demo_codec_16khz.pth")
  p.add_argument("--n", type=int, default=None,
                 help="held-out clips (default 32; with --rescore, the manifest's count)")
  p.add_argument("--half", action="store_true",
                 help="store the weights as float16 (half the bytes; quality is measured "
                      "on the stored weights)")
  p.add_argument("--fix_polarity", metavar="WEIGHTS", default=None,
                 help="correct the polarity of a shipped weights file in place and update "
                      "the manifest beside it (hash, size, polarity)")
  p.add_argument("--rescore", metavar="WEIGHTS", default=None,
                 help="take a shipped file's measures (quality, quality_test, latent "
                      "structure, floors) again on --n clips of the current held-out draw "
                      "and corpus and rewrite them in the manifest beside it")
  p.add_argument("--quality", metavar="WEIGHTS", default=None,
                 help="only print the quality (means and standard errors over --n held-out "
                      "clips) of a weights file, its spec from the file's metadata or the "
                      "manifest beside it")
  p.add_argument("--against", metavar="WEIGHTS", default=None,
                 help="with --quality: also score these weights on the same clips and print "
                      "the paired difference (quality - against) with its standard error")
  p.add_argument("--split", choices=("val", "test"), default="val",
                 help="with --quality: the training voices' clips from the val split "
                      "(where recipes are chosen) or the test split (where the chosen "
                      "codec is reported)")
  p.add_argument("--levels", metavar="WEIGHTS", default=None,
                 help="only print level_response of this DAC weights file (single talkers)")
  args = p.parse_args(argv)
  if args.rescore:
    m = rescore(args.rescore, args.n)
    print(json.dumps({k: m[k] for k in ("file", "heldout_clips", "quality", "quality_test")},
                     indent=2))
    return 0
  args.n = args.n or 32
  if args.fix_polarity:
    print(json.dumps(fix_shipped_polarity(args.fix_polarity), indent=2))
    return 0
  if args.against and not args.quality:
    p.error("--against needs --quality WEIGHTS")
  if args.quality:
    spec = spec_of(args.quality)
    gen, other = (loading.load_dac("16khz", weights=w, device="cpu") if w else None
                  for w in (args.quality, args.against))
    print(json.dumps(compare(spec, gen, other, args.n, args.split), indent=2))
    return 0
  if args.levels:
    model = loading.load_dac("16khz", weights=args.levels, device="cpu")
    x = train_codec.heldout(train_codec.CodecSpec(), args.n, kind="single")
    print(json.dumps(level_response(model, x), indent=2))
    return 0
  if not args.src:
    p.error("--src is required (or --levels WEIGHTS)")
  m = ship(args.src, args.out, args.name, args.n, half=args.half)
  keys = ("file", "sha256", "steps", "train_seconds", "quality", "quality_test",
          "latent_structure", "quantizer_rounding")
  print(json.dumps({k: m[k] for k in keys}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
