"""``host_memory.keep_freed_memory``: a large block freed and allocated again is not
page-faulted in again (glibc's default unmaps it on free and faults it in anew).

Each case runs in a child process (the setting is process-wide and permanent), which
mallocs, touches and frees a 64 MiB block five times and reports the minor page
faults of the last four rounds.
"""

import os
import platform
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 64 << 20
PAGES = BLOCK // os.sysconf("SC_PAGE_SIZE")

CHILD = textwrap.dedent("""
    import ctypes, resource, sys
    from neurocodec_jax import host_memory
    libc = ctypes.CDLL("libc.so.6")
    # No transparent huge pages for this process (a 2 MB page would fault in 512 pages
    # at once, wherever THP is "always"): the counts below are of 4 KiB pages.
    assert libc.prctl(41, 1, 0, 0, 0) == 0          # PR_SET_THP_DISABLE
    if sys.argv[1] == "keep":
        assert host_memory.keep_freed_memory()
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    faults = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p = libc.malloc({block})
        ctypes.memset(p, 1, {block})
        libc.free(p)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(faults[1:]))
""")


def _faults(mode: str) -> int:
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}   # glibc's defaults
  out = subprocess.run([sys.executable, "-c", CHILD.format(block=BLOCK), mode], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=120, check=True)
  return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc")
def test_keep_freed_memory_reuses_pages():
  default, kept = _faults("default"), _faults("keep")
  # glibc's default: each round faults the whole block in again (four rounds).
  assert default >= 0.9 * 4 * PAGES, (default, PAGES)
  # Kept: the heap's pages are reused; a few faults for the child's own small blocks.
  assert kept <= 0.02 * 4 * PAGES, (kept, PAGES)
