"""Shared pytest setup: CPU, quiet, and a tiny synthetic dataset with its config."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # pylint: disable=g-import-not-at-top


def tiny_config(root: str, **overrides):
  """The demo preset shrunk to the ``tiny`` synthetic dataset (1 s, 8 channels)."""
  from configs import neurocodec  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.root = root
  config.codec.random = True         # the demo codec's sizes, random weights: fast, seeded
  config.eeg_channels = 8
  config.data.segment_seconds = 1.0
  config.synthetic.n_train, config.synthetic.n_val, config.synthetic.n_test = 16, 8, 8
  config.synthetic.subjects = 2
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for p in parents:
      target = target[p]
    target[leaf] = value
  return config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
  """``(root, config)`` of a tiny synthetic dataset, generated once per session."""
  from neurocodec_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  root = str(tmp_path_factory.mktemp("data") / "tiny")
  config = tiny_config(root)
  synthetic.generate(root, synthetic.spec_from_config(config), progress=False)
  return root, config
