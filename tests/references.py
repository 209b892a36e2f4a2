"""PyTorch references for parity tests and benchmarks (torch appears only here and in
codec_bridge/).

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
