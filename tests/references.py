"""PyTorch references for parity tests and benchmarks (torch appears only here and in
codec_bridge/): mamba-ssm's Mamba on a CPU, DAC's discriminator at any width.

mamba-ssm imports its CUDA extension unguarded in its package ``__init__``; on a
machine without it we register an empty module under that name first, and point
the Mamba module's ``selective_scan_fn`` (CUDA-only) at the pure-PyTorch
``selective_scan_ref``. With the real extension present nothing is patched.

mamba-ssm's package ``__init__`` also imports Mamba3, whose optional TileLang and
CuTe (quack) kernels load ``tvm_ffi``; that library installs a process-wide crash
handler that unwinds the stack from inside the signal. A signal landing while a C++
exception unwinds (XLA reports errors through C++ exceptions) then waits on the
unwinder lock its own thread holds: the test process hung forever instead of
failing (seen in `make test` at a train step compiled after the parity tests). We
compare against Mamba (v1) only, so both are kept out; mamba-ssm treats them as
optional (``ImportError`` -> no Mamba3 TileLang/CuTe kernels).
"""

import importlib.util
import sys
import types


def import_mamba_ssm():
  """Returns ``(selective_scan_ref, Mamba)`` usable on this machine."""
  stub = sys.modules.get("selective_scan_cuda")
  cuda_ext = (getattr(stub, "__spec__", None) is not None
              or (stub is None and importlib.util.find_spec("selective_scan_cuda") is not None))
  if not cuda_ext and stub is None:
    sys.modules["selective_scan_cuda"] = types.ModuleType("selective_scan_cuda")
  for optional in ("tilelang", "quack"):     # `import tilelang` -> ImportError
    sys.modules.setdefault(optional, None)
  from mamba_ssm.ops.selective_scan_interface import selective_scan_ref  # pylint: disable=g-import-not-at-top
  from mamba_ssm.modules import mamba_simple  # pylint: disable=g-import-not-at-top
  if not cuda_ext:
    mamba_simple.selective_scan_fn = selective_scan_ref
  return selective_scan_ref, mamba_simple.Mamba


def torch_discriminator(periods, ffts, width: float, sample_rate: int):
  """DAC's ``Discriminator`` (MPDs, MRDs), every conv narrowed by ``width`` (DAC's own
  forward code with narrower layers; 1.0 is DAC's model)."""
  import torch  # pylint: disable=g-import-not-at-top
  from dac.model import discriminator as tdisc  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = tdisc.Discriminator(periods=list(periods), fft_sizes=list(ffts),
                              sample_rate=sample_rate)
  if width == 1.0:
    return model
  from neurocodec_jax.models.discriminators import _ch  # pylint: disable=g-import-not-at-top
  ch = lambda c: _ch(c, width)

  def narrow(conv_module, act=True):
    conv = conv_module[0] if act else conv_module
    new_in = conv.in_channels if conv.in_channels in (1, 2) else ch(conv.in_channels)
    new_out = 1 if conv.out_channels == 1 else ch(conv.out_channels)
    return tdisc.WNConv2d(new_in, new_out, conv.kernel_size, conv.stride,
                          padding=conv.padding, act=act)

  for sub in model.discriminators:
    if isinstance(sub, tdisc.MPD):
      sub.convs = torch.nn.ModuleList([narrow(c) for c in sub.convs])
    else:
      sub.band_convs = torch.nn.ModuleList(
          [torch.nn.ModuleList([narrow(c) for c in stack]) for stack in sub.band_convs])
    sub.conv_post = narrow(sub.conv_post, act=False)
  return model
