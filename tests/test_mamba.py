"""Our Mamba vs mamba_ssm's Mamba with copied weights; init; step mode; causality."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from neurocodec_jax.models.mamba import Mamba, params_from_torch
from neurocodec_jax.ops import BACKENDS
from tests.references import import_mamba_ssm

_, TorchMamba = import_mamba_ssm()
RTOL, ATOL = 6e-4, 2e-3


def _pair(d_model=16, d_state=8, seed=0, backend="chunked"):
  torch.manual_seed(seed)
  ref = TorchMamba(d_model=d_model, d_state=d_state, d_conv=4, expand=2, use_fast_path=False)
  ours = Mamba(d_model=d_model, d_state=d_state, scan_backend=backend)
  return ref, ours, params_from_torch(ref)


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
  np.testing.assert_allclose(ours_out, out.detach().numpy(), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=RTOL, atol=ATOL)
  tg = {k: v.grad.numpy() for k, v in ref.named_parameters()}
  theirs = params_from_torch(type("G", (), {"state_dict": lambda self: {
      k: torch.from_numpy(v) for k, v in tg.items()}})())
  flat_ours = jax.tree_util.tree_flatten_with_path(gp)[0]
  flat_theirs = jax.tree.leaves(theirs)
  errs = []
  for (path, a), b in zip(flat_ours, flat_theirs):
    np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=jax.tree_util.keystr(path))
    errs.append(float(np.abs(np.asarray(a) - np.asarray(b)).max()))
  print(f"Mamba {backend} L={length}: out err {np.abs(ours_out - out.detach().numpy()).max():.1e}, "
        f"input grad err {np.abs(gx - xt.grad.numpy()).max():.1e}, param grad err {max(errs):.1e}")


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
  np.testing.assert_array_equal(moved[:, :25], base[:, :25])
  assert np.abs(moved[:, 25:] - base[:, 25:]).max() > 1e-3
