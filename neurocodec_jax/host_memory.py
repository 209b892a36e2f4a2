"""glibc's allocator set for XLA's CPU runtime: freed memory is kept for reuse.

XLA's CPU runtime mallocs each run's temporaries (2.6 GB in the train step with
DAC's discriminator) and frees them after. glibc serves every block above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it on ``free``, so each
step the kernel faults the pages in and zeroes them again: 2.7-3.6 GB of page faults
per full step. With ``M_MMAP_MAX=0`` those blocks come from the heaps, and with
``M_TRIM_THRESHOLD`` off the heaps keep their pages: 9-254 MB of faults per step.
On a 2-core CPU the full step (the demo's generator, DAC's discriminator) ran 9-14%
faster with the torch codec backend and 3% with ``codec.backend=jax`` (one pair;
docs/performance.md). The process then holds its peak memory until it exits, which a
training process does anyway.

Not ``M_ARENA_MAX=1`` (one arena for every thread): XLA's threads then contend for
its lock, 9-22% slower than glibc's defaults.

On an accelerator the temporaries live on the device; the host allocator is not
on the step's path, so callers set this for the CPU backend only.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

# mallopt's parameter numbers (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
  """Sets glibc's malloc, process-wide, to serve every block from its heap and never
  return the heap's pages to the system. Takes effect for later allocations, so it may
  be called after JAX has started. Returns False where the C library is not glibc
  (musl, macOS: no ``mallopt``, nothing changed; a ``mallopt`` refusing glibc's
  parameters: logged)."""
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
  except (OSError, AttributeError, TypeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)):
    if mallopt(param, value) != 1:      # a C library whose mallopt is not glibc's
      logging.warning("mallopt(%d, %d) refused: glibc's allocator settings not applied "
                      "(host_memory.keep_freed_memory)", param, value)
      return False
  return True
