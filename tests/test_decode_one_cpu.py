"""Regression: the torch decoder callback must not deadlock a JAX process limited to one CPU.

XLA's CPU client sizes the thread pool that runs jitted programs from the CPU affinity
mask (one thread under ``taskset -c 0``). ``jax.pure_callback`` hands the callback its
operands as jax Arrays made by ``device_put``, and the CPU client copies a host buffer
of 100 KiB or more into such an array *asynchronously, on that same pool*. A callback
that reads a large operand (``np.asarray``) then waits for a copy queued behind
itself: a silent hang at 0% CPU (seen at the end of a pinned ``scripts/eeg_ladder.py``
run, in validation's ``decoded_si_sdr``). The run happens in a child process pinned to
one CPU, with a timeout, so a regression fails here instead of hanging the suite.
"""

import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = textwrap.dedent("""
    import os
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # = taskset -c <cpu>, before jax
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax, jax.numpy as jnp, numpy as np
    import codec_bridge
    from neurocodec_jax.codec_arch import DEMO_CODEC
    decode = codec_bridge.make_decoder(codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu"))
    # Validation's shapes: z 8 x 64 x 100 (200 KiB), waveform and cotangent 8 x 1 x 32000 (1 MiB).
    z = np.random.default_rng(0).standard_normal((8, 64, 100)).astype(np.float32)
    loss = lambda z: jnp.mean(decode(z) ** 2)
    forward, grad = jax.jit(loss), jax.jit(jax.grad(loss))
    values = [float(forward(z)) for _ in range(12)]
    grads = [np.asarray(grad(z)) for _ in range(3)]
    assert len(set(values)) == 1 and np.isfinite(values[0]), values
    assert all(np.array_equal(g, grads[0]) for g in grads) and np.any(grads[0]), "grad"
    print("DECODE_OK", len(os.sched_getaffinity(0)), flush=True)
""")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_decode_under_jit_on_one_cpu_does_not_hang():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)           # one CPU device, as in a pinned training run
  try:
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
  except subprocess.TimeoutExpired as e:
    pytest.fail("decode under jax.jit hung in a process pinned to one CPU (the host "
                "callback waits on a jax Array copy queued on XLA's one-thread pool).\n"
                f"stderr tail:\n{(e.stderr or b'')[-2000:]!r}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "DECODE_OK 1" in proc.stdout, (proc.stdout, proc.stderr[-3000:])
