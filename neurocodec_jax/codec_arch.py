"""DAC's architectures and the sizes derived from them: the one definition.

``hop_length(arch)`` audio samples per latent frame, the product of DAC's encoder
strides; ``frame_seconds``/``frame_rate``; ``frame_count(arch, seconds)``. ``arch`` is
anything that holds DAC's architecture: a config's ``codec.arch``, a dict such as
``DAC_ARCHS[...]``, a torch DAC, ``codec_training``'s ``CodecSpec``. No JAX here:
configs read these before any heavy import.
"""

from __future__ import annotations

from collections.abc import Mapping
import math

# codec.backend: where the frozen encoder and decoder run (codec_bridge.FrozenDAC: torch,
# the decoder through host callbacks; codec_bridge.JaxDAC: ported to Flax, pure JAX).
CODEC_BACKENDS = ("torch", "jax")

# The fields of a DAC architecture (``dac.DAC``'s constructor arguments that set its sizes).
ARCH_KEYS = ("sample_rate", "encoder_dim", "encoder_rates", "latent_dim", "decoder_dim",
             "decoder_rates", "n_codebooks", "codebook_size", "codebook_dim")

# DAC's released architectures (dac/model/dac.py and its model cards).
DAC_ARCHS = {
    "44khz": dict(sample_rate=44100, encoder_dim=64, encoder_rates=(2, 4, 8, 8),
                  latent_dim=1024, decoder_dim=1536, decoder_rates=(8, 8, 4, 2),
                  n_codebooks=9, codebook_size=1024, codebook_dim=8),
    "24khz": dict(sample_rate=24000, encoder_dim=64, encoder_rates=(2, 4, 5, 8),
                  latent_dim=1024, decoder_dim=1536, decoder_rates=(8, 5, 4, 2),
                  n_codebooks=32, codebook_size=1024, codebook_dim=8),
    "16khz": dict(sample_rate=16000, encoder_dim=64, encoder_rates=(2, 4, 5, 8),
                  latent_dim=1024, decoder_dim=1536, decoder_rates=(8, 5, 4, 2),
                  n_codebooks=12, codebook_size=1024, codebook_dim=8),
}

# The demo codec's sizes (codec_training trains it; codec_bridge/weights ships it),
# also the random-weight DAC the unit tests use.
DEMO_CODEC = dict(sample_rate=16000, encoder_dim=8, encoder_rates=(2, 4, 5, 8),
                  latent_dim=64, decoder_dim=128, decoder_rates=(8, 5, 4, 2),
                  n_codebooks=8, codebook_size=1024, codebook_dim=8)




def _arch_field(arch, name: str):
  # Plain dicts (DAC_ARCHS, random_sizes) have items; ConfigDicts, torch DACs and
  # CodecSpec have attributes.
  return arch[name] if isinstance(arch, Mapping) else getattr(arch, name)


def hop_length(arch) -> int:
  """Audio samples per latent frame: the product of DAC's ``encoder_rates``."""
  return math.prod(int(r) for r in _arch_field(arch, "encoder_rates"))


def frame_seconds(arch) -> float:
  """Duration of one latent frame in seconds (``hop_length / sample_rate``)."""
  return hop_length(arch) / _arch_field(arch, "sample_rate")


def frame_rate(arch) -> float:
  """Latent frames per second (``sample_rate / hop_length``)."""
  return _arch_field(arch, "sample_rate") / hop_length(arch)


def frame_count(arch, seconds: float) -> int:
  """Whole latent frames in ``seconds`` of audio (DAC encodes ``frames * hop`` samples)."""
  return int(seconds * _arch_field(arch, "sample_rate")) // hop_length(arch)
