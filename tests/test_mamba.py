"""Our Mamba vs mamba_ssm's Mamba with copied weights; init; step mode; causality."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from codec_bridge.converters import mamba_params_from_torch
from neurocodec_jax.models.mamba import Mamba
from neurocodec_jax.ops import BACKENDS
from tests.conftest import normwise_error, record_error
from tests.references import import_mamba_ssm

_, TorchMamba = import_mamba_ssm()
# Errors are max|ours - ref| / max|ref| per array (parameter gradients range from
# ~1e-3 to ~6). Measured over 3 seeds x lengths 1/29/172 x every backend: output
# 2.9e-7 and input gradient 3.3e-7 (tolerance 5e-6), parameter gradients 1.2e-6
# (dt_proj kernel; tolerance 2e-5): ~15x margin.
OUT_TOL, GRAD_TOL = 5e-6, 2e-5
FLOOR = 1e-4      # A_log's gradient is exactly 0 at length 1 (ours: ~1e-12)


def _pair(d_model=16, d_state=8, seed=0, backend="chunked"):
  torch.manual_seed(seed)
  ref = TorchMamba(d_model=d_model, d_state=d_state, d_conv=4, expand=2, use_fast_path=False)
  ours = Mamba(d_model=d_model, d_state=d_state, scan_backend=backend)
  return ref, ours, mamba_params_from_torch(ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("length", [1, 29, 172])
def test_forward_and_gradients_match_mamba_ssm(backend, length):
  ref, ours, params = _pair(backend=backend)
  x = np.random.default_rng(length).standard_normal((2, length, 16)).astype(np.float32)
  xt = torch.from_numpy(x).requires_grad_()
  out = ref(xt)
  cot = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
  (out * torch.from_numpy(cot)).sum().backward()
  ours_out, vjp = jax.vjp(lambda p, h: ours.apply({"params": p}, h), params, jnp.asarray(x))
  gp, gx = vjp(jnp.asarray(cot))
  name = f"Mamba {backend} vs mamba_ssm"

  def check(a, b, tol, quantity, which=""):
    err = normwise_error(a, b, FLOOR)
    record_error(name, quantity, err, f"{which}L={length}")
    assert err <= tol, f"{quantity} {which}L={length}: normwise error {err:.2e} > {tol:.0e}"

  check(ours_out, out.detach().numpy(), OUT_TOL, "out")
  check(gx, xt.grad.numpy(), OUT_TOL, "input gradient")
  tg = {k: v.grad.numpy() for k, v in ref.named_parameters()}
  theirs = mamba_params_from_torch(type("G", (), {"state_dict": lambda self: {
      k: torch.from_numpy(v) for k, v in tg.items()}})())
  flat_ours = jax.tree_util.tree_flatten_with_path(gp)[0]
  flat_theirs = jax.tree.leaves(theirs)
  assert len(flat_ours) == len(flat_theirs)
  for (path, a), b in zip(flat_ours, flat_theirs):
    check(a, b, GRAD_TOL, "parameter gradients", f"d{jax.tree_util.keystr(path)} ")


def test_parameter_tree_and_init_ranges_match():
  d_model, d_state = 64, 16
  ref, ours, params = _pair(d_model=d_model, d_state=d_state)
  init = ours.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, d_model)))["params"]
  assert jax.tree.structure(init) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(init), jax.tree.leaves(params)):
    assert a.shape == b.shape
  d_inner, rank = 2 * d_model, math.ceil(d_model / 16)
  np.testing.assert_allclose(init["A_log"], params["A_log"], rtol=1e-6)   # log(1..N), fp32
  assert init["A_log"].shape == (d_inner, d_state)
  np.testing.assert_array_equal(init["D"], np.ones(d_inner))
  assert init["A_log"].dtype == init["D"].dtype == init["dt_proj_bias"].dtype == jnp.float32
  dt = np.log1p(np.exp(np.asarray(init["dt_proj_bias"])))      # softplus(bias) = dt
  assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001
  # log-uniform: log dt spread over [log 1e-3, log 0.1] like theirs.
  ref_dt = np.log1p(np.exp(params["dt_proj_bias"]))
  for q in (0.1, 0.5, 0.9):
    assert abs(np.quantile(np.log(dt), q) - np.quantile(np.log(ref_dt), q)) < 0.5
  bounds = {"dt_proj_kernel": rank ** -0.5, "conv1d_kernel": 0.5, "conv1d_bias": 0.5}
  for name, bound in bounds.items():
    assert np.abs(init[name]).max() <= bound and np.abs(params[name]).max() <= bound
    assert np.abs(init[name]).max() > 0.8 * bound
  for name, fan_in in (("in_proj", d_model), ("x_proj", d_inner), ("out_proj", d_inner)):
    assert np.abs(init[name]["kernel"]).max() <= 1 / math.sqrt(fan_in)
    assert np.abs(params[name]["kernel"]).max() <= 1 / math.sqrt(fan_in)


def test_step_mode_equals_full_forward():
  _, ours, params = _pair()
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 30, 16)), jnp.float32)
  full = ours.apply({"params": params}, x)
  cache = ours.init_cache(2)
  outs = []
  for t in range(30):
    y, cache = ours.apply({"params": params}, x[:, t], cache, method=Mamba.step)
    outs.append(y)
  np.testing.assert_allclose(np.stack(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_causal():
  _, ours, params = _pair()
  x = np.random.default_rng(3).standard_normal((1, 40, 16)).astype(np.float32)
  base = np.asarray(ours.apply({"params": params}, jnp.asarray(x)))
  x[:, 25] += 10.0
  moved = np.asarray(ours.apply({"params": params}, jnp.asarray(x)))
  np.testing.assert_array_equal(moved[:, :25], base[:, :25])          # not the past
  # The future, every step of it: measured >= 0.08 within the conv's 4 steps and
  # 5.7e-5 .. 1e-3 beyond them, where only the scan's state carries the change.
  change = np.abs(moved - base).max(axis=(0, 2))[25:]
  assert change[:4].min() > 1e-2 and change[4:].min() > 1e-6, change
