import ctypes, sys
libc = ctypes.CDLL("libc.so.6")
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
def tune():
  print([libc.mallopt(M_MMAP_MAX, 0), libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1), libc.mallopt(M_ARENA_MAX, 1)])
if sys.argv[1] == "before": tune()
import resource, time, jax, jax.numpy as jnp
f = jax.jit(lambda x: jnp.sum(jnp.sin(x) @ jnp.cos(x).T))
x = jnp.ones((4096, 4096))
f(x).block_until_ready()
if sys.argv[1] == "after": tune()
for i in range(4):
  b = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  t=time.perf_counter(); f(x).block_until_ready(); dt=time.perf_counter()-t
  print(i, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - b) * 4096 / 2**20, "MB", f"{dt*1e3:.0f} ms")
