"""Data parallelism: the train step on 8 CPU devices equals one device's (a subprocess
with ``--xla_force_host_platform_device_count=8``); the waveform terms' guard."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from neurocodec_jax import training as loop
from neurocodec_jax.run import build_run
from tests.conftest import record_error
from tests.test_train import train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def one_step_params(root: str, devices, steps: int = 2, waveform: bool = False):
  """Generator params after ``steps`` steps on a mesh of ``devices``, the steps'
  metrics, and then validation's per-example metrics on the next batch.

  Latent and envelope objectives; with ``waveform`` also the mel, adversarial and
  feature terms (and the discriminator's step), decoded by the JAX codec
  (``codec.backend=jax``: the torch callback is refused on several CPU devices,
  ``loop.check_multi_device``). Validation decodes in a single-device program with the
  torch codec, sharded over the mesh with the JAX one.
  """
  import dataclasses
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from neurocodec_jax.data import train_dataset
  from neurocodec_jax.metrics import make_metrics
  from neurocodec_jax.run import shard_batch
  from neurocodec_jax.train import steps as steps_lib
  losses = ({"codec.backend": "jax"} if waveform else
            dict(lambda_mel=0.0, lambda_adv=0.0, lambda_feat=0.0))
  config = train_config(root, batch_size=8, **losses)
  run = build_run(config, {"train": steps_lib.batch_fields(config)})
  mesh = Mesh(np.asarray(devices), ("data",))
  rep, bat = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
  frozen = jax.device_put(run.frozen, rep)
  # The initial state in one program (op by op, the discriminator's init compiled
  # hundreds of programs: 42 s of the waveform check); both meshes start from it.
  init = jax.jit(lambda example, frozen: steps_lib.init_state(config, run.models, example,
                                                              frozen, config.seed))
  state = jax.device_put(init(run.example, run.frozen), rep)
  step = jax.jit(steps_lib.make_train_step(config, run.models, total_steps=steps),
                 in_shardings=(rep, bat, rep), out_shardings=(rep, rep))
  data = iter(train_dataset(run.sources["train"], 8, seed=0))
  metrics = []
  for _ in range(steps):
    state, m = step(state, shard_batch(next(data), bat), frozen)
    metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
  on_mesh = dataclasses.replace(run, mesh=mesh, frozen=frozen, programs={})
  val = make_metrics(on_mesh, "quantized")(state, next(data))
  return (jax.device_get({"g": state["g"]["params"], "d": state["d"].get("params", {})}),
          metrics, {k: val[k] for k in ("latent_loss", "si_sdr")})


# Parameters whose exact gradient is zero: attention key biases (softmax is
# invariant to a shift shared by all keys) and the envelope head's bias (Pearson
# correlation is invariant to an offset). Their computed gradients are rounding
# noise (~1e-9) that Adam normalizes into lr-sized steps of arbitrary sign, so
# they cannot agree across device counts and are left out of the comparison.
GRADIENT_FREE = ("['mha']['key']['bias']", "['envelope_head']['Conv_0']['bias']")


def compare_devices(root: str, steps: int = 2, waveform: bool = False) -> dict:
  """Runs 1- and 8-device steps in this process; returns the largest differences.

  Parameters are compared in units of the largest update the optimizer can make in
  ``steps`` steps (Adam moves an entry by at most ~lr per step), not relative to the
  parameter: zero-initialised biases are nothing but two updates after two steps,
  and Adam's normalisation turns the reduction-order rounding of a gradient entry
  near its epsilon (1e-8) into a visible share of that entry's update. A
  data-parallel bug (a gradient not averaged over devices) moves entries by O(lr).
  """
  one, m1, v1 = one_step_params(root, jax.devices()[:1], steps, waveform)
  eight, m8, v8 = one_step_params(root, jax.devices(), steps, waveform)
  max_update = steps * m1[0]["lr"]
  param_err, entries = {}, []
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one)[0], jax.tree.leaves(eight)):
    name = jax.tree_util.keystr(path)
    d = np.abs(np.asarray(a) - np.asarray(b)).ravel() / max_update
    param_err[name] = float(np.max(d))
    if not any(g in name for g in GRADIENT_FREE):
      entries.append(d)
  kept = {k: v for k, v in param_err.items() if not any(g in k for g in GRADIENT_FREE)}
  entries = np.concatenate(entries)
  # Relative differences, except the envelope loss: a Pearson correlation (scale 1)
  # that starts near 0 (0.0017 here), where a relative error only measures rounding
  # of the sum (4e-8 absolute); it is compared in absolute terms.
  scale = lambda k, v: 1.0 if k == "loss_envelope" else abs(v) + 1e-12
  metric_err = max(abs(x[k] - y[k]) / scale(k, x[k])
                   for x, y in zip(m1, m8) for k in x if k != "finite")
  # Validation: the latent loss relative, the SI-SDR in dB.
  val_err = dict(latent_loss=float(np.max(np.abs(v1["latent_loss"] / v8["latent_loss"] - 1))),
                 si_sdr_db=float(np.max(np.abs(v1["si_sdr"] - v8["si_sdr"]))))
  return dict(params=max(kept.values()),
              params_over_1e3=float(np.mean(entries > 1e-3)),
              params_q999=float(np.quantile(entries, 0.999)), params_n=int(entries.size),
              metrics=metric_err, val=val_err,
              excluded=sorted(set(param_err) - set(kept)))


def _compare_on_eight_devices(root: str, kind: str) -> dict:
  """One comparison (``kind``: "latent" or "waveform") in a subprocess with 8 devices."""
  script = (
      "import json, jax\n"
      "from tests.test_data_parallel import compare_devices\n"
      "assert len(jax.devices()) == 8, jax.devices()\n"
      f"print(json.dumps(compare_devices({root!r}, waveform={kind == 'waveform'})))\n")
  # Keeps the worker's flags (one thread per xdist worker: XLA's pool at the machine's
  # width oversubscribes the cores the other worker uses).
  flags = " ".join(filter(None, ("--xla_force_host_platform_device_count=8",
                                 os.environ.get("XLA_FLAGS"))))
  env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# Measured (demo codec sizes): losses/gradient norms relative and
# parameters in units of the update bound (2 x lr): latent and envelope terms
# 1.2e-7 / 6.2e-4; with the mel, adversarial and feature terms and the
# discriminator step on the JAX codec (the torch callback is refused on several CPU
# devices) 5.7e-6 / 4.0e-3, the latter in the Mamba x_proj kernel (7.1e-6 / 1.6e-3
# since the decoder's weights are an argument, not constants XLA folds; 8.0e-7 / 1.2e-2
# in make test on 2026-12-05 and 1.0e-6 / 1.9e-2 a day later, not attributed to a
# change: see the shares below). The largest
# parameter differences are entries whose gradient is near Adam's epsilon; a
# gradient not averaged over the devices would change Adam's normalised update of
# most entries by O(lr), i.e. O(1) here (reasoned from Adam's update, not measured
# with such a bug). Validation on the next batch (the decode on one device
# with the torch codec, sharded with the JAX one): latent loss
# 3.6e-7 / 4.8e-7 relative, SI-SDR 3.8e-6 / 7.6e-6 dB (the parameters differ as above).
@pytest.fixture(scope="module")
def eight_device_errors(tiny_dataset):
  """``kind -> errors``, each comparison run once, when a test first asks for it (the
  waveform one is in the slow tier: it compiles the JAX codec and the discriminator on
  both meshes, the larger share of the two)."""
  root, _ = tiny_dataset
  cache = {}
  def errors(kind):
    if kind not in cache:
      cache[kind] = _compare_on_eight_devices(root, kind)
    return cache[kind]
  return errors


# The largest entry is one entry near Adam's epsilon (the waveform run's worst: 1 of
# 275,682 entries over 1e-3 of the update bound on 2026-12-05, its 99.9th percentile
# 1.5e-5), a heavy-tailed statistic that drifted 1.6e-3 -> 1.2e-2 -> 1.9e-2 over
# sessions. What tells a data-parallel bug from rounding is how many entries move: a
# gradient not averaged over the devices moves most of them by O(1). So both runs hold
# the share of entries over 1e-3 (measured 0 and 3.6e-6) and the 99.9th percentile
# (1.5e-5 in both) to 1e-4, and the largest entry to 5x its measured value.
@pytest.mark.parametrize("waveform, params_bound",
                         [(False, 3e-3), pytest.param(True, 1e-1, marks=pytest.mark.slow)],
                         ids=["latent", "waveform_jax_codec"])
def test_eight_devices_equal_one_device(eight_device_errors, waveform, params_bound):
  err = eight_device_errors("waveform" if waveform else "latent")
  name = "train step, 8 vs 1 device" + (", waveform" if waveform else "")
  print(f"{name}, 2 steps: max relative difference of losses/grad norms "
        f"{err['metrics']:.2e}, of parameters {err['params']:.2e} of 2 x lr "
        f"(99.9th percentile {err['params_q999']:.2e}, share over 1e-3 "
        f"{err['params_over_1e3']:.2e} of {err['params_n']} entries) "
        f"(excluding gradient-free {err['excluded']}); validation: {err['val']}")
  assert len(err["excluded"]) == 2          # one key bias (1 layer), one envelope bias
  record_error(name, "parameters / (steps x lr)", err["params"])
  record_error(name, "losses, grad norms (relative)", err["metrics"])
  record_error(name, "validation latent loss (relative)", err["val"]["latent_loss"])
  record_error(name, "validation SI-SDR (dB)", err["val"]["si_sdr_db"])
  assert err["metrics"] < 1e-5
  record_error(name, "parameters, share of entries over 1e-3", err["params_over_1e3"])
  assert err["params"] < params_bound
  assert err["params_over_1e3"] < 1e-4 and err["params_q999"] < 1e-4, err
  assert err["val"]["latent_loss"] < 5e-6 and err["val"]["si_sdr_db"] < 1e-4, err["val"]


def test_waveform_losses_refused_on_several_cpu_devices():
  from jax.sharding import Mesh
  config = train_config("/nonexistent")
  mesh = Mesh(np.asarray(jax.devices() * 2)[:2], ("data",))
  with pytest.raises(ValueError, match="deadlock XLA's collectives across 2 CPU devices"):
    loop.check_multi_device(config, mesh)
  config.codec.backend = "jax"                  # no callback: allowed
  loop.check_multi_device(config, mesh)
  config.codec.backend = "torch"
  config.lambda_mel = config.lambda_adv = config.lambda_feat = 0.0
  loop.check_multi_device(config, mesh)
