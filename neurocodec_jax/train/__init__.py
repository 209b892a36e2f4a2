"""Training's parts: pure steps, optimizers, checkpoints, the metrics log (the loop that
runs them: neurocodec_jax.training)."""
