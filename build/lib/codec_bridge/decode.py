"""DAC's decoder as a differentiable JAX function, backed by torch.

Design: ``jax.custom_vjp`` around two ``jax.pure_callback``s, so ``decode`` can sit
inside the jitted generator step (one program: generator, decode, losses, VJPs).
The forward callback runs the torch decoder with autograd on and keeps the graph in
a small host-side cache under an integer handle, returned to JAX as a residual; the
backward callback looks the handle up and runs ``torch.autograd.grad`` on that graph
with the cotangent — the decoder forward is never recomputed for the backward. If the
handle is not in the cache (evicted, or XLA duplicated the forward), the backward
recomputes the forward from z, so the gradient is always right. The cache holds at
most ``max_graphs`` graphs (a forward without a backward cannot leak).

Why not a split step (host decode between two jitted halves): it would break the
train step into three programs with two host round trips and force the trainer to
hand-carry the generator's VJP; the callback costs the same two host transfers and
keeps the step a single pure function. On GPU, ``pure_callback`` goes through host
memory (a device->host->device copy each way).

Operands cross in pieces of under 100 KiB (``_send``/``_receive``). ``pure_callback``
hands the callback its operands as jax Arrays made by ``device_put``, and XLA's CPU
client copies a host buffer of 100 KiB or more into one asynchronously, on the thread
pool that runs the program, i.e. the pool whose thread is running the callback. That
pool has one thread per CPU of the affinity mask: in a process pinned to one CPU
(``taskset -c 0``) the callback's ``np.asarray`` waited forever on a copy queued behind
itself (tests/test_decode_one_cpu.py). Smaller buffers are copied during the
``device_put`` call, so the callback never waits on the pool.

Output length: DAC's decoder returns ``frames * hop - 8`` samples for models with an
odd decoder stride (5: the 16 and 24 kHz models) and exactly ``frames * hop`` for the
44.1 kHz model. The tail is zero-padded to ``frames * hop`` so the waveform is aligned
sample for sample with the audio the codes came from.
"""

from __future__ import annotations

import collections
import itertools
import threading

import jax
import jax.numpy as jnp
import numpy as np
import torch

from neurocodec_jax.codec import hop_length

# XLA's CPU client copies host buffers of at least 100 KiB (kSmallDataTransferByteSize in
# xla/pjrt/cpu/raw_buffer.cc) asynchronously on the program's own thread pool; operands
# are sent to the callbacks in pieces well below that (see the module docstring).
_PIECE_BYTES = 64 * 1024


def _send(x: jax.Array) -> tuple:
  """``x`` flattened into pieces of at most ``_PIECE_BYTES``: the callback operands."""
  flat = x.reshape(-1)
  step = max(_PIECE_BYTES // flat.dtype.itemsize, 1)
  return tuple(flat[i:i + step] for i in range(0, max(flat.size, 1), step))


def _receive(pieces, shape) -> np.ndarray:
  """Host side of ``_send``: one new (writable, contiguous) numpy array of ``shape``."""
  return np.concatenate([np.asarray(p) for p in pieces]).reshape(shape)


def _callback(host_fn, result_shape, *args):
  """``jax.pure_callback(host_fn, result_shape, *args)`` with ``args`` sent by ``_send``;
  ``host_fn`` gets numpy arrays of the original shapes."""
  shapes = tuple(a.shape for a in args)
  def host(pieces):
    return host_fn(*(_receive(p, s) for p, s in zip(pieces, shapes)))
  return jax.pure_callback(host, result_shape, tuple(_send(a) for a in args))


class _GraphCache:
  """Bounded handle -> (z leaf, waveform) store of live torch graphs."""

  def __init__(self, max_graphs: int):
    self.max_graphs = max_graphs
    self._graphs = collections.OrderedDict()
    self._ids = itertools.count(1)
    self._lock = threading.Lock()

  def put(self, entry) -> int:
    with self._lock:
      handle = next(self._ids) % (2 ** 31 - 1)
      self._graphs[handle] = entry
      while len(self._graphs) > self.max_graphs:
        self._graphs.popitem(last=False)
      return handle

  def pop(self, handle: int):
    with self._lock:
      return self._graphs.pop(handle, None)

  def __len__(self):
    return len(self._graphs)


def make_decoder(dac_model, max_graphs: int = 4):
  """Returns ``decode(z)``: ``[batch, latent_dim, frames] -> [batch, 1, frames * hop]``.

  Differentiable (``jax.grad``/``jax.vjp``) and usable under ``jax.jit``; not
  under ``jax.vmap`` (batch instead). float32.
  """
  decoder = dac_model.decoder
  device = next(decoder.parameters()).device
  latent_dim, hop = int(dac_model.latent_dim), hop_length(dac_model)
  cache = _GraphCache(max_graphs)

  def to_torch(x: np.ndarray) -> torch.Tensor:   # x: a fresh array from _receive
    return torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(device)

  def run(z: torch.Tensor) -> torch.Tensor:
    wave = decoder(z)
    missing = z.shape[-1] * hop - wave.shape[-1]
    return torch.nn.functional.pad(wave, (0, missing)) if missing > 0 else wave[..., :z.shape[-1] * hop]

  def host_forward(z):
    with torch.no_grad():
      return run(to_torch(z)).cpu().numpy()

  def host_forward_keep(z):
    zt = to_torch(z).requires_grad_(True)
    with torch.enable_grad():
      wave = run(zt)
    handle = cache.put((zt, wave))
    return wave.detach().cpu().numpy(), np.int32(handle)

  def host_backward(handle, z, g):
    entry = cache.pop(int(handle))
    if entry is None:                      # evicted or duplicated: recompute
      zt = to_torch(z).requires_grad_(True)
      with torch.enable_grad():
        entry = (zt, run(zt))
    zt, wave = entry
    (grad,) = torch.autograd.grad(wave, zt, grad_outputs=to_torch(g))
    return grad.cpu().numpy()

  def shapes(z):
    if z.ndim != 3 or z.shape[1] != latent_dim:
      raise ValueError(f"decode expects z of shape [batch, {latent_dim}, frames], "
                       f"got {tuple(z.shape)}.")
    if z.dtype != jnp.float32:
      raise ValueError(f"decode expects float32 z, got {z.dtype}.")
    return jax.ShapeDtypeStruct((z.shape[0], 1, z.shape[2] * hop), jnp.float32)

  @jax.custom_vjp
  def decode(z):
    return _callback(host_forward, shapes(z), z)

  def fwd(z):
    wave, handle = _callback(
        host_forward_keep, (shapes(z), jax.ShapeDtypeStruct((), jnp.int32)), z)
    return wave, (handle, z)

  def bwd(res, g):
    handle, z = res
    return (_callback(host_backward, jax.ShapeDtypeStruct(z.shape, z.dtype), handle, z, g),)

  decode.defvjp(fwd, bwd)
  decode.cache = cache                    # for tests: live graphs
  decode.hop_length = hop
  return decode
