"""The spectral mask refiner's training recipe (``python -m neurocodec_jax.cli.refine``'s
flags; ``neurocodec_jax.refining.refine_run``). Free of JAX, so that the CLI parses its
flags before the model stack loads."""

import dataclasses


def _field(default, help_: str):
  return dataclasses.field(default=default, metadata={"help": help_})


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a refiner is trained behind a selector model, and its back-off chosen
  (docs/research-log.md "A spectral refiner behind the streams")."""
  n_trials: int = _field(8192, "training trials whose streams it learns from")
  steps: int = _field(12000, "optimizer steps (12000 chosen on val over 8000 and 4000)")
  batch_size: int = _field(8, "trials per step")
  lr: float = _field(1e-3, "peak learning rate (AdamW, cosine decay to a tenth)")
  lambda_spec: float = _field(1.0, "the compressed spectral distance's weight beside -SI-SDR")
  width: int = _field(128, "channels of the refiner's convolutions")
  layers: int = _field(6, "dilated convolution layers")
  kernel: int = _field(5, "their kernel, in frames")
  seed: int = _field(0, "initialization and batch order")
  back_off_trials: int = _field(256, "val trials the back-off is chosen on (0: none)")
