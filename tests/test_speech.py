"""The speech corpus source on a tiny fixture in the packages' real formats (G.722 and
ogg Vorbis, in the packages' folder layout), and codec training's draws from it."""

import json
import os

import numpy as np
import pytest

from neurocodec_jax.data import speech

SR = 16000


def _voiced(seconds: float, f0: float, seed: int, rate: int = SR) -> np.ndarray:
  rng = np.random.default_rng(seed)
  t = np.arange(int(seconds * rate)) / rate
  x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 8))
  x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
  return (0.2 * x / np.abs(x).max()).astype(np.float32)


def _padded(x: np.ndarray, rate: int) -> np.ndarray:
  """Half a second of silence either side (trimming must remove it)."""
  pad = np.zeros(rate // 2, np.float32)
  return np.concatenate([pad, x, pad])


def write_g722(path: str, x: np.ndarray):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path, "w", format="g722") as f:
    stream = f.add_stream("g722", rate=SR, layout="mono")
    pcm = (np.clip(x, -1, 1) * 32767).astype(np.int16)[None]
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = SR
    for packet in stream.encode(frame):
      f.mux(packet)
    for packet in stream.encode(None):
      f.mux(packet)


def write_ogg(path: str, x: np.ndarray, rate: int):
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  sf.write(path, np.stack([x, x], 1), rate, format="OGG", subtype="VORBIS")   # stereo


VOICES = (speech.Voice("en_a", "pkg-g722", "sounds/a/**/*.g722", "a", "f", "en", ("chime",)),
          speech.Voice("cs_b", "pkg-ogg", "sound/*/cs/*-b-*.ogg", "b", "m", "cs"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  root = tmp_path_factory.mktemp("speech")
  g722 = root / "pkg-g722"
  ogg = root / "pkg-ogg"
  for i in range(24):
    d = g722 / "sounds" / "a" / ("digits" if i % 2 else "")
    d.mkdir(parents=True, exist_ok=True)
    write_g722(str(d / f"p{i}.g722"), _padded(_voiced(1.0, 210, i), SR))
    level = ogg / "sound" / f"lvl{i % 3}" / "cs"
    level.mkdir(parents=True, exist_ok=True)
    write_ogg(str(level / f"lvl{i % 3}-b-{i}.ogg"),
              _padded(_voiced(1.0, 110, 100 + i, 22050), 22050),
              22050)
  # Not speech, as the Asterisk packages hold them: a codec's idle noise, a hiss.
  (g722 / "sounds" / "a" / "silence").mkdir()
  rng = np.random.default_rng(0)
  write_g722(str(g722 / "sounds/a/silence/1.g722"), 1e-4 * rng.standard_normal(SR))
  t = np.arange(SR // 2) / SR
  write_g722(str(g722 / "sounds/a/hiss.g722"), 0.3 * np.sin(2 * np.pi * 6000 * t))
  write_g722(str(g722 / "sounds/a/chime.g722"), _voiced(1.0, 440, 99))   # named an effect
  (g722 / "usr/share/doc/pkg-g722").mkdir(parents=True)
  (g722 / "usr/share/doc/pkg-g722/copyright").write_text("License: CC-BY-SA-3.0\n")
  out = root / "out"
  manifest = speech.build(str(out), SR, voices=VOICES,
                          unpacked={"pkg-g722": str(g722), "pkg-ogg": str(ogg)})
  return out, manifest


def test_build_decodes_trims_resamples_and_splits_by_clip(corpus):
  out, manifest = corpus
  assert manifest == json.load(open(out / "corpus" / "manifest.json"))
  assert manifest["packages"]["pkg-g722"]["license"] == "CC-BY-SA-3.0"
  c = speech.SpeechCorpus(str(out))
  for v in manifest["voices"]:
    assert sum(v["clips"].values()) == 24, v          # every clip in exactly one split
    # Trimmed to the voiced second (10 ms frames; the G.722 codec's delay is a few ms).
    for split in speech.SPLITS:
      for clip in c.clips(split, v["name"]):
        assert abs(len(clip) - SR) <= 0.03 * SR, len(clip)
  # The split rule is a pure function of the voice and the clip's path.
  assert speech.split_of("en_a", "sounds/a/p3.g722") == speech.split_of("en_a", "sounds/a/p3.g722")
  fractions = np.mean([speech.split_of("v", f"clip{i}") == "train" for i in range(4000)])
  assert abs(fractions - speech.SPLIT_FRACTIONS[0]) < 0.02


def test_clips_that_are_not_speech_are_dropped_and_listed(corpus):
  _, manifest = corpus
  reasons = {d["path"]: d["reason"] for d in manifest["dropped"]}
  assert sorted(reasons) == ["sounds/a/chime.g722", "sounds/a/hiss.g722",
                             "sounds/a/silence/1.g722"], reasons
  assert reasons["sounds/a/chime.g722"].startswith("a sound effect")
  assert reasons["sounds/a/silence/1.g722"].startswith("near-silent")
  assert reasons["sounds/a/hiss.g722"].startswith("not speech")
  assert [v["dropped"] for v in manifest["voices"]] == [3, 0]
  assert manifest["rule"]["min_rms_db"] == speech.MIN_RMS_DB
  # Each rule on a known case; voiced speech passes every one, at 16 and at 8 kHz.
  voiced = _voiced(1.0, 150, 0)
  assert speech.screen(voiced, SR) is None
  assert speech.screen(_voiced(1.0, 150, 0, 8000), 8000) is None
  assert speech.screen(voiced * 10 ** (-70 / 20), SR).startswith("near-silent")
  assert speech.screen(voiced + 0.1, SR).startswith("DC offset")
  noise = np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.1
  hiss = signal_highpass(noise, 4500)
  assert speech.screen(hiss, SR).startswith("not speech")


def signal_highpass(x: np.ndarray, cutoff: float) -> np.ndarray:
  from scipy import signal  # pylint: disable=g-import-not-at-top
  sos = signal.butter(8, cutoff, "highpass", fs=SR, output="sos")
  return signal.sosfilt(sos, x).astype(np.float32)


def test_decoded_audio_is_the_written_audio(tmp_path):
  """G.722 and resampled ogg come back at the right rate, level and polarity."""
  x = _voiced(1.0, 180, 7)
  write_g722(str(tmp_path / "a.g722"), x)
  y = speech.decode(str(tmp_path / "a.g722"), SR)
  lag = np.argmax(np.correlate(y[:4000], x[:4000], "full")) - 3999
  y = np.roll(y, -lag)[:len(x)]
  assert abs(len(speech.decode(str(tmp_path / "a.g722"), SR)) - len(x)) < 200
  assert np.corrcoef(x[:len(y)], y)[0, 1] > 0.9
  write_ogg(str(tmp_path / "b.ogg"), _voiced(1.0, 180, 8, 22050), 22050)
  z = speech.decode(str(tmp_path / "b.ogg"), SR)
  assert len(z) == SR and 0.1 < np.abs(z).max() < 0.3


def test_segments_and_talkers(corpus):
  out, _ = corpus
  c = speech.SpeechCorpus(str(out))
  assert c.voices() == ["en_a", "cs_b"] and c.talker("cs_b") == "b"
  a = c.segment(np.random.default_rng(0), "train", "en_a", 8000)
  b = c.segment(np.random.default_rng(0), "train", "en_a", 8000)
  assert a.shape == (8000,) and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)


def test_missing_corpus_and_missing_apt_say_what_to_do(tmp_path, monkeypatch):
  with pytest.raises(speech.SpeechSourceError, match="python -m neurocodec_jax.data.speech"):
    speech.SpeechCorpus(str(tmp_path))
  monkeypatch.setattr(speech.shutil, "which", lambda name: None)
  with pytest.raises(speech.SpeechSourceError, match="apt-get download asterisk-core-sounds"):
    speech.fetch(str(tmp_path))


def test_codec_training_draws_speech_and_holds_out_a_voice(corpus, monkeypatch):
  out, _ = corpus
  from codec_training import train  # pylint: disable=g-import-not-at-top
  spec = train.CodecSpec(data="speech", speech_root=str(out), holdout_voices=("cs_b",),
                         mixture_fraction=0.0)
  assert train.training_voices(spec) == ["en_a"]
  x = train.clip(spec, 3, 1)
  np.testing.assert_array_equal(x, train.clip(spec, 3, 1))      # pure function of ids
  assert x.shape == (spec.clip_length,)
  unseen = train.heldout(spec, 2, seconds=0.4, kind="single", unseen=True)
  seen = train.heldout(spec, 2, seconds=0.4, kind="single")
  assert unseen.shape == seen.shape == (2, 6400)
  # Recipes are chosen on the training voices' val clips, the codec reported on their
  # test clips; the held-out voice's clips are its test split's either way.
  drawn = []
  def segment(self, rng, split, voice, length):   # the fixture's en_a has no test clip
    drawn.append((split, voice))
    return rng.standard_normal(length).astype(np.float32)
  voices = []
  train.heldout(spec, 3, seconds=0.4, kind="single", unseen=True, voices=voices)
  assert voices == ["cs_b"] * 3          # each clip's voice, for a score broken down by voice
  with monkeypatch.context() as m:
    m.setattr(speech.SpeechCorpus, "segment", segment)
    for split in ("val", "test"):
      for unseen in (False, True):
        drawn.clear()
        train.heldout(spec, 2, seconds=0.4, kind="mixture" if not unseen else "single",
                      unseen=unseen, split=split)
        first = ("test", "cs_b") if unseen else (split, "en_a")
        assert drawn == [first, (split, "en_a")] * 2, (split, unseen, drawn)  # a, then b
    with pytest.raises(ValueError, match="split='train'"):
      train.heldout(spec, 1, split="train")
  # Held-out clips take the voices in rotation: the same share of each on every split.
  both = train.CodecSpec(data="speech", speech_root=str(out), holdout_voices=())
  with monkeypatch.context() as m:
    m.setattr(speech.SpeechCorpus, "segment", segment)
    for split in ("val", "test"):
      voices = []
      train.heldout(both, 5, seconds=0.4, kind="mixture", split=split, voices=voices)
      assert voices == ["en_a", "cs_b", "en_a", "cs_b", "en_a"], (split, voices)
    # rotate=False: the random draw, from the stream scores were once taken with.
    voices = []
    train.heldout(both, 5, seconds=0.4, kind="single", voices=voices, rotate=False)
    want = [["en_a", "cs_b"][np.random.default_rng([both.seed, 10 ** 9, i]).integers(2)]
            for i in range(5)]
    assert voices == want and len(set(want)) == 2, voices
  with pytest.raises(speech.SpeechSourceError, match="'en_a' has no clips in the test split"):
    speech.SpeechCorpus(str(out)).segment(np.random.default_rng(0), "test", "en_a", 100)
  with pytest.raises(ValueError, match="not in"):
    train.training_voices(train.CodecSpec(data="speech", speech_root=str(out),
                                          holdout_voices=("zz",)))


def test_trials_from_recorded_speech(corpus):
  """The generator's trials from the corpus: two people per trial, mixed at the level
  spread, EEG following their envelopes, every trial a pure function of its ids."""
  from neurocodec_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  out, _ = corpus
  spec = synthetic.SyntheticSpec(talkers=str(out), seconds=0.5, eeg_channels=4, subjects=2,
                                 n_train=6, n_val=0, n_test=0)
  rng = np.random.default_rng([1, 2])
  subject = synthetic.make_subject(np.random.default_rng(0), 4, spec.eeg_rate)
  mix, att, unatt, eeg = synthetic.make_trial(rng, spec, subject, "train")
  np.testing.assert_allclose(mix, att + unatt, atol=1e-6)
  assert eeg.shape == (spec.eeg_length, 4) and np.isfinite(eeg).all()
  level = 20 * np.log10(np.sqrt(np.mean(unatt ** 2)) / np.sqrt(np.mean(att ** 2)))
  assert abs(level) <= spec.level_db + 1e-6
  again = synthetic.make_trial(np.random.default_rng([1, 2]), spec, subject, "train")
  np.testing.assert_array_equal(again[0], mix)
  # The two talkers are different people: the fixture's voices are at 210 and 110 Hz.
  def f0(x):
    spectrum = np.abs(np.fft.rfft(x))
    freqs = np.fft.rfftfreq(len(x), 1 / spec.sample_rate)
    band = (freqs > 80) & (freqs < 300)
    return freqs[band][np.argmax(spectrum[band])]
  for i in range(3):
    _, att, unatt, _ = synthetic.make_trial(np.random.default_rng([i]), spec, subject, "train")
    assert sorted(round(f0(x) / 10) * 10 for x in (att, unatt)) == [110, 210]


def test_demo_runs_the_speech_preset_where_the_recordings_are(corpus, tmp_path, monkeypatch,
                                                                capsys):
  """`make demo` (--preset auto): the speech preset when its corpus is there or can be
  fetched; otherwise it says why and runs the synthetic demo. A named preset is kept."""
  from neurocodec_jax.cli import demo  # pylint: disable=g-import-not-at-top
  out, _ = corpus
  assert demo.choose_preset("auto", str(out)) == "speech"
  monkeypatch.setattr(speech.shutil, "which", lambda name: None)      # no apt-get
  assert demo.choose_preset("auto", str(tmp_path / "none")) == "demo"
  said = capsys.readouterr().out
  assert "recorded speech unavailable" in said and "apt-get" in said
  assert demo.choose_preset("reproduce", str(tmp_path / "none")) == "reproduce"
