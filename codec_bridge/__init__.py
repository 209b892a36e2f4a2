"""The frozen Descript Audio Codec in PyTorch, bridged to JAX.

``load_dac`` / ``load_dac_from_config`` load it (real weights, or random for tests
and the demo), ``quantizer_params`` exports its quantizer to JAX
(``neurocodec_jax.codec``), ``make_decoder`` wraps its decoder as a differentiable
JAX function, ``encode`` runs its encoder and quantizer on audio, and
``codec_bridge.precompute`` encodes a dataset's audio to codes once. ``FrozenDAC``
holds a loaded DAC behind the methods a ``neurocodec_jax`` run calls; ``JaxDAC``
(``codec.backend="jax"``) holds the same with its encoder and decoder ported to JAX
(``neurocodec_jax.models.dac_jax``, weights copied by ``dac_params_from_torch``).
``codec_bridge.converters`` holds every torch-to-JAX weight converter (DAC, DAC's
discriminator, Mamba).

Dependencies go one way, from this package to ``neurocodec_jax``: the bridge is the
torch adapter to the JAX package's codec (its sizes, ``neurocodec_jax.codec``), data
layout (the codes cache ``neurocodec_jax.data`` reads) and measures
(``latent_structure``), so it imports them. ``neurocodec_jax``'s library never
imports this package: importing it registers :func:`load_codec` as the runs' codec
loader (``neurocodec_jax.run.use_codec_loader``); the entry points import it.
"""

from codec_bridge.converters import dac_params_from_torch
from codec_bridge.decode import make_decoder
from codec_bridge.encode import encode
from codec_bridge.frozen import FrozenDAC
from codec_bridge.jax_dac import JaxDAC
from codec_bridge.loading import (WeightsNotFound, codec_identity, load_dac,
                                  load_dac_from_config)
from codec_bridge.quantizer import quantizer_params
from neurocodec_jax import run as _run


def load_codec(codec_config):
  """The frozen DAC of a config's ``codec`` group: ``JaxDAC`` with ``backend="jax"``,
  else ``FrozenDAC`` (torch)."""
  backend = codec_config.get("backend", "torch")
  return (JaxDAC if backend == "jax" else FrozenDAC).from_config(codec_config)


_run.use_codec_loader(load_codec)
