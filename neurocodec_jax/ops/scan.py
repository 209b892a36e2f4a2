"""The selective scan of Mamba (S6), with mamba-ssm's semantics and layouts.

``selective_scan`` has the signature and tensor layouts of
``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` (and its reference,
``selective_scan_ref``)::

  delta <- softplus(delta + delta_bias)          (each optional)
  x_t   = exp(delta_t A) * x_{t-1} + delta_t u_t B_t      state [batch, dim, state]
  y_t   = <x_t, C_t> (+ D u_t) (* silu(z_t))

  u, delta, z: [batch, dim, length]      A: [dim, state] (real)
  B, C: [dim, state] (time-invariant), [batch, state, length], or
        [batch, groups, state, length] (dim split into groups of dim/groups);
        each independently, so one may be time-invariant and the other not
  D, delta_bias: [dim]
  returns out [batch, dim, length] (the input dtype), and with
  ``return_last_state`` the final state [batch, dim, state] (float32).

Everything is computed in float32 whatever the input dtype. Backends (one
interface, tested against each other and against ``selective_scan_ref``):

  sequential   ``lax.scan`` over time; the [batch, dim, state] discretized terms
               are formed inside the step and never materialized over time.
  sequential_vjp  the same forward with a hand-written backward: the forward keeps
               every state x_t ([L, b, d, n]), the backward is one reverse
               ``lax.scan`` of the adjoint state (dA recomputed, never stored) that
               accumulates the gradients of A and of time-invariant B/C in its
               carry. Fastest on CPU (bench_scan); memory 4 L b d n bytes.
  associative  ``lax.associative_scan`` over (exp(delta A), delta u B) pairs:
               O(log L) depth, materializes [length, batch, dim, state].
  chunked      ``lax.scan`` over chunks of ``chunk`` steps carrying the state, an
               associative scan inside each chunk; the chunk body is
               rematerialized (``jax.checkpoint``), so the backward pass keeps
               only the states at chunk boundaries instead of every step's.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

BACKENDS = ("sequential", "sequential_vjp", "associative", "chunked")
# Unrolling the reverse (adjoint) scan lets XLA fuse consecutive steps; 4 was chosen
# by `python -m bench.bench_scan` (docs/performance.md).
BWD_UNROLL = 4


class Inputs(NamedTuple):
  """Time-major float32 inputs: u, delta [L, b, d]; B, C (each) [L, b, 1|d, n] or
  [1, 1, d, n]."""
  u: jax.Array
  delta: jax.Array
  B: jax.Array
  C: jax.Array


def _time_major_bc(x: jax.Array, dim: int) -> jax.Array:
  """B or C in any accepted layout -> broadcastable [L|1, b|1, 1|d, n] float32."""
  x = x.astype(jnp.float32)
  if x.ndim == 2:                              # [d, n], time-invariant
    return x[None, None]
  if x.ndim == 3:                              # [b, n, L]
    return jnp.transpose(x, (2, 0, 1))[:, :, None, :]
  if x.ndim == 4:                              # [b, g, n, L]
    groups = x.shape[1]
    if dim % groups:
      raise ValueError(f"dim {dim} is not divisible by {groups} groups of B/C.")
    x = jnp.repeat(x, dim // groups, axis=1)   # [b, d, n, L]
    return jnp.transpose(x, (3, 0, 1, 2))
  raise ValueError(f"B/C must have 2, 3 or 4 dims, got shape {x.shape}.")


def _discretize(A, inp: Inputs):
  """(exp(delta A), delta u B) for the time slices in ``inp``: [..., b, d, n]."""
  dA = jnp.exp(inp.delta[..., None] * A)
  dBu = (inp.delta * inp.u)[..., None] * inp.B
  return dA, dBu


def _combine(left, right):
  a1, b1 = left
  a2, b2 = right
  return a1 * a2, a2 * b1 + b2


def _readout(x, C):
  return jnp.sum(x * C, axis=-1)


def _is_const(x, u) -> bool:
  """B or C ``x`` time-invariant ([1, 1, d, n]) rather than a length-1 sequence.

  Asked of B and C separately: either may be time-invariant without the other.
  """
  return x.shape[0] == 1 and u.shape[0] != 1


def _scan_sequential(A, inp: Inputs, x0, keep_states: bool = False):
  """``(ys, last state)``; with ``keep_states`` also every state x_t
  ``[L, b, d, n]`` (the residual of :func:`_scan_sequential_vjp`)."""
  const_b, const_c = _is_const(inp.B, inp.u), _is_const(inp.C, inp.u)
  def step(x, sl):
    u, delta, B, C = sl
    B = inp.B[0] if const_b else B
    C = inp.C[0] if const_c else C
    dA, dBu = _discretize(A, Inputs(u, delta, B, C))
    x = dA * x + dBu
    return x, (_readout(x, C), x if keep_states else None)
  xs = (inp.u, inp.delta, None if const_b else inp.B, None if const_c else inp.C)
  x, (ys, states) = jax.lax.scan(step, x0, xs)
  return (ys, x, states) if keep_states else (ys, x)


def _reduce_to(g, shape):
  """Sums ``g`` over the axes where ``shape`` broadcasts (size 1)."""
  axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
  return jnp.sum(g, axis=axes, keepdims=True) if axes else g


@jax.custom_vjp
def _scan_sequential_vjp(A, u, delta, B, C, x0):
  return _scan_sequential(A, Inputs(u, delta, B, C), x0)


def _seq_vjp_fwd(A, u, delta, B, C, x0):
  ys, last, states = _scan_sequential(A, Inputs(u, delta, B, C), x0, keep_states=True)
  return (ys, last), (A, u, delta, B, C, states)


def _seq_vjp_bwd(res, cotangents):
  A, u, delta, B, C, states = res
  g_ys, g_last = cotangents
  const_b, const_c = _is_const(B, u), _is_const(C, u)

  def step(carry, sl):
    h, gA, gB, gC = carry            # h: adjoint reaching x_t from t+1
    u_t, delta_t, B_t, C_t, gy_t, x_t = sl
    B_t = B[0] if const_b else B_t
    C_t = C[0] if const_c else C_t
    dA = jnp.exp(delta_t[..., None] * A)
    gx = h + gy_t[..., None] * C_t                                 # dL/dx_t
    # dA x_{t-1} = x_t - delta u B: no shifted copy of the states is needed.
    g_dA = gx * (x_t - (delta_t * u_t)[..., None] * B_t)          # dL/d(delta A)
    gxB = jnp.sum(gx * B_t, axis=-1)
    g_delta = jnp.sum(g_dA * A, axis=-1) + gxB * u_t
    g_u = gxB * delta_t
    gA = gA + jnp.sum(g_dA * delta_t[..., None], axis=0)
    g_B = _reduce_to(gx * (delta_t * u_t)[..., None], B_t.shape)
    g_C = _reduce_to(gy_t[..., None] * x_t, C_t.shape)
    # A time-invariant B or C accumulates its gradient in the carry (None otherwise).
    if const_b:
      gB, g_B = gB + g_B, None
    if const_c:
      gC, g_C = gC + g_C, None
    return (gx * dA, gA, gB, gC), (g_u, g_delta, g_B, g_C)

  zeros = lambda x: jnp.zeros(x.shape[1:], x.dtype)
  init = (g_last, jnp.zeros_like(A), zeros(B) if const_b else None,
          zeros(C) if const_c else None)
  xs = (u, delta, None if const_b else B, None if const_c else C, g_ys, states)
  (h0, gA, gB_c, gC_c), (g_u, g_delta, g_B, g_C) = jax.lax.scan(
      step, init, xs, reverse=True, unroll=BWD_UNROLL)
  g_B = gB_c[None] if const_b else g_B
  g_C = gC_c[None] if const_c else g_C
  return gA, g_u, g_delta, g_B, g_C, h0


_scan_sequential_vjp.defvjp(_seq_vjp_fwd, _seq_vjp_bwd)


def _scan_associative(A, inp: Inputs, x0):
  dA, dBu = _discretize(A, inp)
  dBu = dBu.at[0].add(dA[0] * x0)
  a, xs = jax.lax.associative_scan(_combine, (dA, dBu), axis=0)
  del a
  return _readout(xs, inp.C), xs[-1]


def _scan_chunked(A, inp: Inputs, x0, chunk: int):
  length = inp.u.shape[0]
  n_chunks = -(-length // chunk)
  pad = n_chunks * chunk - length
  def padded(x):        # delta = 0 past the end: exp(0) = 1 and no input, state kept
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape(n_chunks, chunk, *x.shape[1:])
  # A time-invariant B or C is closed over, not chunked (None in the scanned slices).
  chunks = lambda x: None if _is_const(x, inp.u) else padded(x)
  u, delta, B, C = padded(inp.u), padded(inp.delta), chunks(inp.B), chunks(inp.C)

  @jax.checkpoint
  def body(x, sl):
    u_c, delta_c, B_c, C_c = sl
    B_c = inp.B if B_c is None else B_c
    C_c = inp.C if C_c is None else C_c
    ys, x = _scan_associative(A, Inputs(u_c, delta_c, B_c, C_c), x)
    return x, ys

  x, ys = jax.lax.scan(body, x0, (u, delta, B, C))
  return ys.reshape(n_chunks * chunk, *ys.shape[2:])[:length], x


def scan_core(A: jax.Array, inp: Inputs, x0: jax.Array, backend: str = "sequential_vjp",
              chunk: int = 64):
  """Time-major scan: returns ``(y [L, b, d], last state [b, d, n])``, float32."""
  A = A.astype(jnp.float32)
  if backend == "sequential":
    return _scan_sequential(A, inp, x0)
  if backend == "sequential_vjp":
    return _scan_sequential_vjp(A, *inp, x0)
  if backend == "associative":
    return _scan_associative(A, inp, x0)
  if backend == "chunked":
    return _scan_chunked(A, inp, x0, chunk)
  raise ValueError(f"scan backend must be one of {BACKENDS}, got {backend!r}.")


def prepare_delta(delta, delta_bias=None, delta_softplus=False):
  delta = delta.astype(jnp.float32)
  if delta_bias is not None:
    delta = delta + delta_bias.astype(jnp.float32)
  return jax.nn.softplus(delta) if delta_softplus else delta


@functools.partial(jax.jit, static_argnames=("delta_softplus", "return_last_state",
                                             "backend", "chunk"))
def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                   delta_softplus=False, return_last_state=False, *,
                   backend: str = "sequential_vjp", chunk: int = 64):
  """mamba-ssm's ``selective_scan_fn`` in JAX (see the module docstring)."""
  dtype_in = u.dtype
  batch, dim, length = u.shape
  if A.shape[0] != dim:
    raise ValueError(f"A has {A.shape[0]} rows for dim {dim}.")
  to_tm = lambda x: jnp.transpose(x.astype(jnp.float32), (2, 0, 1))     # [L, b, d]
  delta_tm = prepare_delta(to_tm(delta),
                           None if delta_bias is None else delta_bias[None, None],
                           delta_softplus)
  inp = Inputs(to_tm(u), delta_tm, _time_major_bc(B, dim), _time_major_bc(C, dim))
  x0 = jnp.zeros((batch, dim, A.shape[1]), jnp.float32)
  y, last = scan_core(A, inp, x0, backend, chunk)
  if D is not None:
    y = y + inp.u * D.astype(jnp.float32)
  if z is not None:
    y = y * jax.nn.silu(to_tm(z))
  out = jnp.transpose(y, (1, 2, 0)).astype(dtype_in)
  return (out, last) if return_last_state else out


def selective_state_update(state, u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False):
  """One recurrent step (streaming): returns ``(new state [b, d, n], out [b, d])``.

  u, delta, z: [b, d]; B, C: [b, n] or [b, g, n]; state float32 [b, d, n].
  Equal to step t of :func:`selective_scan` given the state after step t-1.
  """
  dim = u.shape[1]
  delta = prepare_delta(delta, delta_bias, delta_softplus)
  def bc(x):
    x = x.astype(jnp.float32)
    return x[:, None, :] if x.ndim == 2 else jnp.repeat(x, dim // x.shape[1], axis=1)
  B, C = bc(B), bc(C)
  u32 = u.astype(jnp.float32)
  state = jnp.exp(delta[..., None] * A.astype(jnp.float32)) * state + (delta * u32)[..., None] * B
  y = _readout(state, C)
  if D is not None:
    y = y + u32 * D.astype(jnp.float32)
  if z is not None:
    y = y * jax.nn.silu(z.astype(jnp.float32))
  return state, y.astype(u.dtype)
