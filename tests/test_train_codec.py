"""The demo-codec trainer (tiny sizes) and the shipped demo codec."""

import dataclasses
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
import torch

import codec_bridge
from codec_training import train as train_codec

TINY = dict(encoder_dim=4, latent_dim=16, decoder_dim=16, n_codebooks=2, codebook_size=16,
            codebook_dim=4, batch_size=2, clip_seconds=0.1, periods=(2,), fft_sizes=(128,),
            steps=4, gan_start=2, warmup=2, lambda_sisdr=1.0)


def _state(out):
  return torch.load(os.path.join(out, "train_state.pt"), weights_only=False)


def test_default_sizes_are_the_demo_codec():
  from neurocodec_jax.codec_arch import DEMO_CODEC  # pylint: disable=g-import-not-at-top
  arch = {k: tuple(v) if isinstance(v, list) else v for k, v in train_codec.CodecSpec().arch.items()}
  assert arch == DEMO_CODEC


def test_clips_are_pure_functions_of_their_ids_and_never_repeat():
  spec = train_codec.CodecSpec(**TINY)
  a, b = train_codec.clip(spec, 3, 1), train_codec.clip(spec, 3, 1)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (spec.clip_length,) and np.abs(a).max() <= 0.95 + 1e-6
  clips = [train_codec.clip(spec, s, i) for s in range(3) for i in range(2)]
  assert len({c.tobytes() for c in clips}) == len(clips)
  held = train_codec.heldout(spec, 2, seconds=0.1)
  assert not any(np.allclose(h[:spec.clip_length], c) for h in held for c in clips)


def test_trainer_resumes_exactly_and_writes_dac_format(tmp_path):
  """Killed after step 2 (GAN on from step 2) and resumed == uninterrupted, bitwise."""
  torch.set_num_threads(1)
  spec = train_codec.CodecSpec(**TINY)
  whole, parts = str(tmp_path / "whole"), str(tmp_path / "parts")
  train_codec.train(spec, whole, checkpoint_every=2, eval_every=100)
  train_codec.train(spec, parts, checkpoint_every=2, eval_every=100, stop_after=2)
  assert _state(parts)["step"] == 2
  train_codec.train(spec, parts, checkpoint_every=2, eval_every=100)
  a, b = _state(whole), _state(parts)
  assert a["step"] == b["step"] == 4
  for key in ("gen", "disc"):
    for name, value in a[key].items():
      torch.testing.assert_close(value, b[key][name], rtol=0, atol=0, msg=f"{key}.{name}")
  rows = [json.loads(line) for line in open(os.path.join(parts, "log.jsonl"))]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]                 # no repeated rows
  assert "d_loss" in rows[-1] and "gen" in rows[-1] and "d_loss" not in rows[0]
  # DAC's own format, through the real-weights path.
  dac_model = codec_bridge.load_dac("16khz", weights=os.path.join(parts, "weights.pth"),
                                    device="cpu")
  assert dac_model.neurocodec_identity["random"] is False
  assert dac_model.latent_dim == 16 and dac_model.n_codebooks == 2
  with pytest.raises(ValueError, match="another spec"):
    train_codec.train(dataclasses.replace(spec, clip_seconds=0.2), parts)
  # Shipping the run: the weights and a manifest that hashes them, with its measures.
  from codec_training import ship as ship_codec  # pylint: disable=g-import-not-at-top
  shipped = str(tmp_path / "shipped")
  manifest = ship_codec.ship(parts, shipped, "tiny.pth", n=2)
  written = json.load(open(os.path.join(shipped, "manifest.json")))
  assert written["sha256"] == manifest["sha256"] and written["spec"] == manifest["spec"]
  assert set(written["quality_test"]) == set(written["quality"])   # the test split's too
  with open(os.path.join(shipped, "tiny.pth"), "rb") as f:
    assert hashlib.sha256(f.read()).hexdigest() == manifest["sha256"]
  assert -1 <= manifest["latent_structure"]["quantization_cosine"] <= 1
  assert manifest["polarity"]["correlation"] >= 0
  # Rescored on more clips: the manifest's quality is the new measure's, the rest kept;
  # a file its manifest does not hash is refused.
  rescored = ship_codec.rescore(os.path.join(shipped, "tiny.pth"), n=3)
  assert rescored == json.load(open(os.path.join(shipped, "manifest.json")))
  assert rescored["heldout_clips"] == 3 and rescored["sha256"] == manifest["sha256"]
  tiny = codec_bridge.load_dac("16khz", weights=os.path.join(shipped, "tiny.pth"),
                               device="cpu")
  for key, split in (("quality", "val"), ("quality_test", "test")):
    assert rescored[key] == {k: round(v, 4) for k, v in train_codec.quality(
        spec, tiny, n=3, stoi=True, split=split).items()}, key
    assert rescored[key] != manifest[key], key
  assert rescored["quality"] != rescored["quality_test"]
  assert rescored["test_floors"]["single_stoi"] == round(
      rescored["quality"]["single_stoi"] - ship_codec.STOI_MARGIN, 3)
  assert rescored["test_floors"]["mixture_si_sdr"] == round(
      rescored["quality"]["mixture_si_sdr"] - ship_codec.SI_SDR_MARGIN_DB, 2)
  assert rescored["steps"] == manifest["steps"] and rescored["curve"] == manifest["curve"]
  assert ship_codec.rescore(os.path.join(shipped, "tiny.pth"))["heldout_clips"] == 3
  other = tmp_path / "other"
  other.mkdir()
  shutil.copyfile(os.path.join(shipped, "manifest.json"), other / "manifest.json")
  shutil.copyfile(os.path.join(parts, "weights.pth"), other / "tiny.pth")   # unpolarized
  with pytest.raises(ValueError, match="not the"):
    ship_codec.rescore(str(other / "tiny.pth"), n=2)
  # Shipped in float16 (half the bytes) it loads as float32 weights equal to the
  # float16 rounding, and a run continued from it takes up the step count it records.
  half = ship_codec.ship(parts, str(tmp_path / "half"), "tiny.pth", n=2, half=True)
  assert "float16" in half["format"]
  halved = os.path.join(tmp_path, "half", "tiny.pth")
  stored = torch.load(halved, weights_only=True)["state_dict"]
  assert all(v.dtype == torch.float16 for v in stored.values() if v.is_floating_point())
  loaded = codec_bridge.load_dac("16khz", weights=halved, device="cpu").state_dict()
  full = codec_bridge.load_dac("16khz", weights=os.path.join(shipped, "tiny.pth"),
                               device="cpu").state_dict()
  for k, v in loaded.items():
    assert v.dtype == torch.float32
    torch.testing.assert_close(v, full[k].half().float(), rtol=0, atol=0, msg=k)
  assert train_codec.recorded_step(halved) == 4
  more = dataclasses.replace(spec, steps=6, init=halved, continue_init=True)
  train_codec.train(more, str(tmp_path / "more"), checkpoint_every=2, eval_every=100)
  rows = [json.loads(line) for line in open(os.path.join(tmp_path, "more", "log.jsonl"))]
  assert [r["step"] for r in rows] == [5, 6]
  torch.save({"state_dict": stored, "metadata": {"kwargs": {}}}, str(tmp_path / "bare.pth"))
  with pytest.raises(ValueError, match="metadata.neurocodec.step"):
    train_codec.recorded_step(str(tmp_path / "bare.pth"))
  # A resume may change the schedule and the loss weights: the next step runs at the
  # new rate with the new term, and the run's spec.json records the spec it trains with.
  # (Here a warm restart at step 4: the step runs at the full rate again.)
  slower = dataclasses.replace(spec, steps=5, lr_decay=0.5, lr_restart=4, lambda_waveform=1.0)
  train_codec.train(slower, parts, checkpoint_every=1, eval_every=100)
  rows = [json.loads(line) for line in open(os.path.join(parts, "log.jsonl"))]
  row = rows[-1]
  assert row["step"] == 5
  assert row["lr"] == pytest.approx(spec.lr)
  assert row["lr"] != pytest.approx(train_codec.learning_rate(spec, spec.lr, 4))
  assert "waveform" in row and "waveform" not in rows[0]   # the term the resume added
  # A warm restart at step 5: the decay starts again there.
  restarted = dataclasses.replace(spec, lr_decay=0.5, lr_restart=5)
  assert [train_codec.learning_rate(restarted, 1.0, s, restarted.lr_restart)
          for s in (4, 5, 7)] == [0.5 ** 2, 1.0, 0.25]
  written = json.load(open(os.path.join(parts, "spec.json")))
  assert (written["lr_decay"], written["lambda_waveform"]) == (0.5, 1.0)
  # Where a continued run started stays in its spec.json when a resume omits --init.
  resumed = dataclasses.replace(more, steps=7, init="", continue_init=False)
  train_codec.train(resumed, str(tmp_path / "more"), checkpoint_every=1, eval_every=100)
  written = json.load(open(os.path.join(tmp_path, "more", "spec.json")))
  assert (written["init"], written["continue_init"], written["steps"]) == (halved, True, 7)


@pytest.fixture(scope="module")
def one_step_file(tmp_path_factory):
  """The weights a tiny run (seed 1: another initialisation than the tests' seed 0)
  writes after one step: the file the ``--init`` tests start from."""
  torch.set_num_threads(1)
  first = str(tmp_path_factory.mktemp("first"))
  spec = train_codec.CodecSpec(**{**TINY, "steps": 1, "gan_start": 100, "seed": 1})
  train_codec.train(spec, first, checkpoint_every=1, eval_every=100)
  return os.path.join(first, "weights.pth")


def test_init_starts_from_a_weights_file_and_the_stft_term_is_trained(tmp_path, one_step_file):
  """``init`` copies a DAC file's weights (same sizes only); ``lambda_stft`` adds DAC's
  term, ``lambda_cstft`` and ``lambda_sisdr_pre`` theirs."""
  torch.set_num_threads(1)
  spec = train_codec.CodecSpec(**{**TINY, "steps": 1, "gan_start": 100})
  src = one_step_file
  tuned = dataclasses.replace(spec, init=src, lambda_stft=1.0, lambda_cstft=1.0,
                              lambda_sisdr_pre=1.0, stft_windows=(128, 32))
  gen, _ = train_codec.build(tuned)
  trained = codec_bridge.load_dac("16khz", weights=src, device="cpu").state_dict()
  fresh = max(float((v - trained[k]).abs().max()) for k, v in gen.state_dict().items())
  second = str(tmp_path / "second")
  train_codec.train(tuned, second, checkpoint_every=1, eval_every=100)
  row = json.loads(open(os.path.join(second, "log.jsonl")).readline())
  assert row["stft"] > 0 and row["cstft"] > 0 and np.isfinite(row["sisdr_pre"])
  assert "stft" not in json.loads(open(os.path.join(os.path.dirname(src), "log.jsonl")).readline())
  # One step from the file stays near it, far nearer than a fresh initialisation is.
  after = _state(second)["gen"]
  moved = max(float((after[k] - trained[k]).abs().max()) for k in trained)
  assert moved < fresh / 10, (moved, fresh)
  # Resumed without its --init (a script passes it only to a fresh run): it continues.
  train_codec.train(dataclasses.replace(tuned, init="", steps=2), second, checkpoint_every=1,
                    eval_every=100)
  assert _state(second)["step"] == 2
  with pytest.raises(ValueError, match="another architecture"):
    train_codec.train(dataclasses.replace(tuned, latent_dim=32), str(tmp_path / "third"))


def test_init_grows_the_quantizer_and_keeps_the_files_codec_at_its_bit_rate(
    tmp_path, one_step_file):
  """A file with fewer codebooks warm-starts a run with more: its codebooks come first,
  so decoding with the file's count reproduces the file's codec exactly; the added
  codebooks are the run's fresh ones, silent (the grown codec decodes as the file's)
  until training opens them; a change of another size is refused."""
  torch.set_num_threads(1)
  spec = train_codec.CodecSpec(**{**TINY, "steps": 1, "gan_start": 100})
  src = one_step_file
  from codec_training import ship  # pylint: disable=g-import-not-at-top
  assert ship.spec_of(src) == dataclasses.replace(spec, seed=1)   # `ship --quality` reads it
  grown = dataclasses.replace(spec, init=src, n_codebooks=3)
  gen, _ = train_codec.build(grown)
  fresh = {k: v.clone() for k, v in gen.state_dict().items()}
  train_codec.load_init(gen, grown)
  old = codec_bridge.load_dac("16khz", weights=src, device="cpu").eval()
  silent = ("quantizer.quantizers.2.out_proj.weight_g", "quantizer.quantizers.2.out_proj.bias")
  for k, v in gen.state_dict().items():
    if k in silent:
      assert not v.any(), k
    elif k.startswith("quantizer.quantizers.2."):
      assert torch.equal(v, fresh[k]), k
    else:
      assert torch.equal(v, old.state_dict()[k]), k
  gen.eval()
  x = torch.from_numpy(train_codec.clip(spec, 0, 0))[None, None]
  with torch.no_grad():
    want = old(x, 16000)["audio"]
    got = gen(x, 16000, n_quantizers=2)["audio"]
    third = gen(x, 16000)["audio"]
  torch.testing.assert_close(got, want, rtol=0, atol=0)
  torch.testing.assert_close(third, want, rtol=0, atol=0)      # the added codebook silent
  # The trainer takes the same path: a run from the smaller file trains with 3 codebooks,
  # and its first step opens the added one (the gain's gradient is nonzero at zero).
  out = str(tmp_path / "grown")
  train_codec.train(grown, out, checkpoint_every=1, eval_every=100)
  state = _state(out)["gen"]
  assert state["quantizer.quantizers.2.codebook.weight"].shape == (16, 4)
  assert state[silent[0]].abs().min() > 0
  moved = float((state["quantizer.quantizers.0.codebook.weight"]
                 - old.state_dict()["quantizer.quantizers.0.codebook.weight"]).abs().max())
  assert moved < 0.1, moved
  # A file without the trainer's metadata: its spec comes from the manifest beside it.
  bare = tmp_path / "shipped" / "bare.pth"
  bare.parent.mkdir()
  torch.save({"state_dict": old.state_dict(), "metadata": None}, bare)
  with pytest.raises(FileNotFoundError, match="manifest.json"):
    ship.spec_of(str(bare))
  (bare.parent / "manifest.json").write_text(json.dumps({"spec": dataclasses.asdict(spec)}))
  assert ship.spec_of(str(bare)) == spec
  with pytest.raises(ValueError, match="only n_codebooks, encoder_dim and decoder_dim may"):
    train_codec.load_init(gen, dataclasses.replace(grown, n_codebooks=1))
  with pytest.raises(ValueError, match="only n_codebooks, encoder_dim and decoder_dim may"):
    train_codec.load_init(gen, dataclasses.replace(grown, codebook_size=32))


def test_added_codebook_lr_trains_the_added_quantizers_at_their_own_rate(
    tmp_path, one_step_file):
  """--added_codebook_lr puts the quantizers the --init file lacks in a second optimizer
  group at their own rate (Adam's first step moves each entry by about the rate: 100x
  here), and a resume keeps the groups; a run that adds no codebooks is refused."""
  torch.set_num_threads(1)
  grown = train_codec.CodecSpec(**{**TINY, "steps": 1, "gan_start": 100,
                                   "init": one_step_file, "n_codebooks": 3})
  fast = dataclasses.replace(grown, added_codebook_lr=100 * grown.lr)
  gain = "quantizer.quantizers.2.out_proj.weight_g"
  states = {}
  for name, spec in (("plain", grown), ("fast", fast)):
    train_codec.train(spec, str(tmp_path / name), checkpoint_every=1, eval_every=100)
    states[name] = _state(str(tmp_path / name))
  groups = states["fast"]["opt_g"]["param_groups"]
  assert [g["lr"] for g in groups] == pytest.approx(
      [train_codec.learning_rate(fast, base, 0) for base in (fast.lr, fast.added_codebook_lr)])
  assert len(groups[1]["params"]) == len(
      [k for k in states["fast"]["gen"] if k.startswith("quantizer.quantizers.2.")])
  assert len(states["plain"]["opt_g"]["param_groups"]) == 1
  ratio = states["fast"]["gen"][gain].abs().mean() / states["plain"]["gen"][gain].abs().mean()
  assert 30 < ratio < 300, ratio
  # A resume (no --init given) keeps the two groups and their rates.
  train_codec.train(dataclasses.replace(fast, steps=2, init=""), str(tmp_path / "fast"),
                    checkpoint_every=1, eval_every=100)
  resumed = _state(str(tmp_path / "fast"))
  assert resumed["first_codebooks"] == 2             # recorded again for the next resume
  groups = resumed["opt_g"]["param_groups"]
  assert [g["lr"] for g in groups] == pytest.approx(
      [train_codec.learning_rate(fast, base, 1) for base in (fast.lr, fast.added_codebook_lr)])
  for spec in (dataclasses.replace(fast, init=""), dataclasses.replace(fast, n_codebooks=2)):
    with pytest.raises(ValueError, match="add none"):
      train_codec.train(spec, str(tmp_path / "none"))


def test_init_widens_the_codec_and_keeps_the_files_function(tmp_path, one_step_file):
  """A file with a narrower decoder (or encoder) warm-starts a run with a wider one
  (Net2WiderNet): without noise the widened part computes the file's function; the
  trainer's copies carry a small noise that parts them from their originals; neither
  may shrink."""
  from codec_training import widen  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  spec = train_codec.CodecSpec(**{**TINY, "steps": 1, "gan_start": 100})
  src = one_step_file
  old = codec_bridge.load_dac("16khz", weights=src, device="cpu").eval()
  wide = dataclasses.replace(spec, init=src, decoder_dim=32)
  gen, _ = train_codec.build(wide)
  gen.eval()
  z = torch.randn(2, TINY["latent_dim"], 12, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    want = old.decoder(z)
    gen.load_state_dict(widen.widen_decoder(old.state_dict(), 16, 32, noise=0.0))
    exact = gen.decoder(z)
    train_codec.load_init(gen, wide)
    noisy = gen.decoder(z)
  torch.testing.assert_close(exact, want, rtol=0, atol=1e-6)
  change = float((noisy - want).abs().max() / want.abs().max())
  assert 0 < change < 0.05, change
  state = gen.state_dict()
  for k, v in old.state_dict().items():
    if not k.startswith("decoder."):
      assert torch.equal(state[k], v), k
  # Stage 0's 32 channels copy the file's 16: equal biases, parted incoming weights.
  assert torch.equal(state["decoder.model.0.bias"][16:], state["decoder.model.0.bias"][:16])
  v = state["decoder.model.0.weight_v"]
  assert v.shape[0] == 32 and not torch.allclose(v[16:], v[:16])
  # Uneven copying (32 -> 48: one or two copies per channel), with trained-like weight
  # norms (|v| unlike g): the function and every row's |v| are kept.
  narrow, _ = train_codec.build(dataclasses.replace(spec, decoder_dim=32))
  wider, _ = train_codec.build(dataclasses.replace(spec, decoder_dim=48))
  narrow.double().eval(), wider.double().eval()    # float64: the algebra, not the rounding
  with torch.no_grad():
    for p in narrow.decoder.parameters():
      p.mul_(1 + 0.5 * torch.rand_like(p)).add_(0.05 * torch.randn_like(p))
    grown = widen.widen_decoder(narrow.state_dict(), 32, 48)
    wider.load_state_dict(grown)
    torch.testing.assert_close(wider.decoder(z.double()), narrow.decoder(z.double()),
                               rtol=0, atol=1e-12)
  v_old = narrow.state_dict()["decoder.model.1.block.1.weight_v"]    # transposed: rows = inputs
  v_new = grown["decoder.model.1.block.1.weight_v"]
  norms = lambda v: v.flatten(1).norm(dim=1)
  torch.testing.assert_close(norms(v_new), norms(v_old)[torch.arange(48) % 32])
  # The encoder likewise (4 -> 6: one or two copies per channel), the latent unchanged.
  broad, _ = train_codec.build(dataclasses.replace(spec, decoder_dim=32, encoder_dim=6))
  broad.double().eval()
  x = torch.randn(2, 1, 640, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
  with torch.no_grad():
    for p in narrow.encoder.parameters():
      p.mul_(1 + 0.5 * torch.rand_like(p)).add_(0.05 * torch.randn_like(p))
    broad.load_state_dict(widen.widen_encoder(narrow.state_dict(), 4, 6))
    torch.testing.assert_close(broad.encoder(x), narrow.encoder(x), rtol=0, atol=1e-12)
  # Both grown from the file at once, through load_init (with the copies' noise).
  both = dataclasses.replace(wide, encoder_dim=6)
  gen2, _ = train_codec.build(both)
  train_codec.load_init(gen2, both)
  gen2.eval()
  with torch.no_grad():
    ref = old.encoder(x.float())
    change = float((gen2.encoder(x.float()) - ref).abs().max() / ref.abs().max())
  assert 0 < change < 0.05, change
  out = str(tmp_path / "wide")
  train_codec.train(wide, out, checkpoint_every=1, eval_every=100)
  assert _state(out)["gen"]["decoder.model.0.bias"].shape == (32,)
  with pytest.raises(ValueError, match="may only grow"):
    widen.widen_decoder(old.state_dict(), 16, 8)
  with pytest.raises(ValueError, match="halve"):
    widen.widen_decoder(old.state_dict(), 16, 24)
  with pytest.raises(ValueError, match="may only grow"):
    widen.widen_encoder(old.state_dict(), 4, 2)
  with pytest.raises(ValueError, match="only n_codebooks, encoder_dim and decoder_dim may"):
    train_codec.load_init(gen, dataclasses.replace(wide, decoder_dim=8))


def test_pre_emphasis_is_a_first_order_high_pass():
  """Known answers: a constant vanishes at coefficient 1; at 0.97 a 4 kHz tone keeps ~800
  times the power a 100 Hz tone keeps (|1 - c e^{-jw}|^2)."""
  t = torch.arange(16000, dtype=torch.float64) / 16000
  assert float(train_codec.pre_emphasize(torch.ones(1, 1, 100), 1.0).abs().max()) == 0.0
  power = lambda f: float((train_codec.pre_emphasize(torch.sin(2 * np.pi * f * t), 0.97) ** 2).mean())
  expected = lambda f: (1 - 0.97 * np.exp(-2j * np.pi * f / 16000))
  ratio = power(4000) / power(100)
  np.testing.assert_allclose(ratio, abs(expected(4000)) ** 2 / abs(expected(100)) ** 2, rtol=1e-3)
  assert ratio > 500


class _KnownSdrCodec(torch.nn.Module):
  """Returns each clip plus noise orthogonal to it at a set SI-SDR per clip."""

  sample_rate = 16000

  def __init__(self, sdr_db):
    super().__init__()
    self.sdr_db = np.asarray(sdr_db, np.float64)

  def forward(self, x, sample_rate, n_quantizers=None):
    del sample_rate, n_quantizers
    x = x[:, 0].double().numpy()
    xc = x - x.mean(1, keepdims=True)
    e = np.random.default_rng(0).standard_normal(x.shape)
    e -= e.mean(1, keepdims=True)
    e -= (e * xc).sum(1, keepdims=True) / (xc ** 2).sum(1, keepdims=True) * xc
    e *= np.sqrt((xc ** 2).sum(1, keepdims=True) / (e ** 2).sum(1, keepdims=True)
                 / 10 ** (self.sdr_db[:, None] / 10))
    return {"audio": torch.from_numpy(x + e).float()[:, None]}


def test_quality_reports_means_and_standard_errors_over_clips(monkeypatch):
  """Known answers: clips at SI-SDR 0, 5, 10, 15 dB give 7.5 dB, standard error 3.227 dB;
  against the same clips 1 dB lower, the paired difference is 1 dB with no spread."""
  sdr = [0.0, 5.0, 10.0, 15.0]
  q = train_codec.quality(train_codec.CodecSpec(**TINY), _KnownSdrCodec(sdr), n=4, stoi=False)
  np.testing.assert_allclose(q["single_si_sdr"], 7.5, atol=1e-3)
  np.testing.assert_allclose(q["single_si_sdr_se"], np.std(sdr, ddof=1) / 2, atol=1e-3)
  assert q["single_polarity"] > 0
  from codec_training import ship as ship_codec  # pylint: disable=g-import-not-at-top
  d = ship_codec.compare(train_codec.CodecSpec(**TINY), _KnownSdrCodec(sdr),
                         _KnownSdrCodec([s - 1.0 for s in sdr]), n=4)
  np.testing.assert_allclose([d["diff_single_si_sdr"], d["diff_single_si_sdr_se"]], [1.0, 0.0],
                             atol=2e-3)
  # The test clips are their own stream, and the split reaches them from both.
  spec = train_codec.CodecSpec(**TINY)
  val, test = (train_codec.heldout(spec, 2, seconds=0.1, split=s) for s in ("val", "test"))
  assert not np.allclose(val, test)
  asked, heldout = [], train_codec.heldout
  monkeypatch.setattr(train_codec, "heldout",
                      lambda *a, **k: asked.append(k["split"]) or heldout(*a, **k))
  train_codec.quality(spec, _KnownSdrCodec(sdr), n=4, stoi=False, split="test")
  ship_codec.compare(spec, _KnownSdrCodec(sdr), _KnownSdrCodec(sdr), n=4, split="test")
  assert asked and set(asked) == {"test"}


def test_codec_by_voice_breaks_a_score_down_by_voice():
  """Known answers: voice a's two clips at 2 and 4 dB and b's one at 12 give an overall
  mean of 6 dB and a voice-balanced one of 7.5; a 6 kHz tone has its energy above 4 kHz,
  a constant at DC, a half-silent clip half its samples near silence."""
  tool = _script("codec_by_voice")
  got = tool.by_voice(["a", "a", "b"], dict(si_sdr=np.array([2.0, 4.0, 12.0])))
  assert got["voices"] == dict(a=dict(clips=2, si_sdr=3.0), b=dict(clips=1, si_sdr=12.0))
  assert got["overall"] == dict(si_sdr=6.0) and got["balanced"] == dict(si_sdr=7.5)
  t = np.arange(16000) / 16000
  tone = tool.clip_traits(0.5 * np.sin(2 * np.pi * 6000 * t), 16000)
  assert tone["above_4khz"] > 0.99 and tone["dc"] < 1e-6
  assert tool.clip_traits(np.full(16000, 0.3), 16000)["dc"] > 0.99
  half = np.concatenate([np.zeros(8000), 0.5 * np.sin(2 * np.pi * 200 * t[:8000])])
  assert 0.5 <= tool.clip_traits(half, 16000)["near_silent"] < 0.52   # and the zero crossings


def _script(name):
  import importlib.util  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", name + ".py")
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_codec_headroom_knows_its_answers(tmp_path):
  """scripts/codec_headroom.py: decoding the quantized latent with every codebook is the
  codec's own reconstruction; a soup of a file with itself is that file, and of two files
  their mean, in DAC's format."""
  torch.set_num_threads(1)
  tool = _script("codec_headroom")
  spec = train_codec.CodecSpec(**TINY)
  files = []
  for seed in (0, 1):
    gen, _ = train_codec.build(dataclasses.replace(spec, seed=seed))
    files.append(str(tmp_path / f"w{seed}.pth"))
    train_codec.save_weights(gen, files[-1], spec, 0)
  gen = codec_bridge.load_dac("16khz", weights=files[0], device="cpu")
  audio = train_codec.heldout(spec, 3, seconds=0.2)
  scores = tool.by_latent(gen, audio)
  assert set(scores) == {"continuous", "unrounded", "q1", "q2"}
  np.testing.assert_allclose(scores["q2"], train_codec.si_sdr_db(
      audio, train_codec.reconstruct(gen, audio)), atol=1e-4)
  same, mean = str(tmp_path / "same.pth"), str(tmp_path / "mean.pth")
  tool.soup([files[0], files[0]], same)
  tool.soup(files, mean)
  a, b = (torch.load(f, weights_only=True)["state_dict"] for f in files)
  got = codec_bridge.load_dac("16khz", weights=same, device="cpu").state_dict()
  assert all(torch.equal(got[k], v) for k, v in a.items())
  got = torch.load(mean, weights_only=True)
  key = "decoder.model.0.weight_v"                 # seeded: the two files differ there
  assert not torch.allclose(a[key], b[key])
  torch.testing.assert_close(got["state_dict"][key], (a[key] + b[key]) / 2)
  assert got["metadata"]["averaged"] == [os.path.abspath(f) for f in files]


def test_codec_bitrate_band_measures_know_their_answers():
  """scripts/codec_bitrate.py's band correlation is +1 / -1 for the input itself and its
  negation; energy shares of white noise follow the bands' widths; randomizing the phase
  above a cut past Nyquist changes nothing, above 0 Hz leaves no SI-SDR."""
  bitrate = _script("codec_bitrate")
  x = np.random.default_rng(0).standard_normal((4, 32000))
  np.testing.assert_allclose(bitrate.band_correlations(x, x, 16000), 1.0, atol=1e-9)
  np.testing.assert_allclose(bitrate.band_correlations(x, -x, 16000), -1.0, atol=1e-9)
  widths = np.array([hi - lo for lo, hi in bitrate.BANDS_HZ]) / 8000
  np.testing.assert_allclose(bitrate.band_shares(x, 16000), widths, rtol=0.05, atol=0.01)
  assert bitrate.phase_cap(x, 9000, 16000) > 100
  assert bitrate.phase_cap(x, 0, 16000) < -10


def test_codec_reference_aligns_and_codes_at_the_bit_rate_asked():
  """scripts/codec_reference.py: the aligner finds a known delay (SI-SDR at lag 0 far
  below the aligned one); Opus pays about the bit rate asked, and its ESTOI rises with
  it; G.722
  (64 kbit/s ADPCM) is near transparent once its filter bank's delay is removed."""
  ref = _script("codec_reference")
  x = train_codec.heldout(train_codec.CodecSpec(), 2, seconds=1.0, kind="single")
  late = np.pad(x, ((0, 0), (7, 0)))[:, :x.shape[1]]
  aligned, lags = ref.best_lag_si_sdr(x, late, 160)
  np.testing.assert_array_equal(lags, 7)
  assert aligned.min() > 40 and train_codec.si_sdr_db(x, late).max() < 10
  opus = lambda c, r: ref.av_roundtrip(c, 16000, "libopus", r, ref.OPUS_OPTIONS)
  low, high = (ref.score(x, np.stack([opus(c, r)[0] for c in x]), 16000) for r in (6000, 24000))
  bits = opus(x[0], 6000)[1]
  assert 4000 < bits < 8000, bits
  # Measured 0.889 / 0.992 on these clips (SI-SDR barely moves on the synthetic talkers).
  assert high["estoi"] > low["estoi"] + 0.05, (low, high)
  g722 = ref.score(x, np.stack([ref.av_roundtrip(c, 16000, "g722", None)[0] for c in x]), 16000)
  assert g722["si_sdr_aligned"] > 20 and g722["stoi"] > 0.95, g722


# ---------------------------------------------------------- shipped codec ----

MANIFEST = os.path.join(os.path.dirname(codec_bridge.__file__), "weights", "manifest.json")


@pytest.fixture(scope="module")
def shipped():
  if not os.path.exists(MANIFEST):
    pytest.fail(f"{MANIFEST} missing: the demo codec must ship with the repository.")
  manifest = json.load(open(MANIFEST))
  path = os.path.join(os.path.dirname(MANIFEST), manifest["file"])
  return manifest, path


def test_shipped_codec_matches_its_manifest_and_loads_as_real_weights(shipped):
  manifest, path = shipped
  assert hashlib.sha256(open(path, "rb").read()).hexdigest() == manifest["sha256"]
  assert os.path.getsize(path) < 8e6
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  assert not config.codec.random and os.path.samefile(config.codec.weights, path)
  dac_model = codec_bridge.load_dac_from_config(config.codec)
  assert dac_model.neurocodec_identity["random"] is False


def test_shipped_codec_reconstructs_fresh_speech(shipped):
  """Quality floors on clips the codec never saw (floors: measured values minus margin)."""
  manifest, path = shipped
  dac_model = codec_bridge.load_dac("16khz", weights=path, device="cpu")
  spec = train_codec.CodecSpec(**manifest["spec"])
  spec = dataclasses.replace(spec, seed=spec.seed + 7)       # other held-out clips
  q = train_codec.quality(spec, dac_model, n=4, stoi=True)
  floors = manifest["test_floors"]
  for key, floor in floors.items():
    assert q[key] >= floor, (key, q[key], floor)


def test_shipped_codec_keeps_the_input_polarity(shipped):
  """Its output correlates positively with its input at lag 0 (a codec trained with
  sign-blind objectives may invert; ship_codec corrects it)."""
  manifest, path = shipped
  dac_model = codec_bridge.load_dac("16khz", weights=path, device="cpu")
  spec = dataclasses.replace(train_codec.CodecSpec(**manifest["spec"]), seed=11)
  x = train_codec.heldout(spec, 4, kind="single")
  r = train_codec.polarity(x, train_codec.reconstruct(dac_model, x))
  assert np.all(r > 0.5), r


def test_invert_output_negates_the_decoded_waveform_exactly():
  gen, _ = train_codec.build(train_codec.CodecSpec())
  x = train_codec.heldout(train_codec.CodecSpec(), 2, seconds=0.4, kind="single")
  before = train_codec.reconstruct(gen, x)
  train_codec.invert_output(gen)
  np.testing.assert_allclose(train_codec.reconstruct(gen, x), -before, atol=1e-6)


def test_shipped_codec_quantized_space_is_additive(shipped):
  manifest, path = shipped
  from neurocodec_jax import latent_structure  # pylint: disable=g-import-not-at-top
  dac_model = codec_bridge.load_dac("16khz", weights=path, device="cpu")
  spec = train_codec.CodecSpec(**manifest["spec"])
  mix, a, b = train_codec.heldout(dataclasses.replace(spec, seed=spec.seed + 7), 8, kind="parts")
  res = latent_structure.measure_arrays(codec_bridge.FrozenDAC(dac_model), mix, a, b)
  assert res["quantized"]["additivity"] >= manifest["test_floors_latent"]["additivity"]


def test_unrounded_quantizer_is_linear_and_explains_the_quantized_latent():
  """``ship_codec.unrounded`` (the quantizer without codebook rounding) is a linear
  map of z, and the breakdown's all-codebook additivity is latent_structure's."""
  from codec_training import ship as ship_codec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import latent_structure  # pylint: disable=g-import-not-at-top
  spec = train_codec.CodecSpec(**{**TINY, "n_codebooks": 4})
  dac_model, _ = train_codec.build(spec)
  dac_model.eval()
  g = torch.Generator().manual_seed(0)
  z1, z2 = (torch.randn(2, spec.latent_dim, 5, generator=g) for _ in range(2))
  with torch.no_grad():
    u = lambda z: ship_codec.unrounded(dac_model.quantizer, z)
    np.testing.assert_allclose(u(z1 + 2 * z2).numpy(), (u(z1) + 2 * u(z2)).numpy(),
                               rtol=1e-5, atol=1e-5)
    # Not the identity and not the rounded quantizer: the projections are rank-limited.
    assert not torch.allclose(u(z1), z1, atol=1e-3)
    assert not torch.allclose(u(z1), dac_model.quantizer(z1)[0], atol=1e-3)
  mix, a, b = train_codec.heldout(spec, 4, seconds=0.2, kind="parts")
  res = ship_codec.rounding_breakdown(dac_model, mix, a, b)
  direct = latent_structure.measure_arrays(codec_bridge.FrozenDAC(dac_model), mix, a, b)
  assert sorted(res["quantized_additivity_by_codebooks"]) == [1, 2, 4]
  assert res["quantized_additivity_by_codebooks"][4] == pytest.approx(
      direct["quantized"]["additivity"], abs=1e-4)
  assert -1 <= res["cos_quantized_unrounded"] <= 1


def test_codebook_lookup_is_by_direction_so_quantized_latents_do_not_scale():
  """DAC's codebook stage picks the same codeword for its projected latent z_e and any
  c * z_e (c > 0): the lookup compares directions. ``level_response`` measures it."""
  from codec_training import ship as ship_codec  # pylint: disable=g-import-not-at-top
  spec = train_codec.CodecSpec(**{**TINY, "n_codebooks": 4})
  dac_model, _ = train_codec.build(spec)
  dac_model.eval()
  stage = dac_model.quantizer.quantizers[0]
  z = torch.randn(2, spec.latent_dim, 7, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    z_e = stage.in_proj(z)
    looked_up = [stage.decode_latents(c * z_e) for c in (0.1, 1.0, 10.0)]   # (z_q, indices)
    for z_q, indices in looked_up[1:]:
      torch.testing.assert_close(indices, looked_up[0][1], rtol=0, atol=0)
      torch.testing.assert_close(z_q, looked_up[0][0], rtol=0, atol=0)  # same size too
    assert len(looked_up[0][1].unique()) > 1
  x = train_codec.heldout(spec, 3, seconds=0.6, kind="single")   # 0.2 s may be silent
  res = ship_codec.level_response(dac_model, x, gains=(1.0, 0.5))
  assert res["relative_norm"]["1.0"] == {"continuous": 1.0, "unrounded": 1.0, "quantized": 1.0}
  half = res["relative_norm"]["0.5"]
  assert 0 < half["continuous"] < 1 and 0 < half["quantized"]
  assert res["codeword_norm_mean"] > 0 and res["stage1_input_norm"] > 0


SPEECH_MANIFEST = os.path.join(os.path.dirname(MANIFEST), "speech", "manifest.json")


def test_shipped_speech_codec_matches_its_manifest_and_keeps_the_polarity():
  """The codec trained on recorded speech: its file is the one its manifest hashes, it
  was trained on the speech corpus with a voice held out, and its output correlates
  positively with its input (checked on synthetic talkers: no corpus in tests)."""
  manifest = json.load(open(SPEECH_MANIFEST))
  path = os.path.join(os.path.dirname(SPEECH_MANIFEST), manifest["file"])
  assert hashlib.sha256(open(path, "rb").read()).hexdigest() == manifest["sha256"]
  assert os.path.getsize(path) < 8e6
  assert manifest["spec"]["data"] == "speech" and manifest["spec"]["holdout_voices"]
  assert manifest["polarity"]["correlation"] > 0
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  assert os.path.samefile(neurocodec.get_config("speech").codec.weights, path)
  dac_model = codec_bridge.load_dac("16khz", weights=path, device="cpu")
  x = train_codec.heldout(train_codec.CodecSpec(seed=5), 4, kind="single")
  assert np.all(train_codec.polarity(x, train_codec.reconstruct(dac_model, x)) > 0.3)


WIDE_MANIFEST = os.path.join(os.path.dirname(MANIFEST), "speech_wide", "manifest.json")


def test_ship_carries_the_history_of_a_continued_run():
  """A run continued from the shipped file (its first logged step one past the file's)
  adds its seconds and curve to the previous manifest's; any other run does not."""
  from codec_training import ship  # pylint: disable=g-import-not-at-top
  previous = dict(file="w.pth", steps=100, train_seconds=50.0, sha256="ab",
                  curve=[dict(step=50), dict(step=100)])
  rows = [dict(step=101), dict(step=150, single_si_sdr=1.0)]
  cont = train_codec.CodecSpec(continue_init=True)
  got = ship.earlier_history(previous, "w.pth", cont, rows)
  assert got == dict(seconds=50.0, curve=previous["curve"],
                     continued_from=dict(steps=100, sha256="ab"))
  # The same run shipped again later: the part before it is kept, once.
  again = dict(previous, steps=150, train_seconds=80.0, continued_from=dict(steps=100, sha256="ab"),
               curve=previous["curve"] + [dict(step=150)])
  rows2 = [dict(step=101, seconds=1.0), dict(step=150, seconds=30.0), dict(step=200, seconds=60.0)]
  assert ship.earlier_history(again, "w.pth", cont, rows2) == dict(
      seconds=50.0, curve=previous["curve"], continued_from=dict(steps=100, sha256="ab"))
  for args in ((previous, "w.pth", train_codec.CodecSpec(), rows),      # not a continuation
               (previous, "other.pth", cont, rows),                      # another file
               (dict(previous, steps=90), "w.pth", cont, rows),          # not from that step
               (None, "w.pth", cont, rows)):
    assert ship.earlier_history(*args) == dict(seconds=0.0, curve=[], continued_from=None)


def test_shipped_wide_codec_is_a_resumable_float16_checkpoint():
  """The wide speech codec in training ships every session in float16 (its file within
  a few MB) and records its step, so the next machine continues its run
  (scripts/speech_codec_wide.sh: --init with --continue_init)."""
  manifest = json.load(open(WIDE_MANIFEST))
  path = os.path.join(os.path.dirname(WIDE_MANIFEST), manifest["file"])
  assert hashlib.sha256(open(path, "rb").read()).hexdigest() == manifest["sha256"]
  assert os.path.getsize(path) < 6e6 and "float16" in manifest["format"]
  assert manifest["spec"]["encoder_dim"] == 16 and manifest["spec"]["decoder_dim"] == 256
  assert train_codec.recorded_step(path) == manifest["steps"] > 0
  assert manifest["polarity"]["correlation"] > 0
  # Scored on the val clips (recipes' choice) and the test clips (the report).
  assert {"single_si_sdr", "single_stoi", "single_estoi"} <= set(manifest["quality_test"])
  # Its manifest covers the whole run, not only the last machine's part of it.
  steps = [r["step"] for r in manifest["curve"]]
  assert steps == sorted(set(steps)) and steps[0] <= 1000 and steps[-1] <= manifest["steps"]
  script = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "scripts", "speech_codec_wide.sh")).read()
  assert os.path.relpath(path, os.path.dirname(os.path.dirname(codec_bridge.__file__))) in script
