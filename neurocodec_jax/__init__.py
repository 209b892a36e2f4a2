"""NeuroCodec in JAX: EEG-guided target speaker extraction in DAC latent space."""

__version__ = "0.1.0"
