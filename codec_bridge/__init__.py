"""The frozen Descript Audio Codec in PyTorch, bridged to JAX.

``load_dac`` / ``load_dac_from_config`` load it (real weights, or random for tests
and the demo), ``quantizer_params`` exports its quantizer to JAX
(``neurocodec_jax.codec``), ``make_decoder`` wraps its decoder as a differentiable
JAX function, and ``codec_bridge.precompute`` encodes a dataset's audio to codes once.
"""

from codec_bridge.decode import make_decoder
from codec_bridge.loading import (WeightsNotFound, codec_identity, load_dac,
                                  load_dac_from_config)
from codec_bridge.quantizer import quantizer_params
