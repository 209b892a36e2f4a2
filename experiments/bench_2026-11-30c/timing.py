"""The timing helper of this folder's scripts: two warm-ups, then the median of
``reps`` runs, and the cores busy on average (process CPU time / wall time)."""
import time

import numpy as np


def run_times(f, reps: int = 7) -> tuple[float, float]:
  """``(median ms, cores busy)`` of ``f()``, which must block until done."""
  f(); f()
  ts, cpu = [], []
  for _ in range(reps):
    c0, t0 = time.process_time(), time.perf_counter()
    f()
    ts.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return float(np.median(ts) * 1e3), float(np.sum(cpu) / np.sum(ts))


def med(f, reps: int = 7) -> str:
  """``"<median> ms (<cores> cores)"``."""
  ms, cores = run_times(f, reps)
  return f"{ms:.1f} ms ({cores:.2f} cores)"


def med_ms(f, reps: int = 5) -> float:
  return run_times(f, reps)[0]
