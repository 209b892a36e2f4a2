"""The NeuroCodec generator: mixture latents + EEG -> attended-talker latents.

``NeuroCodec.from_config(config)``; ``apply(variables, z_mix, eeg, train=...)``::

  z_mix [batch, latent_dim, frames]   (DAC's z of the mixture, channel first)
  eeg   [batch, eeg_channels, T_eeg]  (µV)
  -> z_pred [batch, latent_dim, frames], env_pred [batch, T']
     (T' = EEGEncoder.output_length(T_eeg, eeg_kernel) = T_eeg - eeg_kernel + 1)

As the original: the EEG encoder (``eeg_encoder.py``); audio and EEG projections to
``hidden_dim``, each scaled by sqrt(hidden_dim) plus sinusoidal positional
encodings, dropout; ``num_layers`` blocks of
  x += Dropout(MultiHeadAttention(query=LN(x), key=value=EEG features))
  x += Dropout(Mamba(LN(x)))         (or a causal pre-norm transformer layer)
then a linear projection to ``latent_dim`` and, with ``normalize_latents``, L2
normalization over the latent axis. BatchNorm statistics live in ``batch_stats``;
dropout uses the ``dropout`` rng.

Separate-then-select (``model.selector="correlation"``, an option; the default
"none" is the original): the output head predicts TWO latent streams (trained to
be the two talkers under a permutation-invariant loss, ``lambda_sep``) and a
frame-rate envelope of each stream (``lambda_sep_env``); the EEG encoder's
envelope head decodes the attended envelope from the EEG (``lambda_env``). The
output at frame t mixes the streams by a softmax over their running Pearson
correlation (frames 0..t) with the decoded envelope, times a learned inverse
temperature (``model.select_window="causal"``: frame t uses frames 0..t;
``"trial"``: every frame uses the whole window, offline only — streaming always uses
the causal form): the backbone learns to separate without any cue, and the EEG only
has to choose — the classic "separate, then select by the decoded envelope"
design of auditory attention decoding, made differentiable and causal.
``model.cue_form="forward"`` compares the EEG's whitened source with the response
predicted under each stream attended instead (``models/cue.py``; offline);
``"encoding"`` takes that source, the responses and the whitener from a linear
encoding model fit by regression on the training batches (``models/encoding.py``),
the EEG encoder then feeding the cross-attention only. Options:
``model.select_decision="hard"`` outputs the better-correlated stream at evaluation
(the AAD decision; training keeps the softmax), ``model.mixture_consistency`` projects
the streams, before their normalization, to add up to the mixture latent;
``model.stream_form="mask"`` predicts the streams as softmax masks over the two
streams applied to the mixture's latent (they add up to it by construction; a
zero head starts both at half the mixture, the "copy the input" solution, which a
directly predicted stream has to learn); ``model.stream_form="tokens"`` classifies
each stream's codes, per codebook (every one of the codec's: the head's size is fixed
by the codec) and frame, and the stream is the codec's latent of the most likely codes
of the first ``codec.n_quantizers_eval`` codebooks, as DAC decodes a prefix of its
codebooks (training: a straight-through softmax, the forward the same argmax). The codec's quantizer
tables come in as the ``quantizer`` argument; a tokens model does not stream.

The default forward is unmasked like the original (every latent frame sees the whole
EEG window). Streaming (``streaming=True`` in ``__call__``, or frame by frame with
:meth:`NeuroCodec.step`, which :meth:`NeuroCodec.stream` runs over a window and
``neurocodec_jax.streaming`` block by block) masks the cross-attention: latent frame i (audio up to
(i+1) hop / sr seconds) sees EEG feature j only when every EEG sample it depends on
has arrived (up to j + the look-ahead the encoder derives from its own convs,
``EEGEncoder.receptive_field(eeg_kernel)[1]`` = kernel + 2), plus
``model.stream_lookahead`` EEG samples of look-ahead; the selector's correlation
at frame t then uses only frames whose decoded envelope is available. A frame with no visible EEG
feature gets no attention output.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from neurocodec_jax import codec
from neurocodec_jax.models import cue as cue_forms
from neurocodec_jax.models.encoding import EncodingModel
from neurocodec_jax.models.eeg_encoder import EEGEncoder
from neurocodec_jax.models.layers import sinusoidal_at, sinusoidal_encoding
from neurocodec_jax.models.mamba import Mamba

SELECTORS = ("none", "correlation")
BACKBONES = ("mamba", "transformer")
SELECT_WINDOWS = ("causal", "trial")
OUTPUT_NORMS = ("unit", "mixture", "none")
STREAM_FORMS = ("direct", "mask", "tokens")
SELECT_DECISIONS = ("soft", "hard")


def stream_mask(n_frames: int, n_eeg: int, frame_seconds: float, eeg_rate: int,
                lookahead: int = 0, kernel: int = 8) -> np.ndarray:
  """``[n_frames, n_eeg]`` bool: EEG feature j is available at latent frame i."""
  return np.arange(n_eeg)[None, :] <= stream_horizon(n_frames, frame_seconds, eeg_rate,
                                                      lookahead, kernel)[:, None]


def stream_horizon(n_frames: int, frame_seconds: float, eeg_rate: int, lookahead: int = 0,
                   kernel: int = 8) -> np.ndarray:
  """``[n_frames]`` int: the last EEG feature latent frame i may see (``stream_mask``'s rule)."""
  # EEG sample k is taken at k / eeg_rate; by the end of frame i, samples
  # 0 .. floor((i + 1) frame_seconds eeg_rate) have arrived.
  arrived = np.floor((np.arange(n_frames) + 1) * frame_seconds * eeg_rate + 1e-9) + lookahead
  last = EEGEncoder.receptive_field(kernel)[1]            # feature j's newest sample: j + last
  return (arrived - last).astype(np.int64)


def running_correlation(a: jax.Array, b: jax.Array, eps: float = 1e-4) -> jax.Array:
  """Pearson correlation over frames 0..t, for every t: ``[b, F, K]`` x2 -> ``[b, F, K]``."""
  n = jnp.arange(1, a.shape[1] + 1, dtype=a.dtype)[None, :, None]
  mean = lambda x: jnp.cumsum(x, axis=1) / n
  ma, mb = mean(a), mean(b)
  cov = mean(a * b) - ma * mb
  va = jnp.maximum(mean(a * a) - ma ** 2, 0.0)
  vb = jnp.maximum(mean(b * b) - mb ** 2, 0.0)
  return cov / jnp.sqrt((va + eps) * (vb + eps))


class CrossAttention(nn.Module):
  """Multi-head attention from latent frames to EEG features (rows with no key: 0)."""
  hidden: int
  heads: int
  dropout: float

  @nn.compact
  def __call__(self, q, kv, mask, *, train: bool):
    attn_mask = None if mask is None else mask[:, None]          # [b, 1, q, k]
    out = nn.MultiHeadDotProductAttention(
        num_heads=self.heads, qkv_features=self.hidden, out_features=self.hidden,
        dropout_rate=self.dropout, deterministic=not train, name="mha")(q, kv, mask=attn_mask)
    if mask is not None:
      out = out * jnp.any(mask, axis=-1, keepdims=True).astype(out.dtype)
    return out


def attention_keys(mha: dict, kv: jax.Array, heads: int) -> tuple[jax.Array, jax.Array]:
  """``kv [b, n, hidden]`` -> ``(key, value)``, each ``[b, n, heads, head_dim]``: the
  projections ``CrossAttention``'s attention makes of its keys (``mha``: its parameters),
  computed once per EEG feature when streaming."""
  # parent=None: a layer applied to given parameters, not a child of the calling module.
  dense = lambda name, x: nn.DenseGeneral(features=(heads, kv.shape[-1] // heads),
                                          parent=None).apply({"params": mha[name]}, x)
  return dense("key", kv), dense("value", kv)


def cached_attention(mha: dict, q: jax.Array, key: jax.Array, value: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """``CrossAttention`` (eval) from projected keys: ``q [b, n, hidden]``, ``key``/``value``
  ``[b, k, heads, head_dim]``, ``mask [b, n, k]`` -> ``[b, n, hidden]``; the same flax
  layers and attention function as ``nn.MultiHeadDotProductAttention``."""
  heads, head_dim = key.shape[-2:]
  query = nn.DenseGeneral(features=(heads, head_dim), parent=None).apply(
      {"params": mha["query"]}, q)
  x = nn.dot_product_attention(query, key, value, mask=mask[:, None])
  out = nn.DenseGeneral(features=q.shape[-1], axis=(-2, -1), parent=None).apply(
      {"params": mha["out"]}, x)
  return out * jnp.any(mask, axis=-1, keepdims=True).astype(out.dtype)


class TransformerLayer(nn.Module):
  """Causal pre-norm transformer encoder layer (torch's norm_first=True, ReLU FF)."""
  hidden: int
  heads: int
  ff_dim: int
  dropout: float

  @nn.compact
  def __call__(self, x, *, train: bool):
    drop = lambda y: nn.Dropout(self.dropout, deterministic=not train)(y)
    causal = nn.make_causal_mask(jnp.ones(x.shape[:2], bool))
    h = nn.LayerNorm(epsilon=1e-5)(x)
    x = x + drop(nn.MultiHeadDotProductAttention(
        num_heads=self.heads, qkv_features=self.hidden, dropout_rate=self.dropout,
        deterministic=not train)(h, h, mask=causal))
    h = nn.LayerNorm(epsilon=1e-5)(x)
    h = nn.Dense(self.hidden)(drop(nn.relu(nn.Dense(self.ff_dim)(h))))
    return x + drop(h)


class Block(nn.Module):
  """(pre-LN EEG cross-attention, residual) + (pre-LN Mamba or transformer, residual).

  ``bidirectional`` (Mamba only, offline): a second Mamba reads the frames backwards
  and its output is added, so each frame sees the whole window.
  """
  hidden: int
  heads: int
  dropout: float
  backbone: str
  mamba: dict
  ff_dim: int
  bidirectional: bool = False

  def setup(self):
    self.attn_norm = nn.LayerNorm(epsilon=1e-5)
    self.attn = CrossAttention(self.hidden, self.heads, self.dropout)
    self.drop = nn.Dropout(self.dropout)
    if self.backbone == "mamba":
      self.mixer_norm = nn.LayerNorm(epsilon=1e-5)
      self.mixer = Mamba(self.hidden, **self.mamba)
      if self.bidirectional:
        self.mixer_backward = Mamba(self.hidden, **self.mamba)
    elif self.bidirectional:
      raise ValueError("model.bidirectional needs backbone='mamba'.")
    elif self.backbone == "transformer":
      self.mixer = TransformerLayer(self.hidden, self.heads, self.ff_dim, self.dropout)
    else:
      raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}.")

  def __call__(self, x, eeg, mask, *, train: bool):
    x = x + self.drop(self.attn(self.attn_norm(x), eeg, mask, train=train),
                      deterministic=not train)
    if self.backbone == "mamba":
      h = self.mixer_norm(x)
      y = self.mixer(h)
      if self.bidirectional:
        y = y + self.mixer_backward(h[:, ::-1])[:, ::-1]
      return x + self.drop(y, deterministic=not train)
    return self.mixer(x, train=train)


class NeuroCodec(nn.Module):
  """See the module docstring."""
  latent_dim: int
  hidden_dim: int = 256
  num_layers: int = 4
  num_heads: int = 8
  dropout: float = 0.3
  activation: str = "snake"
  normalize_latents: bool = True
  backbone: str = "mamba"
  mamba: dict = None
  eeg_dim: int = 64
  cheb_k: int = 3
  max_len: int = 5000
  ff_dim: int = 1024
  frame_seconds: float = 512 / 44100
  eeg_rate: int = 128
  lookahead: int = 0
  time_aligned_pe: bool = False
  eeg_kernel: int = 8
  eeg_linear_branch: bool = False
  eeg_norm: str = "batch"
  selector: str = "none"
  select_window: str = "causal"
  output_norm: str = "unit"
  mixture_consistency: bool = False
  select_decision: str = "soft"
  cue_form: str = "backward"
  encoding_subjects: int = 0            # cue_form="encoding": subjects with their own fit
  stream_form: str = "direct"
  bidirectional: bool = False
  token_codebooks: int = 0              # stream_form="tokens": codebooks classified,
  codebook_size: int = 0                # ... entries per codebook,
  token_decode: int = 0                 # ... and how many of them are decoded

  @classmethod
  def from_config(cls, config) -> "NeuroCodec":
    m, arch = config.model, config.codec.arch
    return cls(
        latent_dim=arch.latent_dim, hidden_dim=config.hidden_dim,
        num_layers=config.num_layers, num_heads=m.num_heads, dropout=m.dropout,
        activation=config.activation, normalize_latents=config.normalize_latents,
        backbone=config.backbone,
        mamba=dict(d_state=m.d_state, d_conv=m.d_conv, expand=m.expand, dt_min=m.dt_min,
                   dt_max=m.dt_max, dt_init_floor=m.dt_init_floor,
                   scan_backend=m.scan_backend),
        eeg_dim=m.eeg_dim, cheb_k=m.cheb_k, max_len=m.max_len, ff_dim=m.transformer_ff_dim,
        frame_seconds=codec.frame_seconds(arch),
        eeg_rate=config.data.eeg_rate, lookahead=m.stream_lookahead,
        time_aligned_pe=m.time_aligned_pe, eeg_kernel=m.eeg_kernel,
        eeg_linear_branch=m.eeg_linear_branch, eeg_norm=m.eeg_norm, selector=m.selector,
        select_window=m.select_window, output_norm=m.output_norm,
        mixture_consistency=m.mixture_consistency, select_decision=m.select_decision,
        cue_form=m.cue_form, encoding_subjects=m.encoding_subjects,
        stream_form=m.stream_form, bidirectional=m.bidirectional,
        token_codebooks=arch.n_codebooks, codebook_size=arch.codebook_size,
        token_decode=config.codec.n_quantizers_eval)

  def setup(self):
    if self.selector not in SELECTORS:
      raise ValueError(f"model.selector must be one of {SELECTORS}, got {self.selector!r}.")
    if self.select_decision not in SELECT_DECISIONS:
      raise ValueError(f"model.select_decision must be one of {SELECT_DECISIONS}, got "
                       f"{self.select_decision!r}.")
    if self.stream_form not in STREAM_FORMS:
      raise ValueError(f"model.stream_form must be one of {STREAM_FORMS}, got "
                       f"{self.stream_form!r}.")
    if self.stream_form != "direct" and self.selector == "none":
      raise ValueError(f"model.stream_form={self.stream_form!r} needs "
                       f"model.selector='correlation'.")
    if self.select_window not in SELECT_WINDOWS:
      raise ValueError(f"model.select_window must be one of {SELECT_WINDOWS}, got "
                       f"{self.select_window!r}.")
    if self.cue_form not in cue_forms.CUE_FORMS:
      raise ValueError(f"model.cue_form must be one of {cue_forms.CUE_FORMS}, got "
                       f"{self.cue_form!r}.")
    if self.cue_form == "forward" and (self.selector != "correlation"
                                       or self.select_window != "trial"):
      raise ValueError("model.cue_form='forward' whitens each trial by its own statistics: "
                       "it needs model.selector='correlation' and model.select_window='trial'.")
    if self.cue_form == "encoding" and (self.selector != "correlation"
                                        or self.select_window != "trial"):
      raise ValueError("model.cue_form='encoding' z-scores each trial by its own statistics: "
                       "it needs model.selector='correlation' and model.select_window='trial'.")
    if self.encoding_subjects and self.cue_form != "encoding":
      raise ValueError(f"model.encoding_subjects={self.encoding_subjects} keeps an encoding "
                       f"model per subject: it needs model.cue_form='encoding', got "
                       f"{self.cue_form!r}.")
    if self.encoding_subjects < 0:
      raise ValueError(f"model.encoding_subjects must be >= 0, got {self.encoding_subjects}.")
    self.eeg_encoder = EEGEncoder(self.eeg_dim, self.cheb_k, self.activation, self.dropout,
                                  kernel=self.eeg_kernel,
                                  linear_branch=self.eeg_linear_branch, norm=self.eeg_norm)
    self.audio_in = nn.Dense(self.hidden_dim)
    self.eeg_in = nn.Dense(self.hidden_dim)
    self.drop = nn.Dropout(self.dropout)
    self.blocks = [Block(self.hidden_dim, self.num_heads, self.dropout, self.backbone,
                         self.mamba or {}, self.ff_dim, self.bidirectional)
                   for _ in range(self.num_layers)]
    if self.selector == "correlation" and self.stream_form == "mask":
      # Zero logits: both masks 1/2, each stream half the mixture.
      self.out = nn.Dense(2 * self.latent_dim, kernel_init=nn.initializers.zeros)
      self.stream_env = nn.Dense(2)
      self.select_scale = self.param("select_scale", nn.initializers.constant(5.0), ())
    elif self.selector == "correlation" and self.stream_form == "tokens":
      # Two streams' logits over every codebook's entries; zero at init: chance (ln K
      # nats), where a default-initialised head starts tens of nats above it.
      self.out = nn.Dense(2 * self.token_codebooks * self.codebook_size,
                          kernel_init=nn.initializers.zeros)
      self.stream_env = nn.Dense(2)
      self.select_scale = self.param("select_scale", nn.initializers.constant(5.0), ())
    elif self.selector == "correlation":
      self.out = nn.Dense(2 * self.latent_dim)      # two streams
      self.stream_env = nn.Dense(2)                  # their envelopes, per frame
      self.select_scale = self.param("select_scale", nn.initializers.constant(5.0), ())
    else:
      self.out = nn.Dense(self.latent_dim)
    if self.cue_form == "forward":
      # Attended: a unit impulse at lag 0, unattended: none; the forward form starts as
      # the whitened backward one.
      self.response = self.param(
          "response", lambda _, shape: jnp.zeros(shape).at[0, 0].set(1.0),
          (2, cue_forms.response_taps(self.frame_seconds)))
    if self.cue_form == "encoding":
      self.encoding = EncodingModel(self.frame_seconds, self.eeg_rate,
                                    subjects=self.encoding_subjects)
    self.pe = sinusoidal_encoding(self.max_len, self.hidden_dim)

  def _embed(self, proj, x, train, offset=0, pe=None):
    """``[b, T, C] -> [b, T, hidden]``: projection * sqrt(hidden) + PE, dropout."""
    n = x.shape[1]
    if pe is None:
      if offset + n > self.max_len:
        raise ValueError(f"sequence of {offset + n} exceeds model.max_len={self.max_len}.")
      pe = self.pe[offset:offset + n]
    h = proj(x) * math.sqrt(self.hidden_dim) + pe
    return self.drop(h, deterministic=not train)

  def eeg_positions(self, n_eeg: int) -> np.ndarray:
    """Positions of the EEG features for their encoding, in latent-frame units.

    With ``time_aligned_pe`` feature j sits at the middle of EEG samples j .. j + its
    look-ahead (``EEGEncoder.receptive_field``: (j + 5) / eeg_rate seconds for kernel
    8), expressed in latent frames, so a latent frame and the EEG recorded at the same
    moment share an encoding and dot-product attention can align them. (The feature's
    full span starts at j - 3, so its true centre is 1.5 samples earlier; the
    convention is kept so trained models keep their positions.) The original (the
    default) indexes both streams 0, 1, ..., which pairs frame i (86 Hz) with EEG
    feature i (128 Hz): a drift of a third of the clip by its end, which attention
    must learn around.
    """
    if not self.time_aligned_pe:
      return np.arange(n_eeg, dtype=np.float64)
    middle = np.arange(n_eeg) + EEGEncoder.receptive_field(self.eeg_kernel)[1] / 2
    return middle / self.eeg_rate / self.frame_seconds

  def encode_eeg(self, eeg, *, train: bool):
    """``(EEG keys/values [b, T', hidden], envelope [b, T'])``, T' = T_eeg - eeg_kernel + 1."""
    feats, env = self.eeg_encoder(eeg, train=train)
    pe = sinusoidal_at(self.eeg_positions(feats.shape[-1]), self.hidden_dim)
    return self._embed(self.eeg_in, jnp.swapaxes(feats, 1, 2), train, pe=pe), env

  def _norm(self, z, axis=1):
    if self.normalize_latents:
      z = z / jnp.maximum(jnp.linalg.norm(z, axis=axis, keepdims=True), 1e-12)
    return z

  def _finish(self, x):
    return self._norm(jnp.swapaxes(self.out(x), 1, 2))          # [b, latent, F]

  def _token_streams(self, x, quantizer, train: bool):
    """``stream_form="tokens"``: ``x [b, F, hidden]`` -> the streams ``[b, 2, latent,
    F]`` (the codec's latent of each stream's most likely codes) and their logits
    ``[b, 2, n, F, K]`` (n codebooks of K entries)."""
    if quantizer is None:
      raise ValueError("model.stream_form='tokens' needs the codec's quantizer tables "
                       "(the generator's `quantizer` argument).")
    b, n_frames, _ = x.shape
    n, k = self.token_codebooks, self.codebook_size
    logits = jnp.transpose(self.out(x).reshape(b, n_frames, 2, n, k), (0, 2, 3, 1, 4))
    choice = jax.nn.one_hot(jnp.argmax(logits, axis=-1), k, dtype=logits.dtype)
    if train:
      # Straight through: the forward decodes the argmax codes, as evaluation does;
      # the latent terms' gradient reaches the logits through the softmax.
      probs = jax.nn.softmax(logits, axis=-1)
      choice = choice + probs - jax.lax.stop_gradient(probs)
    d = self.token_decode or n
    z = codec.weights_to_z(quantizer, choice[:, :, :d].reshape(b * 2, d, n_frames, k))
    return z.reshape(b, 2, self.latent_dim, n_frames), logits

  def _streams(self, x, z_mix):
    """The selector's two streams: ``x [b, F, hidden]``, ``z_mix [b, latent, F]`` ->
    ``[b, 2, latent, F]``."""
    b, n_frames, _ = x.shape
    streams = jnp.transpose(self.out(x).reshape(b, n_frames, 2, self.latent_dim),
                            (0, 2, 3, 1))                                # [b, 2, D, F]
    if self.stream_form == "mask":
      # The streams keep their magnitudes (a talker's pause is a small masked latent);
      # every loss on them is scale-free, and _rescale sets the output's scale.
      return jax.nn.softmax(streams, axis=1) * z_mix[:, None]
    if self.mixture_consistency:
      # Project onto streams that add up to the mixture (Wisdom et al. 2019): what one
      # stream does not take stays in the other, so the weaker talker's stream is
      # the mixture minus the stronger one, not a copy of the mixture. DAC's latent
      # space is only roughly additive (latent_structure), so this is a prior, not a law.
      streams = streams + (z_mix[:, None] - streams.sum(1, keepdims=True)) / 2
    return self._norm(streams, axis=2)

  def _selected(self, z):
    """The streams' weighted sum ``z [b, latent, ...]`` as the selector outputs it: unit
    frames, except masked streams with ``output_norm="none"`` (their own scale)."""
    own_scale = self.stream_form in ("mask", "tokens") and self.output_norm == "none"
    return z if own_scale else self._norm(z)

  def _select(self, x, env, streaming: bool, z_mix=None, train: bool = False,
              quantizer=None, encoded=None):
    """Separate-then-select (see the module docstring).

    ``x [b, F, hidden]``, ``env [b, T']`` (the cue: the decoded attended envelope at
    the EEG rate, or what the caller put in its place, e.g. the cue curriculum's),
    ``z_mix [b, latent, F]`` (for ``model.mixture_consistency``) ->
    ``z [b, latent, F]`` and aux: ``streams [b, 2, latent, F]``, ``stream_env
    [b, F, 2]``, ``weights [b, F, 2]`` (softmax of ``logits [b, F, 2]``), ``cue [b, F]``
    (as compared: whitened with ``cue_form="forward"``, which adds ``response [2, L]``
    (``[b, 2, L]`` with per-subject encoding models) and ``whitener [b, order + 1]``:
    ``models.cue.compared`` of any envelope with them is what the cue is correlated
    with), and ``token_logits [b, 2, n, F, K]`` with
    ``stream_form="tokens"``. ``encoded``: ``cue_form="encoding"``'s ``(source [b, F],
    {"response", "whitener"})`` (``models/encoding.py``), used in place of ``env``.
    """
    b, n_frames, _ = x.shape
    extra = {}
    if self.stream_form == "tokens":
      streams, extra["token_logits"] = self._token_streams(x, quantizer, train)
      if self.output_norm != "none":
        streams = self._norm(streams, axis=2)
    else:
      streams = self._streams(x, z_mix)
    stream_env = self.stream_env(x)                                      # [b, F, 2]
    if encoded is None:
      interp = cue_forms.frame_interpolation(n_frames, env.shape[-1], self.frame_seconds,
                                             self.eeg_rate)
      cue = env @ jnp.asarray(interp).T                                  # [b, F]
    else:
      cue = encoded[0]
    compared = stream_env
    if self.cue_form == "forward":
      extra["response"], extra["whitener"] = self.response, cue_forms.whitener(cue)
    elif self.cue_form == "encoding":
      white = encoded[1]["whitener"]
      extra["response"] = encoded[1]["response"]
      extra["whitener"] = jnp.broadcast_to(white, (b, white.shape[-1]))
    if self.cue_form != "backward":
      compared = cue_forms.compared(stream_env, self.cue_form, extra["response"],
                                    extra["whitener"])
      cue = cue_forms.source(cue, self.cue_form, extra["whitener"])
    corr = running_correlation(jnp.broadcast_to(cue[..., None], compared.shape), compared)
    if self.select_window == "trial" and not streaming:
      # Offline: every frame uses the whole window's correlation (as the unmasked
      # cross-attention sees the whole EEG window); the AAD decision window.
      corr = jnp.broadcast_to(corr[:, -1:], corr.shape)
    elif streaming:
      # Envelope at frame i needs EEG up to its time + the receptive field.
      lag = self.select_lag()
      corr = jnp.pad(corr, ((0, 0), (lag, 0), (0, 0)))[:, :n_frames]
    logits = self.select_scale * corr
    weights = jax.nn.softmax(logits, axis=-1)                           # [b, F, 2]
    if self.select_decision == "hard" and not train:
      # Evaluation: output the better-correlated stream itself (the AAD decision),
      # not a blend of both, which drifts back toward the mixture when unsure.
      weights = jax.nn.one_hot(jnp.argmax(logits, axis=-1), 2, dtype=weights.dtype)
    z = self._selected(jnp.einsum("bkdf,bfk->bdf", streams, weights))
    return z, dict(streams=streams, stream_env=stream_env, weights=weights,
                   logits=logits, cue=cue, **extra)

  def select_lag(self) -> int:
    """Frames the streaming selector's correlation lags the output by: the decoded
    envelope at frame i needs EEG up to its time + the encoder's look-ahead."""
    lag = int(math.ceil((EEGEncoder.receptive_field(self.eeg_kernel)[1] - self.lookahead)
                        / self.eeg_rate / self.frame_seconds))
    return max(lag, 0)

  def mask(self, n_frames: int, n_eeg: int) -> jax.Array:
    return jnp.asarray(stream_mask(n_frames, n_eeg, self.frame_seconds, self.eeg_rate,
                                   self.lookahead, self.eeg_kernel))

  def __call__(self, z_mix, eeg, *, train: bool, streaming: bool = False,
               return_aux: bool = False, cue_fn=None, quantizer=None, talkers=None,
               subject=None):
    """``(z_pred, env)``, or ``(z_pred, env, aux)`` with ``return_aux`` (selector only).

    ``cue_fn``: ``env [b, T'] -> cue [b, T']``, what the selector uses in place of the
    decoded envelope (the training step's cue curriculum); ``env`` is returned as decoded.
    ``quantizer``: the codec's quantizer pytree (``neurocodec_jax.codec``), which
    ``stream_form="tokens"`` decodes its codes with; other forms ignore it.
    ``talkers [b, T_eeg, 2]``: the attended and the unattended talker's envelopes at the
    EEG rate, which ``cue_form="encoding"`` fits its encoding model on in training.
    ``subject [b]``: each trial's subject id, for ``model.encoding_subjects`` (``None``:
    the pooled fit; other forms ignore it).
    """
    if z_mix.shape[1] != self.latent_dim:
      raise ValueError(f"z_mix must be [batch, {self.latent_dim}, frames], got {z_mix.shape}.")
    if streaming:
      self._check_causal()
    kv, env = self.encode_eeg(eeg, train=train)
    x = self._embed(self.audio_in, jnp.swapaxes(z_mix, 1, 2), train)
    mask = None
    if streaming:
      mask = jnp.broadcast_to(self.mask(x.shape[1], kv.shape[1]),
                              (x.shape[0], x.shape[1], kv.shape[1]))
    for block in self.blocks:
      x = block(x, kv, mask, train=train)
    if self.selector == "correlation":
      cue = env if cue_fn is None else cue_fn(env)
      if cue.shape != env.shape:
        raise ValueError(f"cue_fn must keep the decoded envelope's shape {env.shape}, "
                         f"got {cue.shape}.")
      encoded = None
      if self.cue_form == "encoding":
        if cue_fn is not None:
          raise ValueError("model.cue_form='encoding' takes its cue from its encoding "
                           "model: a cue curriculum (train.cue_curriculum_steps) has no "
                           "decoded envelope to replace.")
        encoded = self.encoding(eeg, talkers, x.shape[1], train=train, subject=subject)
      z, aux = self._select(x, cue, streaming, z_mix, train, quantizer, encoded)
      # The stream not selected, at the output's scale (model.output_waveform's mask).
      aux["competing"] = self._rescale(self._selected(
          jnp.einsum("bkdf,bfk->bdf", aux["streams"], 1.0 - aux["weights"])), z_mix)
    else:
      z, aux = self._finish(x), {}
    return (self._rescale(z, z_mix), env, aux) if return_aux else (self._rescale(z, z_mix), env)

  def _rescale(self, z, z_mix):
    """``output_norm="mixture"``: unit frames times the mixture frame's norm.

    With ``normalize_latents`` the prediction is a direction per frame (the latent
    loss and every cosine metric are scale-free), but DAC decodes magnitudes too:
    unit-norm frames decode to sound of constant loudness, pauses included. Scaling
    each frame by the mixture's norm gives the decoder the mixture's energy contour
    and changes no latent-space loss or metric.
    """
    if self.output_norm in ("unit", "none") or not self.normalize_latents:
      return z
    if self.output_norm != "mixture":
      raise ValueError(f"model.output_norm must be one of {OUTPUT_NORMS}, got {self.output_norm!r}.")
    return z * jnp.linalg.norm(z_mix, axis=1, keepdims=True)

  # ------------------------------------------------------------ streaming ----

  def stream_keys(self, eeg, pe):
    """The attention keys of an EEG window, for a streaming run.

    ``eeg [b, C, W]``, ``pe [W', hidden]`` (the features' positional encodings,
    ``eeg_positions`` at their global indices) -> ``(keys, env)``: per block a
    ``(key, value)`` pair ``[b, W', heads, head_dim]`` and the decoded envelope
    ``[b, W']``, ``W' = W - eeg_kernel + 1``. A feature equals the whole window's
    when its receptive field (``EEGEncoder.receptive_field``) lies inside both.
    """
    feats, env = self.eeg_encoder(eeg, train=False)
    kv = self._embed(self.eeg_in, jnp.swapaxes(feats, 1, 2), False, pe=pe)
    params = self.variables["params"]
    keys = [attention_keys(params[f"blocks_{i}"]["attn"]["mha"], kv, self.num_heads)
            for i in range(self.num_layers)]
    return keys, env

  def _check_causal(self):
    if self.stream_form == "tokens":
      raise ValueError("model.stream_form='tokens' does not stream (its frame step is "
                       "not built): use the offline forward.")
    if self.bidirectional:
      raise ValueError("model.bidirectional=True is an offline separator (each frame "
                       "reads the frames after it): streaming needs the causal one.")
    if self.cue_form != "backward":
      raise ValueError(f"model.cue_form={self.cue_form!r} normalizes each trial by its "
                       "own statistics, which read ahead: streaming needs "
                       "model.cue_form='backward'.")
    if self.eeg_norm != "batch":
      raise ValueError(f"model.eeg_norm={self.eeg_norm!r} normalizes each EEG window by its "
                       "own statistics, which read ahead: streaming needs "
                       "model.eeg_norm='batch'.")

  def init_step_state(self, batch: int) -> dict:
    """The recurrent state of :meth:`step` before frame 0: zero Mamba caches and,
    with the selector, zero correlation sums ``[b, 5, 2]`` (cue, stream envelope,
    their product, their squares) and the last ``select_lag()`` stream envelopes
    ``[b, lag, 2]``."""
    state = dict(caches=[blk.mixer.init_cache(batch) for blk in self.blocks])
    if self.selector == "correlation":
      state["sums"] = jnp.zeros((batch, 5, 2), jnp.float32)
      state["env_fifo"] = jnp.zeros((batch, self.select_lag(), 2), jnp.float32)
    return state

  def step(self, z_t, keys, mask_row, t, cue_lag, state):
    """Latent frame ``t`` of a streaming (eval) run; equals ``streaming=True``'s frame t.

    ``z_t [b, latent]`` the mixture frame; ``keys`` (per block ``(key, value)``
    ``[b, K, heads, head_dim]``, :meth:`stream_keys`) with ``mask_row [b, K]`` the
    keys frame t may see (``stream_mask``'s row t); ``t`` the frame index (traced);
    ``cue_lag [b]`` the decoded envelope at frame ``t - select_lag()`` (the
    selector's cue; ignored without the selector or while ``t < lag``); ``state``
    from :meth:`init_step_state` -> ``(z [b, latent], state)``.
    """
    if self.backbone != "mamba":
      raise ValueError("step() needs the mamba backbone (a recurrent state).")
    self._check_causal()
    params = self.variables["params"]
    pe = jnp.asarray(self.pe)[jnp.clip(t, 0, self.max_len - 1)]
    x = self._embed(self.audio_in, z_t[:, None], False, pe=pe[None])   # [b, 1, hidden]
    caches = list(state["caches"])
    for i, blk in enumerate(self.blocks):
      x = x + cached_attention(params[f"blocks_{i}"]["attn"]["mha"], blk.attn_norm(x),
                               *keys[i], mask_row[:, None])
      y, caches[i] = blk.mixer.step(blk.mixer_norm(x)[:, 0], caches[i])
      x = x + y[:, None]
    state = dict(state, caches=caches)
    if self.selector != "correlation":
      z = self._finish(x)[:, :, 0]
    else:
      z, state = self._select_step(x[:, 0], z_t, t, cue_lag, state)
    return self._rescale(z[:, :, None], z_t[:, :, None])[:, :, 0], state

  def _select_step(self, x, z_t, t, cue, state):
    """:meth:`_select` (streaming) for one frame: the running correlation from carried
    sums, over frames 0 .. t - lag. ``x [b, hidden]`` -> ``(z [b, latent], state)``."""
    b = x.shape[0]
    streams = self._streams(x[:, None], z_t[:, :, None])[..., 0]         # [b, 2, D]
    fifo = jnp.concatenate([state["env_fifo"], self.stream_env(x)[:, None]], axis=1)
    a, e = jnp.broadcast_to(cue[:, None], (b, 2)), fifo[:, 0]          # frame t - lag
    lag = self.select_lag()
    ready = t >= lag
    sums = state["sums"] + ready * jnp.stack([a, e, a * e, a * a, e * e], axis=1)
    n = jnp.maximum(t - lag + 1, 1).astype(jnp.float32)
    ma, me, mae, maa, mee = (sums[:, k] / n for k in range(5))
    eps = 1e-4      # running_correlation's
    corr = (mae - ma * me) / jnp.sqrt((jnp.maximum(maa - ma ** 2, 0.0) + eps)
                                      * (jnp.maximum(mee - me ** 2, 0.0) + eps))
    logits = self.select_scale * jnp.where(ready, corr, 0.0)
    if self.select_decision == "hard":
      weights = jax.nn.one_hot(jnp.argmax(logits, axis=-1), 2, dtype=logits.dtype)
    else:
      weights = jax.nn.softmax(logits, axis=-1)
    z = self._selected(jnp.einsum("bkd,bk->bd", streams, weights))
    return z, dict(state, sums=sums, env_fifo=fifo[:, 1:])

  def stream(self, z_mix, eeg):
    """Frame-by-frame eval run with carried state (:meth:`step`); equals
    ``streaming=True``. ``z_mix [b, latent, F]``, ``eeg [b, C, T_eeg]`` -> ``[b, latent, F]``."""
    n_eeg = EEGEncoder.output_length(eeg.shape[-1], self.eeg_kernel)
    keys, env = self.stream_keys(eeg, sinusoidal_at(self.eeg_positions(n_eeg), self.hidden_dim))
    b, n_frames = z_mix.shape[0], z_mix.shape[2]
    mask = self.mask(n_frames, env.shape[-1])
    interp = cue_forms.frame_interpolation(n_frames, env.shape[-1], self.frame_seconds,
                                           self.eeg_rate)
    cue = env @ jnp.asarray(interp).T                                    # [b, F]
    lag = self.select_lag() if self.selector == "correlation" else 0
    state = self.init_step_state(b)
    outs = []
    for t in range(n_frames):
      row = jnp.broadcast_to(mask[t][None], (b, env.shape[-1]))
      z, state = self.step(z_mix[:, :, t], keys, row, t, cue[:, max(t - lag, 0)], state)
      outs.append(z)
    return jnp.stack(outs, axis=-1)
