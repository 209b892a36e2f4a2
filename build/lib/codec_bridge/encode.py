"""DAC's encoder and quantizer on audio: codes, quantized z and the continuous latent."""

from __future__ import annotations

import numpy as np
import torch


def encode(dac_model, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``[n, 1, T]`` audio at the model's rate -> ``(codes int16 [n, n_codebooks, F],
  quantized z [n, D, F], continuous encoder output [n, D, F])``, as ``DAC.encode``."""
  device = next(dac_model.parameters()).device
  x = torch.from_numpy(np.asarray(audio, np.float32)).to(device)
  with torch.inference_mode():
    latent = dac_model.encoder(dac_model.preprocess(x, int(dac_model.sample_rate)))
    z, codes, *_ = dac_model.quantizer(latent, None)
  return codes.cpu().numpy().astype(np.int16), z.cpu().numpy(), latent.cpu().numpy()
