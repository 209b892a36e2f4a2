"""Training: pure steps, optimizers, checkpoints and the loop."""
