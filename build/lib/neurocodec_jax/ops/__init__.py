"""Numerical kernels."""

from neurocodec_jax.ops.scan import BACKENDS, selective_scan, selective_state_update
