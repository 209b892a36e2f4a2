"""Real recorded speech from Debian's package registry, split by clip.

  python -m neurocodec_jax.data.speech --out data/speech [--sample_rate 16000]

Fetches the packages below with ``apt-get download`` into ``<out>/debs`` (no other
network is needed), unpacks them with ``dpkg -x``, decodes every clip (G.722 with
PyAV, ogg with soundfile), downmixes, resamples to ``sample_rate``, trims leading
and trailing silence, drops clips that are not speech (near-silent, a DC offset,
mostly above 4 kHz: :func:`screen`; the sound effects a package ships among its
prompts, by name), and splits by clip into train / val / test with
a fixed rule (:func:`split_of`: a hash of the voice and the clip's path), so no clip is
in two splits and a rerun gives the same split. Writes, atomically:

  <out>/<split>.npz      per voice: ``<voice>.audio`` int16 ``[samples]`` (the
                         split's clips back to back, each followed by GAP_SECONDS
                         of silence) and ``<voice>.bounds`` int64 ``[clips, 2]``
  <out>/manifest.json    packages (version, sha256, license), voices (talker,
                         sex, language, seconds per split), the rule, the rate,
                         and the clips dropped as not speech (:func:`screen`) with why

The project redistributes none of this audio; only this code, and weights trained
on it. Licenses: the Asterisk prompts are CC-BY-SA-3.0, the Fish Fillets voices
GPL-2 (each package's ``usr/share/doc/<package>/copyright``).

Voices: ``talker`` names the person (Allison Smith recorded both the English and
the Spanish prompts), so a talker-held-out protocol holds out talkers, not voices.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
from scipy import signal
from tqdm import tqdm

from neurocodec_jax.data.atomic import atomic_directory

SPLITS = ("train", "val", "test")
GAP_SECONDS = 0.05          # silence after each clip in a split's stream
TRIM_DB = 40.0              # trim frames this far below the clip's loudest frame
MIN_CLIP_SECONDS = 0.3      # shorter clips (clicks, single phones) are dropped
# Clips that are not speech (:func:`screen`); speech's thresholds are far from them:
MIN_RMS_DB = -60.0          # dBFS; speech -27 to -11, a codec's idle noise -80 (silence/*)
MAX_HF_SHARE = 0.5          # energy above 4 kHz; speech's 99th percentile 0.13, hiss higher
MAX_DC = 0.05               # |mean| / rms; speech's 99th percentile 0.004
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)


@dataclasses.dataclass(frozen=True)
class Voice:
  name: str
  package: str
  pattern: str            # glob under the unpacked package
  talker: str
  sex: str
  language: str
  effects: tuple = ()     # file names (no extension) of sound effects among the clips


_AST = "usr/share/asterisk/sounds"
# The Asterisk packages ship these sound effects among their prompts, the same names in
# every language: tones, and a recording of monkeys (``tt-monkeys``). No signal rule
# tells a two-tone chime from a short word, so they are named.
_AST_EFFECTS = ("beep", "beeperr", "ascending-2tone", "descending-2tone", "confbridge-join",
                "confbridge-leave", "tt-monkeys")
_FNG = "usr/share/games/fillets-ng/sound"
VOICES = (
    Voice("en_allison", "asterisk-core-sounds-en-g722", f"{_AST}/en_US_f_Allison/**/*.g722",
          "allison", "f", "en", _AST_EFFECTS),
    Voice("es_allison", "asterisk-core-sounds-es-g722", f"{_AST}/es_MX_f_Allison/**/*.g722",
          "allison", "f", "es", _AST_EFFECTS),
    Voice("fr_june", "asterisk-core-sounds-fr-g722", f"{_AST}/fr_CA_f_June/**/*.g722",
          "june", "f", "fr", _AST_EFFECTS),
    Voice("it_carlo", "asterisk-core-sounds-it-g722", f"{_AST}/it_IT_m_Carlo/**/*.g722",
          "carlo", "m", "it", _AST_EFFECTS),
    Voice("ru_f", "asterisk-core-sounds-ru-g722", f"{_AST}/ru_RU_f_IvrvoiceRU/**/*.g722",
          "ru_f", "f", "ru", _AST_EFFECTS),
    Voice("cs_m", "fillets-ng-data-cs", f"{_FNG}/*/cs/*-m-*.ogg", "cs_m", "f", "cs"),
    Voice("cs_v", "fillets-ng-data-cs", f"{_FNG}/*/cs/*-v-*.ogg", "cs_v", "m", "cs"),
)
PACKAGES = tuple(dict.fromkeys(v.package for v in VOICES))


class SpeechSourceError(RuntimeError):
  """The recordings cannot be fetched or read; the message says what to do."""


def manual_command(out: str) -> str:
  debs = os.path.join(out, "debs")
  return (f"mkdir -p {debs} && cd {debs} && apt-get download {' '.join(PACKAGES)}  "
          f"(on a Debian/Ubuntu machine; copy the .deb files to {debs} on this one)")


# ------------------------------------------------------------------ fetch ----

def fetch(out: str) -> dict[str, str]:
  """``{package: .deb path}``, downloading what ``<out>/debs`` lacks."""
  debs = os.path.join(out, "debs")
  os.makedirs(debs, exist_ok=True)
  found = {p: _deb(debs, p) for p in PACKAGES}
  missing = [p for p, path in found.items() if path is None]
  if missing:
    if shutil.which("apt-get") is None:
      raise SpeechSourceError(f"apt-get is not available here, and {debs} lacks "
                              f"{', '.join(missing)}. Fetch them by hand: "
                              f"{manual_command(out)}")
    r = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True,
                       text=True)
    found = {p: _deb(debs, p) for p in PACKAGES}
    still = [p for p, path in found.items() if path is None]
    if still:
      raise SpeechSourceError(f"apt-get download failed for {', '.join(still)} "
                              f"({r.stderr.strip().splitlines()[-1:] or r.returncode}); "
                              f"try `apt-get update` first, or fetch by hand: "
                              f"{manual_command(out)}")
  return found


def _deb(folder: str, package: str) -> str | None:
  hits = sorted(glob.glob(os.path.join(folder, f"{package}_*.deb")))
  return hits[-1] if hits else None


def unpack(deb: str, dest: str) -> str:
  if not os.path.isdir(dest):
    if shutil.which("dpkg-deb") is None:
      raise SpeechSourceError(f"dpkg-deb is not available to unpack {deb}: unpack it by "
                              f"hand into {dest} (e.g. `ar x` then `tar xf data.tar.*`).")
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
    os.replace(tmp, dest)
  return dest


def deb_version(deb: str) -> str:
  name = os.path.basename(deb)
  return name.split("_")[1] if name.count("_") >= 2 else "unknown"


def sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


# ----------------------------------------------------------------- decode ----

def decode(path: str, sample_rate: int) -> np.ndarray:
  """A mono float32 ``[T]`` waveform at ``sample_rate`` from a .g722, .ogg, .wav or .flac."""
  if path.endswith(".g722"):
    import av  # pylint: disable=g-import-not-at-top
    try:
      with av.open(path, format="g722") as f:
        frames = [fr.to_ndarray() for fr in f.decode(audio=0)]
        rate = f.streams.audio[0].rate
    except av.error.FFmpegError as e:
      raise SpeechSourceError(f"{path}: not a readable G.722 file ({e}).") from None
    if not frames:
      return np.zeros(0, np.float32)             # an empty prompt: dropped as too short
    x = np.concatenate(frames, axis=-1)
    x = x.astype(np.float32) / (32768.0 if x.dtype.kind == "i" else 1.0)
    x = x.mean(0) if x.ndim == 2 else x
  else:
    import soundfile as sf  # pylint: disable=g-import-not-at-top
    try:
      x, rate = sf.read(path, dtype="float32", always_2d=True)
    except RuntimeError as e:
      raise SpeechSourceError(f"{path}: not a readable audio file ({e}).") from None
    x = x.mean(1)
  if rate != sample_rate:
    g = math.gcd(int(rate), sample_rate)
    x = signal.resample_poly(x, sample_rate // g, int(rate) // g).astype(np.float32)
  return x.astype(np.float32)


def trim(x: np.ndarray, sample_rate: int, top_db: float = TRIM_DB) -> np.ndarray:
  """``x`` without the leading and trailing 10 ms frames quieter than ``top_db`` below
  its loudest frame."""
  hop = max(1, sample_rate // 100)
  n = len(x) // hop
  if n == 0:
    return x[:0]
  energy = (x[:n * hop].reshape(n, hop) ** 2).mean(1)
  loud = np.nonzero(energy > energy.max() * 10 ** (-top_db / 10))[0]
  if len(loud) == 0:
    return x[:0]
  return x[loud[0] * hop:(loud[-1] + 1) * hop]


def hf_share(x: np.ndarray, sample_rate: int) -> float:
  """The share of ``x``'s ``[T]`` energy above 4 kHz (its mean removed)."""
  power = np.abs(np.fft.rfft(x - x.mean())) ** 2
  return float(power[np.fft.rfftfreq(len(x), 1 / sample_rate) > 4000].sum() /
               max(power.sum(), 1e-30))


def _rms(x: np.ndarray) -> float:
  return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def dc_ratio(x: np.ndarray) -> float:
  """``|mean| / rms`` of ``x`` ``[T]``: 1 for a constant, 0 for a zero-mean signal."""
  return abs(float(x.mean())) / max(_rms(x), 1e-30)


def screen(x: np.ndarray, sample_rate: int) -> str | None:
  """Why a trimmed clip ``[T]`` is not speech, or None when it may be: near-silent (its
  RMS under MIN_RMS_DB: every excerpt is peak-normalized downstream, which would turn an
  idle codec's noise into full-scale hiss), a DC offset, or most of its energy above
  4 kHz (tones, hiss; none at rates that do not code that band)."""
  rms = _rms(x)
  if rms < 10 ** (MIN_RMS_DB / 20):
    return f"near-silent (rms {20 * np.log10(rms + 1e-12):.0f} dBFS < {MIN_RMS_DB:.0f})"
  dc = dc_ratio(x)
  if dc > MAX_DC:
    return f"DC offset (|mean| {dc:.2f} x rms > {MAX_DC})"
  share = hf_share(x, sample_rate)
  if share > MAX_HF_SHARE:
    return f"not speech ({share:.0%} of its energy above 4 kHz > {MAX_HF_SHARE:.0%})"
  return None


def split_of(voice: str, relpath: str) -> str:
  """The clip's split: a fixed hash rule (SPLIT_FRACTIONS), stable across runs."""
  h = int(hashlib.sha1(f"{voice}/{relpath}".encode()).hexdigest()[:8], 16) / 16 ** 8
  edges = np.cumsum(SPLIT_FRACTIONS)
  return SPLITS[int(np.searchsorted(edges, h, side="right"))]


# ------------------------------------------------------------------ build ----

def build(out: str, sample_rate: int = 16000, voices=VOICES,
          unpacked: dict | None = None) -> dict:
  """Fetches, decodes and splits ``voices`` into ``out`` (see the module docstring);
  returns the manifest. ``unpacked``: ``{package: folder}`` of packages already
  unpacked, instead of fetching them (their version and hash are then unknown)."""
  if unpacked is None:
    debs = fetch(out)
    unpacked = {p: unpack(d, os.path.join(out, "pkgs", p)) for p, d in debs.items()}
  else:
    debs = {p: None for p in unpacked}
  streams = {s: {} for s in SPLITS}
  voice_rows, dropped = [], []
  gap = np.zeros(int(GAP_SECONDS * sample_rate), np.float32)
  for v in voices:
    root = unpacked[v.package]
    paths = sorted(glob.glob(os.path.join(root, v.pattern), recursive=True))
    if not paths:
      raise SpeechSourceError(f"{root}: no file matches {v.pattern!r} for voice {v.name}.")
    parts = {s: [] for s in SPLITS}
    for path in tqdm(paths, desc=f"speech {v.name}", unit="clip", leave=False):
      rel = os.path.relpath(path, root)
      x = trim(decode(path, sample_rate), sample_rate)
      if os.path.splitext(os.path.basename(path))[0] in v.effects:
        why = "a sound effect (the voice's list of them)"
      elif len(x) < MIN_CLIP_SECONDS * sample_rate:
        continue
      else:
        why = screen(x, sample_rate)
      if why:
        dropped.append(dict(voice=v.name, path=rel, seconds=round(len(x) / sample_rate, 2),
                            reason=why))
        continue
      parts[split_of(v.name, rel)].append(x)
    row = dict(dataclasses.asdict(v), effects=list(v.effects), clips={}, seconds={},
               dropped=sum(d["voice"] == v.name for d in dropped))
    for s in SPLITS:
      bounds, pos, chunks = [], 0, []
      for x in parts[s]:
        bounds.append((pos, pos + len(x)))
        chunks += [x, gap]
        pos += len(x) + len(gap)
      audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
      streams[s][f"{v.name}.audio"] = _to_int16(audio)
      streams[s][f"{v.name}.bounds"] = np.asarray(bounds, np.int64).reshape(-1, 2)
      row["clips"][s] = len(bounds)
      row["seconds"][s] = round(sum(b - a for a, b in bounds) / sample_rate, 1)
    voice_rows.append(row)
  manifest = dict(
      dataset="speech", sample_rate=sample_rate,
      packages={p: dict(file=d and os.path.basename(d), version=d and deb_version(d),
                        sha256=d and sha256(d), license=_license(unpacked[p], p))
                for p, d in debs.items()},
      voices=voice_rows,
      rule=dict(split="sha1('<voice>/<path in package>') -> train/val/test at "
                      f"{SPLIT_FRACTIONS}", trim_db=TRIM_DB, min_clip_seconds=MIN_CLIP_SECONDS,
                gap_seconds=GAP_SECONDS, min_rms_db=MIN_RMS_DB, max_hf_share=MAX_HF_SHARE,
                max_dc=MAX_DC),
      dropped=dropped)
  with atomic_directory(os.path.join(out, "corpus"), overwrite=True) as tmp:
    for s in SPLITS:
      np.savez(os.path.join(tmp, f"{s}.npz"), **streams[s])
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
      json.dump(manifest, f, indent=2)
  return manifest


def _to_int16(x: np.ndarray) -> np.ndarray:
  return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _license(root: str, package: str) -> str:
  path = os.path.join(root, "usr/share/doc", package, "copyright")
  try:
    text = open(path, encoding="utf-8", errors="replace").read()
  except OSError:
    return "unknown (no copyright file)"
  for token in ("CC-BY-SA-3.0", "GPL-2", "GPL"):
    if token in text:
      return token
  return "see copyright file"


# ----------------------------------------------------------------- corpus ----

@functools.lru_cache(maxsize=None)
def open_corpus(out: str) -> "SpeechCorpus":
  """The corpus at ``out``, opened once per process (its splits load on first use)."""
  return SpeechCorpus(out)


class SpeechCorpus:
  """The built corpus (``<out>/corpus``): per split and voice, an int16 stream of
  clips and their bounds; segments are read as float32."""

  def __init__(self, out: str):
    self.dir = os.path.join(out, "corpus")
    path = os.path.join(self.dir, "manifest.json")
    if not os.path.exists(path):
      raise SpeechSourceError(f"{path} not found: build the corpus first with "
                              f"`python -m neurocodec_jax.data.speech --out {out}`.")
    with open(path) as f:
      self.manifest = json.load(f)
    self.sample_rate = int(self.manifest["sample_rate"])
    self._splits = {}

  def voices(self, split: str | None = None) -> list[str]:
    return [v["name"] for v in self.manifest["voices"]
            if split is None or v["clips"][split] > 0]

  def talker(self, voice: str) -> str:
    return next(v["talker"] for v in self.manifest["voices"] if v["name"] == voice)

  def _load(self, split: str):
    if split not in self._splits:
      with np.load(os.path.join(self.dir, f"{split}.npz")) as z:
        self._splits[split] = {k: z[k] for k in z.files}
    return self._splits[split]

  def stream(self, split: str, voice: str) -> np.ndarray:
    """``[samples]`` int16: the split's clips of ``voice`` back to back."""
    return self._load(split)[f"{voice}.audio"]

  def clips(self, split: str, voice: str) -> list[np.ndarray]:
    """The split's clips of ``voice``, float32."""
    d = self._load(split)
    audio = d[f"{voice}.audio"]
    return [audio[a:b].astype(np.float32) / 32767 for a, b in d[f"{voice}.bounds"]]

  def segment(self, rng: np.random.Generator, split: str, voice: str, length: int):
    """A random ``[length]`` float32 excerpt of the voice's stream in ``split``."""
    audio = self.stream(split, voice)
    if not len(audio):
      raise SpeechSourceError(f"{self.dir}: voice {voice!r} has no clips in the {split} "
                              f"split (a corpus too small for the split rule).")
    if len(audio) <= length:
      audio = np.tile(audio, length // len(audio) + 1)
    start = int(rng.integers(0, len(audio) - length + 1))
    return audio[start:start + length].astype(np.float32) / 32767


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="data/speech")
  p.add_argument("--sample_rate", type=int, default=16000)
  args = p.parse_args(argv)
  try:
    manifest = build(args.out, args.sample_rate)
  except SpeechSourceError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for v in manifest["voices"]:
    print(f"{v['name']:<12} {v['talker']:<8} {v['sex']} {v['language']}  clips "
          f"{v['clips']}  seconds {v['seconds']}  dropped {v['dropped']}")
  print(f"wrote {os.path.join(args.out, 'corpus')}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
