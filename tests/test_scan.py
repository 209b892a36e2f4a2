"""selective_scan vs mamba-ssm's selective_scan_ref; backends vs each other; the step.

Grid modelled on mamba-ssm's tests/ops/test_selective_scan.py (fp32: rtol 6e-4,
atol 2e-3, the same for gradients here — theirs allow looser for some grads); the
mixed B/C layouts, which their grid skips, have tolerances pinned from measurement.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from neurocodec_jax.ops import BACKENDS, selective_scan, selective_state_update
from tests.references import import_mamba_ssm

selective_scan_ref, _ = import_mamba_ssm()
RTOL, ATOL = 6e-4, 2e-3
MAX_ERR = {}


def make_inputs(seed, batch=2, dim=8, state=4, length=64, bc="variable", groups=1,
                has_d=True, has_z=True, has_bias=True):
  """bc: "variable" or "constant" for both B and C, or a (B, C) pair of those; a variable
  one is [batch, state, length] with groups 1, else [batch, groups, state, length]."""
  rng = np.random.default_rng(seed)
  r = lambda *s: rng.standard_normal(s).astype(np.float32)
  args = dict(u=r(batch, dim, length), delta=0.5 * rng.random((batch, dim, length), np.float32),
              A=-0.5 * rng.random((dim, state), np.float32) - 0.1)
  def bc_input(kind):
    if kind == "constant":
      return r(dim, state)
    return r(batch, state, length) if groups == 1 else r(batch, groups, state, length)
  b_kind, c_kind = (bc, bc) if isinstance(bc, str) else bc
  args["B"], args["C"] = bc_input(b_kind), bc_input(c_kind)
  args["D"] = r(dim) if has_d else None
  args["z"] = r(batch, dim, length) if has_z else None
  args["delta_bias"] = (0.5 * rng.random(dim, np.float32)) if has_bias else None
  return args


def reference(args, softplus, cotangent):
  t = {k: None if v is None else torch.from_numpy(v).requires_grad_() for k, v in args.items()}
  out, last = selective_scan_ref(t["u"], t["delta"], t["A"], t["B"], t["C"], D=t["D"], z=t["z"],
                                 delta_bias=t["delta_bias"], delta_softplus=softplus,
                                 return_last_state=True)
  (out * torch.from_numpy(cotangent)).sum().backward()
  grads = {k: v.grad.numpy() for k, v in t.items() if v is not None}
  return out.detach().numpy(), last.detach().numpy(), grads


def ours(args, softplus, cotangent, backend):
  keys = [k for k, v in args.items() if v is not None]
  def f(*xs):
    kw = dict(zip(keys, xs))
    return selective_scan(kw.pop("u"), kw.pop("delta"), kw.pop("A"), kw.pop("B"), kw.pop("C"),
                          delta_softplus=softplus, return_last_state=True, backend=backend,
                          chunk=16, **kw)
  (out, last), vjp = jax.vjp(f, *[jnp.asarray(args[k]) for k in keys])
  grads = vjp((jnp.asarray(cotangent), jnp.zeros_like(last)))
  return np.asarray(out), np.asarray(last), dict(zip(keys, map(np.asarray, grads)))


GRID = list(itertools.product(
    [1, 7, 64, 257],                       # length, incl. non-powers of two
    [True, False],                         # delta_softplus
    [(True, True, True), (False, False, False), (True, False, True)],   # D, z, delta_bias
    [("variable", 1), ("variable", 2), ("constant", 1)]))               # B/C kind, groups
# One of B, C time-varying and the other time-invariant, as selective_scan_fn accepts
# (grouped B with constant C; constant B with [b, n, L] C): every backend, at a length
# that ends mid-chunk (chunk 16), with D, z and delta_bias so every gradient is checked.
MIXED = [(37, True, (True, True, True), bc)
         for bc in [(("variable", "constant"), 2), (("constant", "variable"), 1)]]
# For MIXED, as rtol = atol: the measured max of |ours - ref| / (1 + |ref|) over every
# backend and both layouts is 6.5e-7 for outputs and last state, 1.7e-6 for gradients
# (abs: 2.9e-6, and 2.1e-5 on dA of entries up to 94); pinned ~20x above.
MIXED_TOL = {"out": 1.5e-5, "grad": 3.5e-5}


@pytest.mark.parametrize(
    "backend,length,softplus,dzb,bc",
    [(b, *case) for b in ("sequential_vjp", "chunked") for case in GRID]
    + [(b, *case) for b in BACKENDS for case in MIXED])
def test_matches_selective_scan_ref(backend, length, softplus, dzb, bc):
  has_d, has_z, has_bias = dzb
  args = make_inputs(length, length=length, bc=bc[0], groups=bc[1], has_d=has_d,
                     has_z=has_z, has_bias=has_bias)
  cot = np.random.default_rng(1).standard_normal(args["u"].shape).astype(np.float32)
  out_r, last_r, grads_r = reference(args, softplus, cot)
  out, last, grads = ours(args, softplus, cot, backend)
  mixed = not isinstance(bc[0], str)
  tol = lambda kind: (dict(rtol=MIXED_TOL[kind], atol=MIXED_TOL[kind]) if mixed
                      else dict(rtol=RTOL, atol=ATOL))
  np.testing.assert_allclose(out, out_r, **tol("out"))
  np.testing.assert_allclose(last, last_r, **tol("out"))
  for k, g in grads_r.items():
    np.testing.assert_allclose(grads[k], g, **tol("grad"), err_msg=k)
  err = MAX_ERR.setdefault(f"{backend}{', mixed B/C' if mixed else ''}",
                           {"n": 0, "out": 0.0, "grad": 0.0, "grad_rel": 0.0})
  err["n"] += 1
  err["out"] = max(err["out"], float(np.abs(out - out_r).max()))
  for k, g in grads_r.items():
    e = float(np.abs(grads[k] - g).max())
    if e > err["grad"]:
      err.update(grad=e, grad_rel=e / float(np.abs(g).max()), worst=f"d{k} L={length}")


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "sequential"])
@pytest.mark.parametrize("length", [1, 33, 200])
def test_backends_agree_with_sequential(backend, length):
  args = make_inputs(3, length=length, groups=2)
  cot = np.ones(args["u"].shape, np.float32)
  seq = ours(args, True, cot, "sequential")
  other = ours(args, True, cot, backend)
  for a, b in zip(seq[:2], other[:2]):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)
  for k in seq[2]:
    np.testing.assert_allclose(other[2][k], seq[2][k], rtol=1e-5, atol=1e-5, err_msg=k)


def test_float32_accumulation_for_bfloat16_inputs():
  args = make_inputs(5, length=50)
  out32 = selective_scan(**{k: jnp.asarray(v) for k, v in args.items()}, delta_softplus=True)
  bf = {k: jnp.asarray(v).astype(jnp.bfloat16) if k in ("u", "delta", "z") else jnp.asarray(v)
        for k, v in args.items()}
  out16 = selective_scan(**bf, delta_softplus=True)
  assert out16.dtype == jnp.bfloat16
  # Only the bf16 rounding of inputs and output separates the two.
  np.testing.assert_allclose(np.asarray(out16, np.float32), out32, rtol=5e-2, atol=5e-2)


def test_recurrent_step_equals_full_scan():
  args = make_inputs(7, length=40, groups=2)
  full, last = selective_scan(**{k: jnp.asarray(v) for k, v in args.items()},
                              delta_softplus=True, return_last_state=True)
  state = jnp.zeros((2, 8, 4), jnp.float32)
  outs = []
  for t in range(40):
    state, y = selective_state_update(
        state, args["u"][:, :, t], args["delta"][:, :, t], args["A"], args["B"][..., t],
        args["C"][..., t], args["D"], args["z"][:, :, t], args["delta_bias"], True)
    outs.append(y)
  np.testing.assert_allclose(np.stack(outs, -1), full, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state, last, rtol=1e-5, atol=1e-5)


def test_unknown_backend_rejected():
  args = make_inputs(0, length=4)
  with pytest.raises(ValueError, match="scan backend"):
    selective_scan(**{k: jnp.asarray(v) for k, v in args.items()}, backend="fast")


def test_report_max_errors():
  for backend, err in MAX_ERR.items():
    print(f"selective_scan ({backend}) vs selective_scan_ref over {err['n']} cases: max "
          f"|out err| {err['out']:.2e}, max |grad err| {err['grad']:.2e} "
          f"({err['grad_rel']:.1e} of that gradient's max, {err.get('worst')})")


@pytest.mark.parametrize("bc", [("variable", 1), ("variable", 2), ("constant", 1)])
def test_last_state_cotangent_flows_back(bc):
  """Gradients through the returned last state (streaming carries it) agree."""
  args = make_inputs(11, length=37, bc=bc[0], groups=bc[1])
  keys = [k for k, v in args.items() if v is not None]
  def loss(backend, *xs):
    kw = dict(zip(keys, xs))
    out, last = selective_scan(kw.pop("u"), kw.pop("delta"), kw.pop("A"), kw.pop("B"),
                               kw.pop("C"), delta_softplus=True, return_last_state=True,
                               backend=backend, chunk=16, **kw)
    return jnp.sum(out * 0.3) + jnp.sum(jnp.sin(last))
  xs = [jnp.asarray(args[k]) for k in keys]
  expected = jax.grad(lambda *a: loss("sequential", *a), argnums=tuple(range(len(keys))))(*xs)
  for backend in BACKENDS:
    got = jax.grad(lambda *a: loss(backend, *a), argnums=tuple(range(len(keys))))(*xs)
    for k, a, b in zip(keys, got, expected):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=f"{backend} {k}")
