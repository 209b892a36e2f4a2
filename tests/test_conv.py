"""``neurocodec_jax.ops.conv``: every implementation of the weight-normed conv against
XLA's plain form (outputs and gradients), the choice of ``"auto"``, and refusals."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurocodec_jax.ops import conv as conv_ops
from tests.conftest import normwise_error, record_error

# (DAC-layout input shape, kernel, strides, padding, groups, the implementations whose
# form applies). Kernels one column wide are folded into the batch by the channel-last
# implementations (MPD), which makes their convs 1-D.
POLY, BANDED = ("polyphase", "polyphase_channels_last"), ("banded",)
CASES = {
    "MRD strided": ((2, 16, 7, 40), (3, 9), (1, 2), (1, 4), 1, POLY + BANDED),
    "MRD strided, odd width": ((2, 16, 7, 39), (3, 9), (1, 2), (1, 4), 1, POLY + BANDED),
    "MRD first conv": ((2, 2, 9, 26), (3, 9), (1, 1), (1, 4), 1, BANDED),
    "MRD conv_post": ((2, 4, 7, 64), (3, 3), (1, 1), (1, 1), 1, BANDED),
    "stride 3, no H padding": ((2, 8, 5, 23), (2, 4), (1, 3), (0, 1), 1, POLY + BANDED),
    "last column feeds no output": ((1, 2, 3, 5), (1, 2), (1, 2), (0, 0), 1, POLY + BANDED),
    "wide: banded in blocks": ((1, 2, 4, 150), (3, 9), (1, 2), (1, 4), 1, POLY + BANDED),
    "blocks, last column feeds none": ((1, 2, 3, 131), (3, 4), (1, 2), (1, 0), 1,
                                       POLY + BANDED),
    "MPD strided (k, 1)": ((2, 4, 20, 3), (5, 1), (3, 1), (2, 0), 1, POLY[1:]),
    "MPD conv_post (k, 1)": ((2, 4, 7, 3), (3, 1), (1, 1), (1, 0), 1, BANDED),
    "1-D strided": ((2, 16, 60), (5,), (3,), (2,), 1, POLY),
    "1-D grouped": ((2, 8, 60), (5,), (3,), (2,), 2, ()),
}
# Measured over every case and implementation, normwise per array: output <= 3.4e-7,
# gradients wrt the input <= 4.1e-7, v 6.5e-7, g 8.2e-7, bias 4.1e-7 (float32
# summation order alone); ~6x.
TOL = 5e-6


def _audio(seed, shape):
  return (0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _in_layout(implementation, x, kernel):
  """``(x in the implementation's layout, back to DAC's)``; 1-D maps move their channel
  axis last for a channel-last implementation."""
  if x.ndim == 4:
    return conv_ops.to_layout(x, implementation, fold_columns=kernel[-1] == 1)
  if conv_ops.is_channels_last(implementation):
    return jnp.moveaxis(x, 1, -1), lambda y: jnp.moveaxis(y, -1, 1)
  return x, lambda y: y


def _conv_in_dac_layout(implementation, case):
  _, kernel, strides, padding, groups, _ = case

  def f(x, v, g, b):
    x, back = _in_layout(implementation, x, kernel)
    return back(conv_ops.weight_normed_conv(x, v, g, b, strides, padding, implementation,
                                            groups))
  return f


def _arguments(case):
  shape, kernel, _, _, groups, _ = case
  out = 6
  v = _audio(1, (out, shape[1] // groups, *kernel))
  g = np.abs(_audio(2, (out,) + (1,) * (len(kernel) + 1))) + 0.5
  return [jnp.asarray(a) for a in (_audio(0, shape), v, g, _audio(3, (out,)))]


@pytest.mark.parametrize("implementation", conv_ops.IMPLEMENTATIONS[1:])
@pytest.mark.parametrize("name", CASES)
def test_every_implementation_equals_xla(implementation, name):
  """Each implementation is XLA's conv in DAC's layout: output, and the gradients wrt
  the input, ``v``, ``g`` and the bias; where its form applies it runs it (no conv
  for ``banded``, stride-1 convs only for ``polyphase``), elsewhere XLA's conv."""
  case = CASES[name]
  args = _arguments(case)
  f, ref = _conv_in_dac_layout(implementation, case), _conv_in_dac_layout("xla", case)
  y, vjp = jax.vjp(f, *args)
  y_ref, vjp_ref = jax.vjp(ref, *args)
  assert y.shape == y_ref.shape
  ct = jnp.asarray(_audio(4, y.shape))
  errs = [normwise_error(y, y_ref)]
  errs += [normwise_error(a, b) for a, b in zip(vjp(ct), vjp_ref(ct))]
  for quantity, err in zip(("output", "input gradient", "v gradient", "g gradient",
                            "bias gradient"), errs):
    record_error("ops.conv vs xla", quantity, err, f"{implementation}, {name}")
  assert max(errs) < TOL, errs

  convs = [e.params["window_strides"] for e in jax.make_jaxpr(f)(*args).eqns
           if e.primitive.name == "conv_general_dilated"]
  if implementation == "banded" and implementation in case[-1]:
    assert not convs
  elif implementation in case[-1]:                     # polyphase: one stride-1 conv
    assert [set(s) for s in convs] == [{1}]
  else:                                                # XLA's conv, strided as asked
    assert len(convs) == 1 and convs[0] == case[2][:len(convs[0])]


def test_auto_is_chosen_by_backend_kernel_and_width():
  resolve = conv_ops.resolve
  assert resolve("auto", (5, 1), 32, backend="cpu") == "channels_last"
  assert resolve("auto", (5, 1), 32, backend="gpu") == "channels_last"
  assert resolve("auto", (3, 9), conv_ops.CPU_NARROW_CHANNELS - 1, backend="cpu") == "banded"
  assert (resolve("auto", (3, 9), conv_ops.CPU_NARROW_CHANNELS, backend="cpu")
          == "polyphase_channels_last")
  assert resolve("auto", (3, 9), 2, backend="gpu") == resolve("auto", (3, 9), 32, "tpu") == "xla"
  for name in conv_ops.IMPLEMENTATIONS:
    assert resolve(name, (3, 9), 2, backend="cpu") == name
  with pytest.raises(ValueError, match="implementation"):
    resolve("fast", (3, 9), 2)
  with pytest.raises(ValueError, match="implementation"):
    conv_ops.conv(jnp.zeros((1, 2, 8, 8)), jnp.zeros((2, 2, 3, 3)), (1, 1), (1, 1), "auto")


def test_folded_input_needs_a_unit_kernel_axis():
  with pytest.raises(ValueError, match="unit last kernel axis"):
    conv_ops.conv(jnp.zeros((1, 16, 2)), jnp.zeros((4, 2, 3, 3)), (1, 1), (1, 1),
                  "channels_last")


def test_polyphase_conv_refuses_a_stride_before_the_last_axis():
  with pytest.raises(ValueError, match="last axis"):
    conv_ops.polyphase_conv(jnp.zeros((1, 2, 8, 8)), jnp.zeros((2, 2, 3, 3)), (2, 2), (1, 1))


def test_banded_conv_refuses_a_stride_along_h():
  with pytest.raises(ValueError, match="stride along H"):
    conv_ops.banded_conv(jnp.zeros((1, 2, 8, 8)), jnp.zeros((2, 2, 3, 3)), (2, 1), (1, 1))
