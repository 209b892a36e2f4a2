"""Timing and reporting shared by the benchmarks.

Every measurement: warm-up runs first (compilation, caches), then the median of
``repeats`` timed runs, same inputs and thread count for ours and the reference.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import statistics
import time
from typing import Callable

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def median_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
  """Median wall time of ``fn()``; ``fn`` must block until its result is ready."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def block(x):
  """Blocks on JAX arrays (pytrees) so timings include the computation."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.block_until_ready(x)


def add_malloc_flag(parser) -> None:
  """``--malloc``: the process's allocator, shared by every side a benchmark times."""
  parser.add_argument("--malloc", choices=("keep", "glibc"), default="keep",
                      help="'keep': glibc's malloc as train.py sets it on a CPU "
                           "(neurocodec_jax/host_memory.py); 'glibc': as shipped")


def set_malloc(choice: str) -> None:
  """Applies ``--malloc`` (before the timed runs; later allocations follow it)."""
  if choice == "keep":
    from neurocodec_jax import host_memory  # pylint: disable=g-import-not-at-top
    host_memory.keep_freed_memory()


def peak_rss_mb() -> float:
  """Peak resident memory of this process so far (MB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  return dict(date=datetime.date.today().isoformat(), cpu=platform.processor() or
              platform.machine(), cores=os.cpu_count(), jax=jax.__version__,
              backend=jax.default_backend())


def report(name: str, columns: list[str], rows: list[dict], notes: str = "") -> str:
  """Prints the table, writes ``bench/results/<name>.json``; returns the table text."""
  widths = [max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns]
  lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)),
           "  ".join("-" * w for w in widths)]
  lines += ["  ".join(_fmt(r.get(c)).rjust(w) for c, w in zip(columns, widths)) for r in rows]
  text = "\n".join(lines)
  print(f"\n## {name}\n{text}" + (f"\n{notes}" if notes else ""))
  os.makedirs(RESULTS, exist_ok=True)
  path = os.path.join(RESULTS, f"{name}.json")
  with open(path + ".tmp", "w") as f:          # never a half-written table
    json.dump(dict(name=name, machine=machine(), rows=rows, notes=notes), f, indent=2)
  os.replace(path + ".tmp", path)
  return text


def _fmt(v) -> str:
  if v is None:
    return "-"
  if isinstance(v, float):
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"
  return str(v)
