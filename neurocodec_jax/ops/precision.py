"""The matmul and convolution precision the models' parity with PyTorch needs.

``HIGHEST``: float32 products and sums on every backend (no bfloat16 passes or TF32
on an accelerator), so that the ports match their PyTorch references to float32
rounding (tests/test_codec_jax.py, tests/test_losses.py). One definition, imported
wherever a contraction names its precision.
"""

import jax

HIGHEST = jax.lax.Precision.HIGHEST
