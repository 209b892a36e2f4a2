"""Shared pytest setup: CPU, quiet, and a tiny synthetic dataset with its config."""

import os

import atexit
import shutil
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# One thread per pytest-xdist worker (``make test``: two workers on two cores): with
# XLA's and torch's pools at the machine's width, two workers oversubscribe the cores
# and the suite spends its time in contended thread pools.
if os.environ.get("PYTEST_XDIST_WORKER"):
  os.environ.setdefault("OMP_NUM_THREADS", "1")
  os.environ["XLA_FLAGS"] = " ".join(filter(None, (
      os.environ.get("XLA_FLAGS"), "--xla_cpu_multi_thread_eigen=false")))

# One persistent compilation cache for the session, shared by the workers and the
# subprocesses they start (set here, before JAX is imported, so every process reads
# it): many tests compile the same tiny programs. A fresh directory per session, so a
# timing of the suite is a cold one, as on CI.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _cache = tempfile.mkdtemp(prefix="neurocodec-jax-tests-")
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

import codec_bridge  # pylint: disable=g-import-not-at-top,unused-import  (the runs' codec loader)

if os.environ.get("PYTEST_XDIST_WORKER"):
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)


# Test tiers (``pytest -m unit``: the fast tier, ``make test-fast``): unit tests check
# one module on small inputs; parity tests build the PyTorch reference from the
# installed package and compare outputs and gradients; integration tests train,
# prepare datasets, precompute codes or run subprocesses. Within each tier, modules
# are listed longest first (measured) and run in this order. ``make test`` hands
# whole modules to its two workers (``--dist loadfile``: a module's fixtures, such as
# a trained run, are built once), longest first, so the short ones fill the end.
TIERS = {
    "integration": ("test_train", "test_data_parallel", "test_prepare", "test_precompute",
                    "test_reliability_train", "test_streaming", "test_prepare_cocktail_dtu", "test_eeg_guard",
                    "test_train_codec", "test_reliability_data", "test_attention_maps",
                    "test_install"),
    "parity": ("test_losses", "test_scan", "test_mamba", "test_conv", "test_codec_jax",
               "test_decode_one_cpu", "test_codec_bridge"),
    "unit": ("test_generator", "test_train_units", "test_synthetic", "test_data",
             "test_config", "test_linear_decoder", "test_cue", "test_encoding", "test_eeg_oracle",
             "test_speech", "test_host_memory", "test_mixture_mask", "test_refiner",
             "test_layout"),
}


def pytest_collection_modifyitems(config, items):
  del config
  tier_of = {name: tier for tier, names in TIERS.items() for name in names}
  for item in items:
    if any(item.get_closest_marker(tier) for tier in TIERS):
      continue                      # a test marked with its own tier keeps it
    module = item.module.__name__.rsplit(".", 1)[-1]
    if module not in tier_of:
      raise pytest.UsageError(f"{module}: add it to a tier in tests/conftest.py TIERS.")
    item.add_marker(getattr(pytest.mark, tier_of[module]))
  order = [name for names in TIERS.values() for name in names]
  items.sort(key=lambda item: order.index(item.module.__name__.rsplit(".", 1)[-1]))


def original_architecture(config):
  """The demo preset's sizes with the original model and every loss on.

  The demo preset holds the EEG recipe (selector, separation terms, latent terms
  only); tests of the original architecture start from this, the recipe is tested
  on its own (test_eeg_guard, test_train's recipe test, test_generator's selector
  tests).
  """
  config.model.selector, config.model.select_window, config.model.eeg_kernel = "none", "causal", 8
  config.model.output_norm = "unit"
  config.model.mix_input, config.model.select_decision = "quantized", "soft"
  config.model.mixture_consistency = False
  config.model.output_waveform = "decoded"       # the masked mixture needs the selector
  config.lambda_env = config.lambda_sep = config.lambda_sep_env = 0.0
  config.lambda_mel, config.lambda_adv, config.lambda_feat = 15.0, 1.0, 2.0
  return config


def tiny_config(root: str, **overrides):
  """The demo preset shrunk to the ``tiny`` synthetic dataset (1 s, 8 channels)."""
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.root = root
  config.codec.random = True         # the demo codec's sizes, random weights: fast, seeded
  original_architecture(config)
  config.train.max_steps, config.train.waveform_start, config.train.eval_every = -1, 0, -1
  config.train.checkpoint_every = 100
  config.eeg_channels = 8
  config.data.segment_seconds = 1.0
  config.synthetic.n_train, config.synthetic.n_val, config.synthetic.n_test = 16, 8, 8
  config.synthetic.subjects = 2
  return set_fields(config, **overrides)


def set_fields(config, **overrides):
  """``config`` with dotted keys set: ``set_fields(c, **{"model.dropout": 0.1})``."""
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


@pytest.fixture(scope="module", autouse=True)
def _free_compiled_programs():
  """Frees each test module's compiled XLA programs when the module ends.

  XLA's CPU JIT maps every executable's code into its own memory mappings; a
  process that keeps every program of ~500 tests alive passes the kernel's
  ``vm.max_map_count`` (65530 by default) and LLVM aborts the process inside
  ``backend_compile_and_load`` ("Fatal Python error: Aborted"). Reproduced with
  ``sysctl vm.max_map_count=11000`` and tests/test_train.py alone (its peak is
  ~14k mappings). With this fixture the count falls to ~2k at each module's end and
  peaks at ~31k in tests/test_scan.py (167 programs). Module-scoped fixtures keep
  their programs within a module.
  """
  yield
  import gc  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  jax.clear_caches()
  gc.collect()


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
  """``(root, config)`` of a tiny synthetic dataset, generated once per session."""
  from neurocodec_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("data") / "tiny")
  config = tiny_config(root)
  synthetic.generate(root, synthetic.spec_from_config(config), progress=False)
  return root, config


# The largest errors the parity tests measured in this run, per component and
# quantity: reported in the terminal summary (not a test), next to the tolerances
# the tests hold them to.
MEASURED = {}


def normwise_error(ours, ref, floor: float = 0.0) -> float:
  """``max|ours - ref| / max(max|ref|, floor)``: the error relative to the array's
  scale (an entry-wise rtol fails on entries near zero, one atol ignores the scale)."""
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), floor))


def record_error(component: str, quantity: str, value, where: str = ""):
  """Keeps the largest ``value`` of ``quantity`` seen for ``component``, and where."""
  worst = MEASURED.setdefault(component, {})
  if quantity not in worst or float(value) > worst[quantity][0]:
    worst[quantity] = (float(value), where)


# Under pytest-xdist (``make test`` runs two workers) each worker measures its own
# tests: it leaves its table in this folder, which the controller creates and merges.
_MEASURED_DIR = "NEUROCODEC_TEST_MEASURED_DIR"


def pytest_configure(config):
  workers = getattr(config.option, "numprocesses", None)
  if workers and "PYTEST_XDIST_WORKER" not in os.environ and _MEASURED_DIR not in os.environ:
    import tempfile  # pylint: disable=g-import-not-at-top
    os.environ[_MEASURED_DIR] = tempfile.mkdtemp(prefix="measured-")


def pytest_sessionfinish(session):
  del session
  worker = os.environ.get("PYTEST_XDIST_WORKER")
  if worker and os.path.isdir(os.environ.get(_MEASURED_DIR, "")):
    import json  # pylint: disable=g-import-not-at-top
    with open(os.path.join(os.environ[_MEASURED_DIR], f"{worker}.json"), "w") as f:
      json.dump(MEASURED, f)


def _merge_workers():
  import json  # pylint: disable=g-import-not-at-top
  folder = os.environ.get(_MEASURED_DIR, "")
  for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    for component, worst in json.load(open(os.path.join(folder, name))).items():
      for quantity, (value, where) in worst.items():
        record_error(component, quantity, value, where)


def pytest_terminal_summary(terminalreporter):
  if "PYTEST_XDIST_WORKER" not in os.environ:
    _merge_workers()
  if not MEASURED:
    return
  terminalreporter.section("measured parity errors (max over the tests that ran)")
  for component, worst in sorted(MEASURED.items()):
    terminalreporter.write_line(f"{component}:")
    for quantity, (value, where) in sorted(worst.items()):
      terminalreporter.write_line(f"  {quantity:<24} {value:.1e}" + (f"  ({where})" if where else ""))
