"""Streaming extraction: the mixture and the EEG arrive in blocks, the output leaves in blocks.

A block is ``block_frames`` latent frames of audio (``block_frames * hop`` samples: 20,
40, 80 ms with the 16 kHz demo codec) plus the EEG samples taken meanwhile. Per
block, one jitted program (:meth:`Streamer.step`, a pure function of an explicit
state pytree):

1. encodes the codec in a chunk: DAC's convolutions are centred, not causal, so
   latent frame f depends on audio samples ``f * hop + first .. f * hop + last``
   (:func:`encoder_receptive_field`, from the layers' kernels, dilations, strides and
   paddings; the demo codec: -2501 .. +2812). The chunk keeps ``enc_left`` frames of
   left context and emits the frames whose look-ahead has arrived, ``enc_ahead``
   frames behind the newest audio;
2. runs the generator frame by frame (``NeuroCodec.step``): Mamba caches, the EEG
   features recomputed over a short trailing window (``EEGEncoder.receptive_field``)
   and their attention keys cached once, the cross-attention over every key arrived
   (``stream_mask``'s rule), the positional encodings at the global frame index, the
   selector's running correlation from carried sums with ``select_lag()`` frames of
   lag, all as ``apply(..., streaming=True)``;
3. re-quantizes (``codec.requantize_output``) and decodes in a chunk: output sample
   n of frame f depends on latent frames ``f + first .. f + last``
   (:func:`decoder_receptive_field`; the demo codec: -10 .. +10), so the decoder
   keeps ``dec_left`` frames of context and outputs ``dec_ahead`` frames behind the
   newest generated frame.

With ``stateful=True`` (JAX DAC weights) steps 1 and 3 run ``dac_stream`` instead:
every layer keeps the inputs its next outputs need, so a block costs its own samples,
with the same look-aheads and the same outputs.

Every chunk that reaches back before the stream's start starts at sample (frame) 0,
as the whole signal's zero padding does, and what has not arrived yet is zeros that
lie outside the cone of what is emitted: the streamed output equals encoding the
whole mixture, ``apply(..., streaming=True)`` and decoding the whole latent, up to
float rounding, except for the end: the stream is flushed with silence (zero audio
and EEG), where the whole signal's convolutions pad each layer with zeros, so the
last ``enc_ahead + dec_ahead`` frames or so differ (:func:`exact_frames`).

Algorithmic latency (:func:`latency`): a sample waits for its block to fill, then
for the generator's delay (the encoder's look-ahead, or the EEG's when
``model.stream_lookahead`` asks for more), then for the decoder's look-ahead.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax import codec
from neurocodec_jax.models import dac_stream
from neurocodec_jax.models.eeg_encoder import EEGEncoder
from neurocodec_jax.models.generator import NeuroCodec, stream_horizon
from neurocodec_jax.models.layers import sinusoidal_at

# ------------------------------------------------------- receptive fields ----

# A layer along time: (kind, taps span (dilation * (kernel - 1) + 1), stride, padding).
_RESIDUAL = [("conv", 6 * d + 1, 1, 3 * d) for d in (1, 3, 9)]   # k7 dilated; the k1 adds none


def encoder_layers(rates) -> list[tuple]:
  """DAC's encoder along time (``dac_jax.Encoder``), in order."""
  layers = [("conv", 7, 1, 3)]
  for s in rates:
    layers += _RESIDUAL + [("conv", 2 * s, s, math.ceil(s / 2))]
  return layers + [("conv", 3, 1, 1)]


def decoder_layers(rates) -> list[tuple]:
  """DAC's decoder along time (``dac_jax.Decoder``), in order."""
  layers = [("conv", 7, 1, 3)]
  for s in rates:
    layers += [("transposed", 2 * s, s, math.ceil(s / 2))] + _RESIDUAL
  return layers + [("conv", 7, 1, 3)]


def input_span(layers, first: int, last: int) -> tuple[int, int]:
  """The inputs outputs ``first .. last`` of ``layers`` depend on (interior: the zero
  padding at the signal's edges is where the whole signal and a chunk differ)."""
  for kind, span, stride, pad in reversed(layers):
    if kind == "conv":             # out t <- in t * stride - pad .. + span - 1
      first, last = first * stride - pad, last * stride - pad + span - 1
    else:                          # torch's transposed conv: the input dilated by stride,
      edge = span - 1 - pad        # padded by span - 1 - pad, convolved
      first, last = -(-(first - edge) // stride), (last - edge + span - 1) // stride
  return first, last


def encoder_receptive_field(arch) -> tuple[int, int]:
  """``(first, last)``: latent frame f depends on samples ``f * hop + first .. f * hop + last``."""
  hop, f = codec.hop_length(arch), 1000                 # any frame far from the edges
  first, last = input_span(encoder_layers(arch["encoder_rates"]), f, f)
  return first - f * hop, last - f * hop


def decoder_receptive_field(arch) -> tuple[int, int]:
  """``(first, last)``: frame f's output samples depend on latent frames ``f + first .. f + last``."""
  hop, f = codec.hop_length(arch), 1000
  layers = decoder_layers(arch["decoder_rates"])
  spans = [input_span(layers, f * hop + o, f * hop + o) for o in range(hop)]
  return min(s[0] for s in spans) - f, max(s[1] for s in spans) - f


# ----------------------------------------------------------------- layout ----

@dataclasses.dataclass(frozen=True)
class Layout:
  """A streamer's static sizes, in latent frames unless named otherwise."""
  hop: int                 # audio samples per frame
  sample_rate: int
  eeg_rate: int
  block: int               # frames per block
  enc_left: int            # encoder chunk: left context
  enc_ahead: int           # ... and look-ahead (frames emitted behind the newest audio)
  gen_delay: int           # frames the generator runs behind the newest audio (>= enc_ahead)
  dec_left: int            # decoder chunk: left context
  dec_ahead: int           # ... and look-ahead
  max_frames: int          # the stream's capacity (flush included)
  eeg_block: int           # EEG samples a block brings, at most
  eeg_window: int          # EEG samples the features are recomputed over
  n_keys: int              # EEG features (attention keys) the state holds

  def eeg_arrived(self, n_frames: int) -> int:
    """EEG samples taken before audio frame ``n_frames`` starts (sample k at k / eeg_rate)."""
    return -(-n_frames * self.hop * self.eeg_rate // self.sample_rate)

  @property
  def delay(self) -> int:
    """Frames from a frame's arrival to its output: the generator's delay + the decoder's."""
    return self.gen_delay + self.dec_ahead

  @property
  def flush_blocks(self) -> int:
    """Blocks of silence that push the last frame out."""
    return -(-self.delay // self.block)


def latency(layout: Layout) -> dict:
  """Algorithmic latency in ms: ``block + generator delay + decoder look-ahead``, the
  generator delay being the encoder's look-ahead or, when ``model.stream_lookahead``
  waits longer for EEG, the EEG's (both arrive together, so they overlap)."""
  ms = lambda frames: 1000.0 * frames * layout.hop / layout.sample_rate
  return dict(block=ms(layout.block), encoder=ms(layout.enc_ahead),
              eeg=ms(layout.gen_delay - layout.enc_ahead), decoder=ms(layout.dec_ahead),
              total=ms(layout.block + layout.gen_delay + layout.dec_ahead))


def make_layout(model: NeuroCodec, arch, *, eeg_rate: int, block_frames: int,
                max_seconds: float, enc_ahead: int | None = None,
                dec_ahead: int | None = None) -> Layout:
  """The layout for ``model`` and the codec ``arch``; ``enc_ahead``/``dec_ahead``
  (frames) override the measured look-aheads (less than measured: not exact)."""
  hop, sr = codec.hop_length(arch), int(arch["sample_rate"])
  e_first, e_last = encoder_receptive_field(arch)
  d_first, d_last = decoder_receptive_field(arch)
  enc_left = -(-(-e_first) // hop)
  enc_ahead = -(-(e_last + 1) // hop) - 1 if enc_ahead is None else enc_ahead
  dec_ahead = d_last if dec_ahead is None else dec_ahead
  eeg_block = -(-block_frames * hop * eeg_rate // sr) + 1
  kernel = model.eeg_kernel
  eeg_window = eeg_block + kernel + 8           # >= new samples + kernel + 5: every feature
  # gets written once its receptive field (-3 .. kernel + 2) lies inside a window
  frames = int(math.ceil(max_seconds * sr / hop))
  layout = Layout(hop=hop, sample_rate=sr, eeg_rate=eeg_rate, block=block_frames,
                  enc_left=enc_left, enc_ahead=enc_ahead, gen_delay=enc_ahead,
                  dec_left=-d_first, dec_ahead=dec_ahead, max_frames=0, eeg_block=eeg_block,
                  eeg_window=eeg_window, n_keys=0)
  # The generator's frame i needs every key stream_mask shows it and the cue at frame
  # i - lag: EEG up to their receptive fields, arrived gen_delay frames after frame i.
  i = np.arange(frames + 64)
  need = stream_horizon(len(i), model.frame_seconds, eeg_rate, model.lookahead, kernel)
  if model.selector == "correlation":           # the cue counts from frame lag on
    lag = model.select_lag()
    lo, _ = cue_points(np.maximum(i - lag, 0), model.frame_seconds, eeg_rate)
    need = np.where(i >= lag, np.maximum(need, lo + 1), need)
  need = need + EEGEncoder.receptive_field(kernel)[1]           # newest EEG sample needed
  gen_delay = enc_ahead
  while np.any(need >= [layout.eeg_arrived(int(k) + 1 + gen_delay) for k in i]):
    gen_delay += 1
  max_frames = frames + -(-(gen_delay + dec_ahead) // block_frames) * block_frames + block_frames
  if max_frames > model.max_len:
    raise ValueError(f"{max_seconds} s is {max_frames} frames with the flush, over "
                     f"model.max_len={model.max_len}.")
  return dataclasses.replace(layout, gen_delay=gen_delay, max_frames=max_frames,
                             n_keys=layout.eeg_arrived(max_frames) + eeg_window)


def cue_points(frames: np.ndarray, frame_seconds: float, eeg_rate: int):
  """``(lo, frac)``: the envelope at frame t, as ``models.cue.frame_interpolation``
  without its clip at the window's end: ``(1 - frac) env[lo] + frac env[lo + 1]``."""
  pos = np.maximum((np.asarray(frames) + 0.5) * frame_seconds * eeg_rate - 0.5, 0)
  lo = np.floor(pos).astype(np.int64)
  return lo, (pos - lo).astype(np.float32)


def exact_frames(layout: Layout, n_frames: int) -> int:
  """Frames of an ``n_frames`` stream whose output equals the whole-signal reference:
  all but the end, where the flush's silence meets the encoder's look-ahead, and the
  decoder's look-ahead carries a differing latent frame g back to output g - dec_ahead."""
  return max(n_frames - layout.enc_ahead - 1 - layout.dec_ahead, 0)


# --------------------------------------------------------------- streamer ----

class Streamer:
  """Block-wise extraction with one model and codec (see the module docstring).

  Args:
    model, variables: the generator and its ``{"params", "batch_stats"}``.
    qparams: the quantizer's pytree (``Run.frozen["quantizer"]``).
    encode: ``encode(params, audio [1, 1, T]) -> latent [1, D, T / hop]``, DAC's
      encoder (jittable: JAX or a host callback); ``params`` is ``codec_params["encoder"]``.
    decode: ``decode(params, z [1, D, F]) -> [1, 1, F * hop]``, the run's decoder;
      ``params`` is ``codec_params["decoder"]``.
    arch: the codec's architecture (``config.codec.arch``).
    eeg_channels, eeg_rate: the EEG's.
    block_frames: latent frames per block.
    max_seconds: the longest stream (the attention keys' buffer and the positional
      encodings are sized by it).
    mix_input: ``model.mix_input`` ("continuous": the encoder's output; "quantized":
      it re-quantized with every codebook, i.e. the codes' z).
    requantize: ``codec.requantize_output``, with ``n_quantizers``.
    enc_ahead, dec_ahead: look-ahead overrides in frames (default: measured, exact).
    stateful: stream the codec layer by layer (``dac_stream``: a block costs its own
      samples) rather than re-encode and re-decode a chunk with context per block;
      needs ``codec_params`` to be ``dac_jax``'s trees (``encode``/``decode`` are then
      unused) and look-aheads no shorter than measured.
  """

  def __init__(self, model: NeuroCodec, variables: dict, qparams: dict, encode: Callable,
               decode: Callable, codec_params: dict, arch, *, eeg_channels: int,
               eeg_rate: int, block_frames: int, max_seconds: float,
               mix_input: str = "continuous", requantize: bool = True,
               n_quantizers: int | None = None, enc_ahead: int | None = None,
               dec_ahead: int | None = None, stateful: bool = False):
    if model.backbone != "mamba":
      raise ValueError("streaming needs the mamba backbone (a recurrent state).")
    self.model, self.variables, self.qparams = model, variables, qparams
    self.encode, self.decode, self.codec_params = encode, decode, codec_params
    self.arch, self.eeg_channels = arch, eeg_channels
    self.mix_input, self.requantize, self.n_quantizers = mix_input, requantize, n_quantizers
    self.stateful = stateful
    self.layout = make_layout(model, arch, eeg_rate=eeg_rate, block_frames=block_frames,
                              max_seconds=max_seconds, enc_ahead=enc_ahead, dec_ahead=dec_ahead)
    lay = self.layout
    frames = np.arange(lay.max_frames)
    lo, frac = cue_points(frames, model.frame_seconds, eeg_rate)
    self.tables = dict(
        horizon=jnp.asarray(stream_horizon(lay.max_frames, model.frame_seconds, eeg_rate,
                                           model.lookahead, model.eeg_kernel), jnp.int32),
        cue_lo=jnp.asarray(lo, jnp.int32), cue_frac=jnp.asarray(frac),
        eeg_pe=jnp.asarray(sinusoidal_at(model.eeg_positions(lay.n_keys), model.hidden_dim)))
    # The state is donated: the key buffers and the codec's are updated in place.
    self._step = jax.jit(self._block, donate_argnums=4)

  @classmethod
  def from_run(cls, run, state: dict, *, block_ms: float, max_seconds: float,
               dac_params: dict | None = None, stateful: bool = True, **kw) -> "Streamer":
    """The streamer of a trained run (``run.Run`` and ``restore_generator``'s state);
    ``block_ms`` a multiple of the codec's frame. The codec streams layer by layer
    (``stateful``) with the JAX DAC: the run's own with ``codec.backend=jax``, else
    ``dac_params`` (``{"encoder", "decoder"}``, ``dac_jax``'s trees of the same
    weights, e.g. ``codec_bridge.jax_dac.JaxDAC(run.codec.model).params``); without
    them it re-encodes and re-decodes a chunk per block through the run's codec."""
    config = run.config
    if config.model.output_waveform != "decoded":
      raise ValueError(f"model.output_waveform={config.model.output_waveform!r} masks the "
                       f"mixture with an STFT that reads ahead (32 ms at 16 kHz): streaming outputs the "
                       f"decoded prediction; set model.output_waveform='decoded'.")
    if config.model.bidirectional:
      raise ValueError("model.bidirectional=True is an offline separator: streaming needs "
                       "the causal one.")
    if config.model.stream_form == "tokens":
      raise ValueError("model.stream_form='tokens' does not stream (its frame step is "
                       "not built): use the offline extraction.")
    if config.model.eeg_norm != "batch":
      raise ValueError(f"model.eeg_norm={config.model.eeg_norm!r} normalizes each EEG window "
                       "by its own statistics, which read ahead: use the offline extraction.")
    arch = config.codec.arch
    frame_ms = 1000 * codec.frame_seconds(arch)
    block = int(round(block_ms / frame_ms))
    if block < 1 or abs(block * frame_ms - block_ms) > 1e-6:
      raise ValueError(f"block_ms={block_ms} is not a multiple of the codec's {frame_ms:g} ms frame.")
    encode, enc_params = run.codec.encoder()
    codec_params = dict(encoder=enc_params, decoder=run.frozen["decoder"])
    jax_codec = enc_params is not None and codec_params["decoder"] is not None
    if stateful and dac_params is not None:
      codec_params = dict(encoder=dac_params["encoder"], decoder=dac_params["decoder"])
    stateful = stateful and (jax_codec or dac_params is not None)
    variables = {"params": state["g"]["params"], "batch_stats": state["g"]["batch_stats"]}
    return cls(run.models.generator, variables, run.frozen["quantizer"], encode,
               run.models.decode, codec_params, dict(arch), eeg_channels=config.eeg_channels,
               eeg_rate=config.data.eeg_rate, block_frames=block, max_seconds=max_seconds,
               mix_input=config.model.mix_input, requantize=config.codec.requantize_output,
               n_quantizers=config.codec.n_quantizers_eval, stateful=stateful, **kw)

  # The state: buffers of the newest audio, EEG, encoded and generated frames; the
  # keys and envelope of every EEG feature so far; the generator's recurrent state.
  def init_state(self) -> dict:
    lay, d = self.layout, int(self.arch["latent_dim"])
    heads = self.model.num_heads
    head_dim = self.model.hidden_dim // heads
    zeros = lambda *s: jnp.zeros(s, jnp.float32)
    if self.stateful:
      codec_state = dict(
          enc=dac_stream.init_state(dac_stream.encoder_step, self.codec_params["encoder"],
                                    zeros(1, 1, lay.block * lay.hop), lay.enc_ahead),
          dec=dac_stream.init_state(dac_stream.decoder_step, self.codec_params["decoder"],
                                    zeros(1, d, lay.block), lay.gen_delay, lay.dec_ahead))
    else:
      codec_state = dict(audio=zeros(1, 1, (lay.enc_left + lay.block + lay.enc_ahead) * lay.hop),
                         out_queue=zeros(1, d, lay.dec_left + lay.block + lay.dec_ahead))
    return dict(
        frames=jnp.zeros((), jnp.int32), eeg_count=jnp.zeros((), jnp.int32),
        z_queue=zeros(1, d, lay.gen_delay - lay.enc_ahead), z=zeros(1, d, lay.block),
        eeg=zeros(1, self.eeg_channels, lay.eeg_window),
        keys=[(zeros(1, lay.n_keys, heads, head_dim), zeros(1, lay.n_keys, heads, head_dim))
              for _ in range(self.model.num_layers)],
        env=zeros(1, lay.n_keys),
        gen=self.model.apply(self.variables, 1, method=NeuroCodec.init_step_state),
        **codec_state)

  def step(self, state: dict, audio: np.ndarray, eeg: np.ndarray, n_eeg: int):
    """One block: ``audio [block * hop]``, ``eeg [C, eeg_block]`` of which the first
    ``n_eeg`` samples are new -> ``(state, wave [block * hop])`` (``state`` is consumed:
    its buffers are reused): the output of frames
    ``frames - delay - block .. frames - delay`` (zeros before the stream's start)."""
    return self._step(self.variables, self.qparams, self.codec_params, self.tables, state,
                      jnp.asarray(audio, jnp.float32)[None, None],
                      jnp.asarray(eeg, jnp.float32)[None], jnp.asarray(n_eeg, jnp.int32))

  def _block(self, variables, qparams, codec_params, tables, state, audio, eeg, n_eeg):
    lay, model = self.layout, self.model
    nb, hop = lay.block, lay.hop
    n = state["frames"] + nb                                # frames arrived
    # 1. The encoder over the newest audio.
    codec_state = {}
    if self.stateful:
      codec_state["enc"], new = dac_stream.encoder_step(codec_params["encoder"], state["enc"],
                                                        audio, n // nb, lay.enc_ahead)
    else:
      codec_state["audio"], new = encoder_stage(self.encode, codec_params["encoder"], lay,
                                                state["audio"], audio, n)
    if self.mix_input == "quantized":
      new = codec.requantize(qparams, new, None)
    queue = jnp.concatenate([state["z_queue"], new], axis=-1)
    # 2. EEG: features over the newest window, written where their receptive field
    # was inside it (all but the window's first three, unless it starts at 0).
    count = state["eeg_count"] + n_eeg
    w = lay.eeg_window
    ebuf = jax.lax.dynamic_slice_in_dim(jnp.concatenate([state["eeg"], eeg], axis=-1), n_eeg, w, 2)
    window = _window(ebuf, count, w)
    start = jnp.maximum(count - w, 0)
    n_feat = EEGEncoder.output_length(w, model.eeg_kernel)
    pe = jax.lax.dynamic_slice_in_dim(tables["eeg_pe"], start, n_feat, 0)
    new_keys, new_env = model.apply(variables, window, pe, method=NeuroCodec.stream_keys)
    keep = (jnp.arange(n_feat) < -EEGEncoder.receptive_field(model.eeg_kernel)[0]) & (start > 0)

    def write(old, new_part):
      part = jax.lax.dynamic_slice_in_dim(old, start, n_feat, 1)
      sel = keep.reshape((1, n_feat) + (1,) * (old.ndim - 2))
      return jax.lax.dynamic_update_slice_in_dim(old, jnp.where(sel, part, new_part), start, 1)

    keys = [(write(k, nk), write(v, nv)) for (k, v), (nk, nv) in zip(state["keys"], new_keys)]
    env = write(state["env"], new_env)
    # 3. The generator over its frames, gen_delay behind the newest audio.
    lag = model.select_lag() if model.selector == "correlation" else 0
    gen, outs = state["gen"], []
    for r in range(nb):
      t = n - lay.gen_delay - nb + r
      tc = jnp.clip(t, 0, lay.max_frames - 1)
      row = (jnp.arange(lay.n_keys) <= tables["horizon"][tc])[None]
      tl = jnp.clip(t - lag, 0, lay.max_frames - 1)
      lo, frac = tables["cue_lo"][tl], tables["cue_frac"][tl]
      cue = (1 - frac) * env[:, lo] + frac * env[:, lo + 1]
      z, stepped = model.apply(variables, queue[:, :, r], keys, row, t, cue, gen,
                               method=NeuroCodec.step)
      gen = jax.tree.map(lambda a, b: jnp.where(t >= 0, a, b), stepped, gen)
      outs.append(z)
    z = jnp.stack(outs, axis=-1)                            # [1, D, nb]
    z = codec.output_latent(qparams, z, self.requantize, self.n_quantizers)
    # 4. The decoder over the newest generated frames.
    if self.stateful:
      codec_state["dec"], wave = dac_stream.decoder_step(
          codec_params["decoder"], state["dec"], z, n // nb, lay.gen_delay, lay.dec_ahead)
      wave = wave[0, 0]
    else:
      codec_state["out_queue"], wave = decoder_stage(self.decode, codec_params["decoder"], lay,
                                                     state["out_queue"], z, n - lay.gen_delay)
    state = dict(frames=n, eeg_count=count, z_queue=queue[:, :, nb:], z=z, eeg=ebuf,
                 keys=keys, env=env, gen=gen, **codec_state)
    return state, wave

  def run(self, mixture: np.ndarray, eeg: np.ndarray, timings: bool = False) -> dict:
    """The whole recording, block by block, as it would arrive.

    ``mixture [T]``, ``eeg [C, T_eeg]`` (covering the audio; zeros where short) ->
    ``{"wave": [T], "seconds": processing time of the blocks, "latency": latency(),
    "rtf": seconds / audio seconds, "cpu_rtf": the process's CPU seconds / audio
    seconds}`` (on one thread, the RTF the blocks would take on an idle core);
    ``timings`` adds ``block_seconds`` (each block's).
    The first block's compile is not counted: the program is compiled before the clock.
    """
    lay = self.layout
    bs = lay.block * lay.hop
    n_blocks = -(-len(mixture) // bs)
    total = n_blocks + lay.flush_blocks
    if total * lay.block > lay.max_frames:
      raise ValueError(f"{len(mixture) / lay.sample_rate:.2f} s of audio exceeds the "
                       f"streamer's max_seconds.")
    audio = np.zeros(total * bs, np.float32)
    audio[:len(mixture)] = mixture
    n_eeg_in = min(eeg.shape[1], lay.eeg_arrived(-(-len(mixture) // lay.hop)))
    state = self.init_state()
    # Compiled (and run) before the clock starts, from the initial state and from a
    # returned one: under a run's mesh the returned arrays carry a sharding, another key.
    quiet = (np.zeros(bs), np.zeros((eeg.shape[0], lay.eeg_block)), 0)
    jax.block_until_ready(self.step(self.step(state, *quiet)[0], *quiet))
    state = self.init_state()
    outs, block_seconds, cpu = [], [], 0.0
    for k in range(total):
      e0, e1 = lay.eeg_arrived(k * lay.block), lay.eeg_arrived((k + 1) * lay.block)
      e_block = np.zeros((eeg.shape[0], lay.eeg_block), np.float32)
      part = eeg[:, min(e0, n_eeg_in):min(e1, n_eeg_in)]
      e_block[:, :part.shape[1]] = part
      t0, c0 = time.perf_counter(), time.process_time()
      state, wave = self.step(state, audio[k * bs:(k + 1) * bs], e_block, e1 - e0)
      outs.append(np.asarray(wave))
      block_seconds.append(time.perf_counter() - t0)
      if k < n_blocks:
        cpu += time.process_time() - c0
    wave = np.concatenate(outs)[lay.delay * lay.hop:][:len(mixture)]
    seconds = float(np.sum(block_seconds[:n_blocks]))
    result = dict(wave=wave, seconds=seconds, latency=latency(lay),
                  rtf=seconds / (n_blocks * bs / lay.sample_rate),
                  cpu_rtf=cpu / (n_blocks * bs / lay.sample_rate))
    if timings:
      result["block_seconds"] = np.asarray(block_seconds)
    return result


def encoder_stage(encode: Callable, params, lay: Layout, buf: jax.Array, audio: jax.Array,
                  n: jax.Array):
  """A block of audio through the encoder: ``buf [1, 1, (enc_left + block + enc_ahead)
  * hop]`` (the newest audio), ``audio [1, 1, block * hop]``, ``n`` frames arrived
  with it -> ``(buf, latent [1, D, block])``: frames ``n - enc_ahead - block ..
  n - enc_ahead`` (zeros before frame 0), each equal to the whole signal's."""
  nb, hop = lay.block, lay.hop
  buf = jnp.concatenate([buf, audio], axis=-1)[..., nb * hop:]
  size = buf.shape[-1] // hop
  latent = encode(params, _window(buf, n * hop, buf.shape[-1]))          # [1, D, size]
  pad = lay.enc_ahead + nb
  latent = jnp.pad(latent, ((0, 0), (0, 0), (pad, 0)))
  first = n - lay.enc_ahead - nb                      # its frame 0 is the chunk's
  start = first - jnp.maximum(n - size, 0) + pad      # max(n - size, 0)
  return buf, jax.lax.dynamic_slice_in_dim(latent, start, nb, 2)


def decoder_stage(decode: Callable, params, lay: Layout, queue: jax.Array, z: jax.Array,
                  generated: jax.Array):
  """A block of latent frames through the decoder: ``queue [1, D, dec_left + block +
  dec_ahead]`` (the newest frames), ``z [1, D, block]``, ``generated`` frames with
  them -> ``(queue, wave [block * hop])``: frames ``generated - dec_ahead - block ..
  generated - dec_ahead`` (zeros before frame 0), equal to decoding the whole latent."""
  nb, hop = lay.block, lay.hop
  queue = jnp.concatenate([queue, z], axis=-1)[..., nb:]
  size = queue.shape[-1]
  wave = decode(params, _window(queue, generated, size))[:, 0]           # [1, size * hop]
  pad = lay.delay + nb
  wave = jnp.pad(wave, ((0, 0), (pad * hop, 0)))
  first = generated - lay.dec_ahead - nb
  start = first - jnp.maximum(generated - size, 0) + pad
  return queue, jax.lax.dynamic_slice_in_dim(wave, start * hop, nb * hop, 1)[0]


def _window(buf: jax.Array, arrived: jax.Array, size: int) -> jax.Array:
  """``[..., size]`` from a buffer holding the newest ``size`` items of ``arrived`` so
  far: the buffer itself, or while ``arrived < size`` items 0 .. size - 1 (zeros past
  ``arrived``), so a chunk that would reach before the stream's start starts at it."""
  start = jnp.clip(size - arrived, 0, size)
  padded = jnp.concatenate([buf, jnp.zeros_like(buf)], axis=-1)
  return jax.lax.dynamic_slice_in_dim(padded, start, size, buf.ndim - 1)
