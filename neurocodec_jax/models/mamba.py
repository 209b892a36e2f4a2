"""The Mamba mixer in Flax, equal to ``mamba_ssm.modules.mamba_simple.Mamba``.

Parameters (names as mamba-ssm's, Flax layouts)::

  in_proj   kernel [d_model, 2 d_inner] (no bias)
  conv1d    kernel [d_inner, d_conv], bias [d_inner]   depthwise causal conv
  x_proj    kernel [d_inner, dt_rank + 2 d_state] (no bias)
  dt_proj   kernel [dt_rank, d_inner], bias [d_inner]  (bias added inside the scan)
  A_log     [d_inner, d_state] float32;  D [d_inner] float32
  out_proj  kernel [d_inner, d_model] (no bias)

Init as mamba-ssm: linear and conv weights U(+-1/sqrt(fan_in)) (torch's default),
dt_proj kernel U(+-dt_rank^-0.5), dt bias = softplus^-1(dt) with dt log-uniform in
[dt_min, dt_max] clamped below at dt_init_floor, A_log = log(1..d_state), D = 1.

Torch's weights are converted by ``codec_bridge.converters.mamba_params_from_torch``.

``__call__(h [batch, length, d_model])`` is the full forward; ``step(h_t [batch,
d_model], cache)`` the recurrent one with ``cache = (conv_state [b, d_inner, d_conv],
ssm_state [b, d_inner, d_state])`` (see :meth:`Mamba.init_cache`).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from neurocodec_jax.ops import scan as scan_ops


def _uniform(low, high):
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, low, high)


def dt_bias_init(dt_min: float, dt_max: float, dt_init_floor: float):
  """softplus^-1 of dt ~ log-uniform [dt_min, dt_max], clamped at dt_init_floor."""
  def init(key, shape, dtype=jnp.float32):
    dt = jnp.exp(jax.random.uniform(key, shape, jnp.float32) *
                 (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = jnp.maximum(dt, dt_init_floor)
    return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)
  return init


class Mamba(nn.Module):
  """Selective state-space mixer ``[batch, length, d_model] -> same``."""
  d_model: int
  d_state: int = 16
  d_conv: int = 4
  expand: int = 2
  dt_rank: int | None = None
  dt_min: float = 0.001
  dt_max: float = 0.1
  dt_init_floor: float = 1e-4
  scan_backend: str = "sequential_vjp"

  @property
  def d_inner(self) -> int:
    return self.expand * self.d_model

  @property
  def rank(self) -> int:
    return self.dt_rank or math.ceil(self.d_model / 16)

  def setup(self):
    di, n, r = self.d_inner, self.d_state, self.rank
    self.in_proj = nn.Dense(2 * di, use_bias=False, kernel_init=_uniform(
        -1 / math.sqrt(self.d_model), 1 / math.sqrt(self.d_model)), name="in_proj")
    bound = 1 / math.sqrt(self.d_conv)
    self.conv_kernel = self.param("conv1d_kernel", _uniform(-bound, bound), (di, self.d_conv))
    self.conv_bias = self.param("conv1d_bias", _uniform(-bound, bound), (di,))
    self.x_proj = nn.Dense(r + 2 * n, use_bias=False,
                           kernel_init=_uniform(-1 / math.sqrt(di), 1 / math.sqrt(di)),
                           name="x_proj")
    self.dt_kernel = self.param("dt_proj_kernel", _uniform(-r ** -0.5, r ** -0.5), (r, di))
    self.dt_bias = self.param("dt_proj_bias", dt_bias_init(self.dt_min, self.dt_max,
                                                           self.dt_init_floor), (di,))
    self.A_log = self.param("A_log", lambda _, s: jnp.log(
        jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.float32), s)), (di, n))
    self.D = self.param("D", nn.initializers.ones, (di,))
    self.out_proj = nn.Dense(self.d_model, use_bias=False, kernel_init=_uniform(
        -1 / math.sqrt(di), 1 / math.sqrt(di)), name="out_proj")

  def _ssm_inputs(self, x):
    """x [..., d_inner] (after conv+silu) -> delta (pre-bias) [..., d_inner], B, C [..., n]."""
    dbl = self.x_proj(x)
    dt, B, C = jnp.split(dbl, [self.rank, self.rank + self.d_state], axis=-1)
    return dt @ self.dt_kernel, B, C

  def __call__(self, h: jax.Array) -> jax.Array:
    """Full forward over ``h [batch, length, d_model]``."""
    xz = self.in_proj(h)
    x, z = jnp.split(xz, 2, axis=-1)                          # [b, l, di]
    # Depthwise causal conv: out[t] = sum_k w[k] x[t - (d_conv - 1) + k] + bias.
    xp = jnp.pad(x, ((0, 0), (self.d_conv - 1, 0), (0, 0)))
    length = x.shape[1]
    x = sum(xp[:, k:k + length] * self.conv_kernel[:, k] for k in range(self.d_conv))
    x = jax.nn.silu(x + self.conv_bias)
    delta, B, C = self._ssm_inputs(x)
    tm = lambda a: jnp.swapaxes(a, 0, 1)                      # [l, b, ...]
    delta_tm = scan_ops.prepare_delta(tm(delta), self.dt_bias, True)
    inp = scan_ops.Inputs(tm(x).astype(jnp.float32), delta_tm,
                          tm(B).astype(jnp.float32)[:, :, None, :],
                          tm(C).astype(jnp.float32)[:, :, None, :])
    A = -jnp.exp(self.A_log.astype(jnp.float32))
    x0 = jnp.zeros((h.shape[0], self.d_inner, self.d_state), jnp.float32)
    y, _ = scan_ops.scan_core(A, inp, x0, self.scan_backend)
    y = (y + inp.u * self.D) * jax.nn.silu(tm(z).astype(jnp.float32))
    return self.out_proj(tm(y).astype(h.dtype))

  def init_cache(self, batch: int, dtype=jnp.float32):
    """Zero ``(conv_state [b, d_inner, d_conv], ssm_state [b, d_inner, d_state])``."""
    return (jnp.zeros((batch, self.d_inner, self.d_conv), dtype),
            jnp.zeros((batch, self.d_inner, self.d_state), jnp.float32))

  def step(self, h_t: jax.Array, cache):
    """One frame ``h_t [batch, d_model]`` -> ``(out [batch, d_model], new cache)``."""
    conv_state, ssm_state = cache
    x, z = jnp.split(self.in_proj(h_t), 2, axis=-1)           # [b, di]
    conv_state = jnp.concatenate([conv_state[:, :, 1:], x[:, :, None]], axis=-1)
    x = jax.nn.silu(jnp.sum(conv_state * self.conv_kernel, axis=-1) + self.conv_bias)
    delta, B, C = self._ssm_inputs(x)
    A = -jnp.exp(self.A_log.astype(jnp.float32))
    ssm_state, y = scan_ops.selective_state_update(
        ssm_state, x, delta, A, B, C, self.D, z, self.dt_bias, delta_softplus=True)
    return self.out_proj(y), (conv_state, ssm_state)

