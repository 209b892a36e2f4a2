"""NeuroCodec in JAX: EEG-guided target speaker extraction in DAC latent space.

Layers, imports running downward only: the entry points (``neurocodec_jax.cli``,
``python -m neurocodec_jax.data.prepare`` / ``.data.speech``) choose the codec and
read configs (``neurocodec_jax.configs``); the library (everything else here)
imports neither, nor torch. The frozen DAC runs in PyTorch behind ``codec_bridge``,
which implements the library's ``run.Codec`` protocol and registers its loader
(``run.use_codec_loader``) when imported.
"""

__version__ = "0.1.0"
