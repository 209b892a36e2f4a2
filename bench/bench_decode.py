"""Decode forward and forward+VJP: the torch bridge (``codec.backend=torch``), the
Flax port (``codec.backend=jax``) and torch directly, side by side in one process.

Random-weight DACs (no real weights here): the demo codec, and the full 44.1 kHz
architecture. The JAX rows pass the weights as arguments (``dac_jax.decode(params,
z)``), as a train step should; the VJP is with respect to z. Run:
``python -m bench.bench_decode``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch

import codec_bridge
from bench.common import block, median_seconds, report
from neurocodec_jax.codec_arch import DAC_ARCHS, DEMO_CODEC
from neurocodec_jax import codec
from neurocodec_jax.models import dac_jax


def main(argv=None):
  del argv
  rows = []
  for name, arch, batch, seconds in (("demo 16 kHz", DEMO_CODEC, 8, 2.0),
                                     ("44khz architecture", DAC_ARCHS["44khz"], 1, 2.0)):
    dac = codec_bridge.load_dac(random_sizes=arch, device="cpu")
    decode = codec_bridge.make_decoder(dac)
    frames = codec.frame_count(arch, seconds)
    z = jnp.asarray(np.random.default_rng(0).standard_normal(
        (batch, arch["latent_dim"], frames)), jnp.float32)
    fwd = jax.jit(decode)
    fwd_vjp = jax.jit(jax.grad(lambda z: jnp.sum(decode(z) ** 2)))
    params = codec_bridge.dac_params_from_torch(dac)
    jax_fwd = jax.jit(dac_jax.decode)
    jax_fwd_vjp = jax.jit(jax.grad(lambda p, z: jnp.sum(dac_jax.decode(p, z) ** 2),
                                   argnums=1))
    zt = torch.from_numpy(np.asarray(z))
    def torch_fwd():
      with torch.no_grad():
        dac.decoder(zt)
    def torch_fwd_bwd():
      zz = zt.clone().requires_grad_()
      (dac.decoder(zz) ** 2).sum().backward()
    rows.append(dict(codec=name, batch=batch, seconds=seconds,
                     bridge_fwd_s=median_seconds(lambda: block(fwd(z)), 3),
                     bridge_fwd_vjp_s=median_seconds(lambda: block(fwd_vjp(z)), 3),
                     jax_fwd_s=median_seconds(lambda: block(jax_fwd(params, z)), 3),
                     jax_fwd_vjp_s=median_seconds(
                         lambda: block(jax_fwd_vjp(params, z)), 3),
                     torch_fwd_s=median_seconds(torch_fwd, 3),
                     torch_fwd_bwd_s=median_seconds(torch_fwd_bwd, 3)))
  report("decode", ["codec", "batch", "seconds", "bridge_fwd_s", "bridge_fwd_vjp_s",
                    "jax_fwd_s", "jax_fwd_vjp_s", "torch_fwd_s", "torch_fwd_bwd_s"],
         rows, notes="random weights, fp32, CPU; jax = codec.backend=jax (Flax port)")
  return rows


if __name__ == "__main__":
  main()
