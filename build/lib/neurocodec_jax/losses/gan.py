"""Least-squares GAN and feature-matching losses, as ``dac.nn.loss.GANLoss``.

Discriminator outputs are lists (one per sub-discriminator) of feature maps, the
last being the score.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def discriminator_loss(d_fake, d_real) -> jax.Array:
  """sum_k mean(D_k(fake)^2) + mean((1 - D_k(real))^2); pass D(fake.detach())."""
  return sum(jnp.mean(f[-1] ** 2) + jnp.mean((1 - r[-1]) ** 2)
             for f, r in zip(d_fake, d_real))


def generator_loss(d_fake, d_real) -> tuple[jax.Array, jax.Array]:
  """(adversarial sum_k mean((1 - D_k(fake))^2), feature matching sum L1, real detached)."""
  adversarial = sum(jnp.mean((1 - f[-1]) ** 2) for f in d_fake)
  features = sum(jnp.mean(jnp.abs(fm - jax.lax.stop_gradient(rm)))
                 for f, r in zip(d_fake, d_real) for fm, rm in zip(f[:-1], r[:-1]))
  return adversarial, features
