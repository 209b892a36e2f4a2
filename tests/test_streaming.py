"""Streaming extraction (``neurocodec_jax.streaming``) against the offline causal path:
whole-signal encode, ``apply(..., streaming=True)``, re-quantize, whole-latent decode.

A small random-weight DAC in JAX (the demo codec's strides, narrow layers) and a
small random selector generator keep it quick.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurocodec_jax import codec, streaming
from neurocodec_jax.models import dac_jax, dac_stream
from neurocodec_jax.models.generator import NeuroCodec
from tests.test_generator import _selector_config

ARCH = dict(codec.DEMO_CODEC)
HOP, D, SR, RATE, CHANNELS, NQ = 320, ARCH["latent_dim"], 16000, 128, 8, 4
SECONDS = 1.6
FRAMES = int(SECONDS * SR) // HOP
# Waveform tolerance of a chunked or stateful decode against the whole one: ten times
# the largest error measured (2.9e-4, float32 rounding through the transposed convs).
WAVE_TOL = 3e-3


@functools.lru_cache(maxsize=None)
def small_codec():
  """``(encode, decode, params, qparams)``: random DAC encoder/decoder (widths 4 and 32)."""
  enc = dac_jax.Encoder(d_model=4, strides=ARCH["encoder_rates"], d_latent=D)
  dec = dac_jax.Decoder(channels=32, rates=ARCH["decoder_rates"])
  key = jax.random.PRNGKey(0)
  params = dict(encoder=enc.init(key, jnp.zeros((1, 1, 10 * HOP)))["params"],
                decoder=dec.init(key, jnp.zeros((1, D, 10)))["params"])
  rng = np.random.default_rng(0)
  f32 = lambda *s, scale=1.0: jnp.asarray(rng.standard_normal(s) * scale, jnp.float32)
  qparams = dict(codebook=f32(NQ, 64, 8), in_w=f32(NQ, 8, D, scale=1 / 8), in_b=f32(NQ, 8),
                 out_w=f32(NQ, D, 8, scale=1 / 3), out_b=f32(NQ, D, scale=0.1))
  # Jitted: whole signals eagerly, layer by layer, would take most of the test's time
  # (the streamer jits its block with them inside either way).
  encode = jax.jit(lambda p, a: enc.apply({"params": p}, a))
  decode = jax.jit(lambda p, z: dac_jax.decode(dict(decoder=p), z))
  return encode, decode, params, qparams


def inputs(seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(int(SECONDS * SR)) / SR
  mix = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
         + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
  eeg = rng.standard_normal((CHANNELS, int(SECONDS * RATE))).astype(np.float32)
  return mix, eeg


def small_model(decision):
  config = _selector_config(**{"model.select_decision": decision, "model.select_window": "trial",
                               "model.mixture_consistency": True, "model.output_norm": "mixture",
                               "eeg_channels": CHANNELS})
  return NeuroCodec.from_config(config)


def layout(block, **kw):
  return streaming.make_layout(small_model("soft"), ARCH, eeg_rate=RATE, block_frames=block,
                               max_seconds=SECONDS, **kw)


@functools.lru_cache(maxsize=None)
def model_and_reference(decision):
  """The selector model and the offline causal reference of ``inputs()``:
  ``(model, variables, z [1, D, F] re-quantized, wave [T], logits [F, 2])``."""
  encode, decode, params, qparams = small_codec()
  model = small_model(decision)
  mix, eeg = inputs()
  latent = encode(params["encoder"], jnp.asarray(mix)[None, None])
  key = jax.random.PRNGKey(1)
  variables = model.init({"params": key, "dropout": key}, latent, jnp.asarray(eeg)[None],
                         train=False)
  z, _, aux = jax.jit(functools.partial(model.apply, train=False, streaming=True,
                                        return_aux=True))(variables, latent, jnp.asarray(eeg)[None])
  z = codec.requantize(qparams, z, NQ)
  wave = np.asarray(decode(params["decoder"], z))[0, 0]
  return model, variables, z, wave, np.asarray(aux["logits"])[0]


def make_streamer(decision, block, **kw):
  encode, decode, params, qparams = small_codec()
  model, variables, *_ = model_and_reference(decision)
  return streaming.Streamer(model, variables, qparams, encode, decode, params, ARCH,
                            eeg_channels=CHANNELS, eeg_rate=RATE, block_frames=block,
                            max_seconds=SECONDS, n_quantizers=NQ, **kw)


def test_receptive_fields_of_the_demo_codec():
  """DAC's centred convs: frame f reads 2501 samples back and 2812 ahead; the decoder's
  frame f reads latent frames f - 10 .. f + 10. Perturbing one input moves only
  outputs inside those spans, and reaches (nearly) their ends."""
  assert streaming.encoder_receptive_field(ARCH) == (-2501, 2812)
  assert streaming.decoder_receptive_field(ARCH) == (-10, 10)
  encode, decode, params, _ = small_codec()
  audio = jnp.asarray(inputs()[0])[None, None]
  base = np.asarray(encode(params["encoder"], audio))[0]
  s = 40 * HOP
  moved = np.asarray(encode(params["encoder"], audio.at[..., s].add(1.0)))[0]
  changed = np.where(np.abs(moved - base).max(0) > 0)[0]
  first, last = streaming.encoder_receptive_field(ARCH)
  assert s - changed.max() * HOP >= first and s - changed.min() * HOP <= last
  assert changed.min() <= 40 - 7 and changed.max() >= 40 + 7      # measured: 32 .. 47
  z = jnp.asarray(np.random.default_rng(1).standard_normal((1, D, 40)), jnp.float32)
  base = np.asarray(decode(params["decoder"], z))[0, 0]
  moved = np.asarray(decode(params["decoder"], z.at[..., 20].add(1.0)))[0, 0]
  changed = np.where(np.abs(moved - base).reshape(40, HOP).max(1) > 0)[0]
  np.testing.assert_array_equal(changed, np.arange(10, 31))


def test_latency_arithmetic():
  lay = layout(2)
  assert (lay.enc_left, lay.enc_ahead, lay.dec_left, lay.dec_ahead) == (8, 8, 10, 10)
  assert lay.gen_delay == lay.enc_ahead            # the EEG the mask asks for is there
  ms = streaming.latency(lay)
  assert ms == dict(block=40.0, encoder=160.0, eeg=0.0, decoder=200.0, total=400.0)
  assert lay.delay == 18 and lay.flush_blocks == 9


def whole_codec_reference():
  """The small codec, the mixture ``audio [1, 1, T]`` and its whole encoding ``[D, F]``,
  a random latent ``z [1, D, F]`` and its whole decoding ``[T]``."""
  encode, decode, params, _ = small_codec()
  mix, _ = inputs()
  audio = jnp.asarray(mix)[None, None]
  whole = np.asarray(encode(params["encoder"], audio))[0]
  z = jnp.asarray(np.random.default_rng(2).standard_normal((1, D, FRAMES)), jnp.float32)
  whole_wave = np.asarray(decode(params["decoder"], z))[0, 0]
  return encode, decode, params, audio, whole, z, whole_wave


@pytest.mark.parametrize("block", [1, 4])
def test_chunked_encode_and_decode_equal_whole(block):
  encode, decode, params, audio, whole, z, whole_wave = whole_codec_reference()

  def chunked(lay):
    enc = jax.jit(functools.partial(streaming.encoder_stage, encode, params["encoder"], lay))
    dec = jax.jit(functools.partial(streaming.decoder_stage, decode, params["decoder"], lay))
    buf = jnp.zeros((1, 1, (lay.enc_left + block + lay.enc_ahead) * HOP))
    queue = jnp.zeros((1, D, lay.dec_left + block + lay.dec_ahead))
    frames, wave = [], []
    for k in range(FRAMES // block):
      buf, f = enc(buf, audio[..., k * block * HOP:(k + 1) * block * HOP], (k + 1) * block)
      queue, w = dec(queue, z[..., k * block:(k + 1) * block], (k + 1) * block)
      frames.append(np.asarray(f)[0])
      wave.append(np.asarray(w))
    # Output k covers frames (k + 1) block - ahead - block ..: drop the leading ones.
    frames = np.concatenate(frames, -1)[:, lay.enc_ahead:]
    wave = np.concatenate(wave)[lay.dec_ahead * HOP:]
    return frames, wave

  lay = streaming.dataclasses.replace(layout(block), gen_delay=0)     # stages alone: no generator
  frames, wave = chunked(lay)
  n = frames.shape[-1] - 1          # the last frame emitted still sees the flush-free end
  scale = np.abs(whole).max()                     # float32 rounding of latents up to ~70
  np.testing.assert_allclose(frames[:, :n], whole[:, :n], rtol=0, atol=1e-4 * scale)
  m = len(wave) // HOP - lay.dec_ahead
  np.testing.assert_allclose(wave[:m * HOP], whole_wave[:m * HOP], rtol=0, atol=WAVE_TOL)
  # One frame less look-ahead (or left context) than measured is not exact.
  short = streaming.dataclasses.replace(lay, enc_ahead=lay.enc_ahead - 1,
                                        dec_ahead=lay.dec_ahead - 1)
  frames, wave = chunked(short)
  assert np.abs(frames[:, :n] - whole[:, :n]).max() > 1e-3 * scale
  assert np.abs(wave[:m * HOP] - whole_wave[:m * HOP]).max() > WAVE_TOL


def test_stateful_codec_equals_whole():
  """``dac_stream``: layer-by-layer streaming at 20 ms blocks equals the whole signal's
  encoding and decoding; the encoder streams exactly its look-ahead behind (8 frames)."""
  encode, decode, params, audio, whole, z, whole_wave = whole_codec_reference()
  enc = jax.jit(lambda s, a, k: dac_stream.encoder_step(params["encoder"], s, a, k, 8))
  dec = jax.jit(lambda s, zz, k: dac_stream.decoder_step(params["decoder"], s, zz, k, 0, 10))
  es = dac_stream.init_state(dac_stream.encoder_step, params["encoder"], audio[..., :HOP], 8)
  ds = dac_stream.init_state(dac_stream.decoder_step, params["decoder"], z[..., :1], 0, 10)
  frames, wave = [], []
  for k in range(FRAMES):
    es, f = enc(es, audio[..., k * HOP:(k + 1) * HOP], k + 1)
    ds, w = dec(ds, z[..., k:k + 1], k + 1)
    frames.append(np.asarray(f)[0])
    wave.append(np.asarray(w)[0, 0])
  frames = np.concatenate(frames, -1)[:, 8:]
  wave = np.concatenate(wave)[10 * HOP:]
  np.testing.assert_allclose(frames, whole[:, :frames.shape[-1]], rtol=0,
                             atol=1e-5 * np.abs(whole).max())
  np.testing.assert_allclose(wave, whole_wave[:len(wave)], rtol=0, atol=WAVE_TOL)
  with pytest.raises(ValueError, match="behind"):
    dac_stream.encoder_step(params["encoder"], None, audio[..., :HOP], 1, 7)


# (The stateful codec at 2-frame blocks: test_hard_selector_streams_the_same_decisions.)
@pytest.mark.parametrize("block,stateful", [(1, True), (2, False)])
def test_streamed_output_equals_the_offline_causal_reference(block, stateful):
  _, _, _, ref, _ = model_and_reference("soft")
  streamer = make_streamer("soft", block, stateful=stateful)
  out = streamer.run(*inputs())
  n = streaming.exact_frames(streamer.layout, FRAMES) * HOP
  err = np.abs(out["wave"][:n] - ref[:n]).max()
  assert err < 5e-3, err
  assert n >= (FRAMES - 20) * HOP
  if not stateful:   # too little decoder look-ahead is audible in the output
    short = make_streamer("soft", block, dec_ahead=streamer.layout.dec_ahead - 2)
    assert np.abs(short.run(*inputs())["wave"][:n] - ref[:n]).max() > 0.1


def test_hard_selector_streams_the_same_decisions():
  """Hard decisions: the same stream wherever the offline decision is not a tie (at the
  correlation's first frame it is: one sample's correlation is rounding noise)."""
  _, _, z_ref, _, logits = model_and_reference("hard")
  streamer = make_streamer("hard", 2, stateful=True)
  lay = streamer.layout
  state, zs = streamer.init_state(), []
  mix, eeg = inputs()
  for k in range(FRAMES // 2 + lay.gen_delay // 2 + 1):
    e0, e1 = lay.eeg_arrived(2 * k), lay.eeg_arrived(2 * k + 2)
    block = np.zeros((CHANNELS, lay.eeg_block), np.float32)
    part = eeg[:, e0:e1]
    block[:, :part.shape[1]] = part
    audio = np.zeros(2 * HOP, np.float32)
    seg = mix[2 * k * HOP:(2 * k + 2) * HOP]
    audio[:len(seg)] = seg
    state, _ = streamer.step(state, audio, block, e1 - e0)
    zs.append(np.asarray(state["z"])[0])
  z = np.concatenate(zs, -1)[:, lay.gen_delay:][:, :FRAMES - lay.enc_ahead - 1]
  ref = np.asarray(z_ref)[0, :, :z.shape[-1]]
  differs = np.abs(z - ref).max(0) > 1e-3
  ties = np.abs(logits[:z.shape[-1], 0] - logits[:z.shape[-1], 1]) < 1e-2
  assert not np.any(differs & ~ties), np.where(differs)[0]
  assert differs.sum() <= 2
