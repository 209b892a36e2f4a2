"""``report.html``: one self-contained page per evaluation folder.

``write_report(eval_dir)`` reads the ``metrics.json`` of every ablation folder beside
``eval_dir`` (``<workdir>/eval/<split>_<ablation>/``) and writes
``<eval_dir>/report.html``: the floor / model / ceiling table with the improvements,
identification under each ablation, per-subject rows, audio players for the written
samples (mixture, prediction, target) with their spectrogram images, and links to
the JSON. Every path is relative and nothing is fetched from a network, so the page
works from a copied folder or a file:// URL.
"""

from __future__ import annotations

import glob
import html
import json
import os

from neurocodec_jax.data import atomic

QUALITY_KEYS = ("si_sdr", "stoi", "estoi", "pesq_wb")
LABELS = dict(si_sdr="SI-SDR dB", stoi="STOI", estoi="ESTOI", pesq_wb="PESQ-wb")
STYLE = """body{font-family:sans-serif;margin:2em;max-width:72em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;
text-align:right}th:first-child,td:first-child{text-align:left}
.sample{margin:1.5em 0;padding-top:1em;border-top:1px solid #ddd}
audio{vertical-align:middle;margin-right:1em}img{max-width:100%}"""


def _fmt(v, digits: int = 3) -> str:
  return "-" if v is None else f"{v:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
  head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
  body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
  return f"<table><tr>{head}</tr>{body}</table>"


def _quality(result: dict) -> str:
  q = result.get("quality")
  if not q:
    return "<p>No floor / ceiling in this evaluation.</p>"
  keys = [k for k in QUALITY_KEYS if k in q["model"]]
  rows = [[name] + [_fmt(q[row].get(k)) for k in keys]
          for row, name in (("floor", "floor: the mixture"), ("model", "model"),
                            ("ceiling", "ceiling: codec oracle"))]
  imp = q["improvement"]
  rows.append(["improvement (model - floor)"] + [
      f"{imp[k + 'i']['mean']:+.3f} ± {imp[k + 'i']['se']:.3f}" if k + "i" in imp else "-"
      for k in keys])
  return _table([""] + [LABELS[k] for k in keys], rows)


def _ablations(results: dict[str, dict]) -> str:
  keys = ("id_latent", "id_latent_mixture", "id_cue_true_envelopes", "latent_loss")
  rows = [[html.escape(a), str(r["n"])] + [_fmt(r["metrics"].get(k)) for k in keys]
          for a, r in results.items()]
  return _table(["EEG given", "n", "identification", "copy-the-mixture baseline",
                 "EEG decoder, perfect separation", "latent loss"], rows)


def _subjects(result: dict) -> str:
  per = result.get("per_subject")
  if not per:
    return ""
  keys = [k for k in ("id_latent", "si_sdri", "stoii", "stoi") if k in next(iter(per.values()))]
  rows = [[html.escape(s)] + [_fmt(m.get(k)) for k in keys] for s, m in per.items()]
  return "<h2>Per subject (true EEG)</h2>" + _table(["subject"] + keys, rows)


def _samples(eval_dir: str) -> str:
  out = []
  for i in range(1000):
    names = dict(mixture=f"input_noisy_{i}.wav", prediction=f"prediction_{i}.wav",
                 target=f"target_clean_{i}.wav")
    if not all(os.path.exists(os.path.join(eval_dir, n)) for n in names.values()):
      break
    players = "".join(f"<span>{k} <audio controls preload=\"none\" src=\"{html.escape(n)}\">"
                      f"</audio></span>" for k, n in names.items())
    image = f"inference_plot_{i}.png"
    img = (f"<div><img alt=\"spectrograms of sample {i}\" src=\"{image}\"></div>"
           if os.path.exists(os.path.join(eval_dir, image)) else "")
    out.append(f"<div class=\"sample\"><h3>sample {i}</h3>{players}{img}</div>")
  return ("<h2>Samples</h2>" + "".join(out)) if out else "<p>No samples written "\
      "(evaluate.py --num_samples N writes them).</p>"


def _checkpoint(path, eval_dir: str) -> str:
  """The checkpoint relative to the run (``<workdir>/eval/<split>_<ablation>``)."""
  if not path:
    return "unknown"
  workdir = os.path.dirname(os.path.dirname(os.path.abspath(eval_dir)))
  rel = os.path.relpath(os.path.abspath(path), workdir)
  return rel if not rel.startswith("..") else os.path.basename(os.path.normpath(path))


def write_report(eval_dir: str) -> str:
  """Writes ``<eval_dir>/report.html`` (see the module docstring); returns its path."""
  with open(os.path.join(eval_dir, "metrics.json")) as f:
    main = json.load(f)
  split = main["split"]
  results = {}
  for path in sorted(glob.glob(os.path.join(os.path.dirname(eval_dir), f"{split}_*",
                                            "metrics.json"))):
    with open(path) as f:
      r = json.load(f)
    results[r["ablation"]] = dict(r, path=os.path.relpath(path, eval_dir))
  results.setdefault(main["ablation"], dict(main, path="metrics.json"))
  links = " · ".join(f"<a href=\"{html.escape(r['path'])}\">{html.escape(a)}</a>"
                     for a, r in results.items())
  extra = ""
  if os.path.exists(os.path.join(eval_dir, "linear_baseline.json")):
    with open(os.path.join(eval_dir, "linear_baseline.json")) as f:
      lin = json.load(f)
    extra = (f"<p>Classic linear backward decoder, perfect separation: identification "
             f"{_fmt(lin['identification'])} ± {_fmt(lin['identification_se'])} "
             f"(<a href=\"linear_baseline.json\">linear_baseline.json</a>).</p>")
  page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>NeuroCodec evaluation: {html.escape(split)}</title>
<style>{STYLE}</style></head><body>
<h1>NeuroCodec evaluation: {html.escape(split)} split, {main['n']} trials</h1>
<p>Checkpoint {html.escape(_checkpoint(main.get('checkpoint'), eval_dir))}.</p>
<h2>Output quality against the attended talker ({html.escape(main['ablation'])})</h2>
{_quality(main)}
<h2>Identification under each EEG ablation</h2>
{_ablations(results)}
{extra}
{_subjects(main)}
{_samples(eval_dir)}
<p>Metrics as JSON: {links}; per trial: <a href="per_example.csv">per_example.csv</a>.</p>
</body></html>
"""
  path = os.path.join(eval_dir, "report.html")
  atomic.write_text(path, page)
  return path
