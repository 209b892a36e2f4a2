"""Optimizers, learning-rate schedules and the reduce-on-plateau state.

The original: AdamW (lr from config, weight decay 5e-2), gradient clipping at
global norm 1.0, ``ReduceLROnPlateau(factor=0.5, patience=5)`` stepped on the
validation loss once per epoch. Here the plateau is an explicit pytree in the
train state, updated by :func:`plateau_update` after each validation, and the
learning rate is written into the optimizer state inside the jitted step
(``optax.inject_hyperparams``), so a resumed run continues with the same rate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def generator_optimizer(config) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with an injectable learning rate."""
  return optax.chain(
      optax.clip_by_global_norm(config.train.grad_clip),
      optax.inject_hyperparams(optax.adamw)(
          learning_rate=config.lr, weight_decay=config.train.weight_decay))


def discriminator_optimizer(config) -> optax.GradientTransformation:
  """DAC's discriminator optimizer: AdamW(betas 0.8, 0.99), its own clip."""
  return optax.chain(
      optax.clip_by_global_norm(config.disc.grad_clip),
      optax.inject_hyperparams(optax.adamw)(
          learning_rate=config.disc.lr, b1=0.8, b2=0.99,
          weight_decay=config.train.weight_decay))


def init_plateau() -> dict:
  """``{"best": inf, "bad_epochs": 0, "scale": 1}`` as float32/int32 scalars."""
  return dict(best=jnp.asarray(jnp.inf, jnp.float32), bad_epochs=jnp.asarray(0, jnp.int32),
              scale=jnp.asarray(1.0, jnp.float32))


def plateau_update(plateau: dict, value: float, *, factor: float, patience: int,
                   threshold: float = 1e-4) -> dict:
  """One ``ReduceLROnPlateau`` step (mode min, relative threshold, as PyTorch).

  The scale is multiplied by ``factor`` when ``value`` has not improved on the
  best by more than ``threshold`` (relative) for more than ``patience`` epochs.
  """
  best = float(plateau["best"])
  improved = value < best * (1 - threshold) if best != float("inf") else True
  bad = 0 if improved else int(plateau["bad_epochs"]) + 1
  scale = float(plateau["scale"])
  if bad > patience:
    scale, bad = scale * factor, 0
  return dict(best=jnp.asarray(min(value, best), jnp.float32),
              bad_epochs=jnp.asarray(bad, jnp.int32), scale=jnp.asarray(scale, jnp.float32))


SCHEDULES = ("plateau", "constant", "cosine")


def learning_rate(config, step: jax.Array, plateau_scale: jax.Array,
                  total_steps: int) -> jax.Array:
  """The generator's learning rate at ``step`` (traced), per ``train.schedule``.

  ``total_steps``: the run's resolved length (``loop.total_steps``: ``train.max_steps``,
  or epochs x steps per epoch when it is -1), over which the cosine schedule decays.
  """
  base = jnp.asarray(config.lr, jnp.float32)
  warmup = config.train.warmup_steps
  if warmup > 0:
    base = base * jnp.minimum(1.0, (step + 1) / warmup)
  kind = config.train.schedule
  if kind == "plateau":
    return base * plateau_scale
  if kind == "constant":
    return base
  if kind == "cosine":
    if total_steps < 1:
      raise ValueError(f"train.schedule='cosine' needs the run's length; got "
                       f"total_steps={total_steps}.")
    total = int(total_steps)
    return base * 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(step / total, 1.0)))
  raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {kind!r}.")


def set_learning_rate(opt_state, value: jax.Array):
  """Returns ``opt_state`` with the injected AdamW learning rate set to ``value``."""
  clip_state, adam_state = opt_state
  hyper = dict(adam_state.hyperparams, learning_rate=jnp.asarray(value, jnp.float32))
  return clip_state, adam_state._replace(hyperparams=hyper)
