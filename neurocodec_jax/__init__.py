"""NeuroCodec in JAX: EEG-guided target speaker extraction in DAC latent space.

The frozen DAC runs in PyTorch behind ``codec_bridge``, which depends on this
package (its codec sizes, data layout and measures), never the reverse: this package
imports no torch, and names the bridge at one injection point only,
``neurocodec_jax.run.load_codec``, the default codec of a run. Every other module
receives the codec as an object (``run.Codec``), so a run, a test or a notebook can
pass its own.
"""

__version__ = "0.1.0"
