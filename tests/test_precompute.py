"""Precomputed codes: round trip, resume, invalidation, bad inputs."""

import os
import shutil

import h5py
import numpy as np
import pytest
import torch

import codec_bridge
from codec_bridge import precompute
from neurocodec_jax.data import DataError
from tests.conftest import tiny_config


@pytest.fixture()
def dataset(tiny_dataset, tmp_path):
  root, _ = tiny_dataset
  copy = str(tmp_path / "data")
  shutil.copytree(root, copy, ignore=shutil.ignore_patterns("dac_codes_*"))
  config = tiny_config(copy)
  config.codec.precompute_batch_size = 3
  return config, codec_bridge.load_dac_from_config(config.codec)


def test_round_trip_matches_dac_encode(dataset):
  config, dac_model = dataset
  path = precompute.ensure_codes(config, "val", dac_model, progress=False)
  with h5py.File(path) as f, h5py.File(f"{config.root}/val/noisy_val.h5") as a:
    codes = f["noisy_codes"][:]
    assert codes.dtype == np.int16 and codes.shape == (8, config.codec.arch.n_codebooks, 50)
    x = torch.from_numpy(a["noisy_val="][:][:, None, :, 0])
  with torch.no_grad():
    _, ref, *_ = dac_model.encode(dac_model.preprocess(x, 16000))
  np.testing.assert_array_equal(codes, ref.numpy())
  assert precompute.ensure_codes(config, "val", dac_model) == path    # valid: reused


def test_resume_after_interruption(dataset):
  config, dac_model = dataset
  with pytest.raises(KeyboardInterrupt):
    precompute.precompute_split(config, "train", dac_model, progress=False, stop_after_batches=2)
  partial = precompute.cache_path(config, "train") + ".partial"
  with h5py.File(partial) as f:
    assert f.attrs["done"] == 6
  path = precompute.precompute_split(config, "train", dac_model, progress=False)
  assert not os.path.exists(partial)
  fresh = str(precompute.cache_path(config, "train")) + ".check"
  os.rename(path, fresh)
  full = precompute.precompute_split(config, "train", dac_model, progress=False)
  with h5py.File(fresh) as a, h5py.File(full) as b:
    for k in ("noisy_codes", "clean_codes", "unattended_codes"):
      np.testing.assert_array_equal(a[k][:], b[k][:])      # no missing or duplicated rows


def test_invalidated_on_changed_source(dataset, capsys):
  config, dac_model = dataset
  path = precompute.ensure_codes(config, "test", dac_model, progress=False)
  with h5py.File(f"{config.root}/test/clean_test.h5", "a") as f:
    f["clean_test="][0, :100, 0] = 0.0
  identity, sources, _ = precompute._expected(config, "test", dac_model)
  with pytest.raises(precompute.CacheMismatch, match=r"source audio changed.*clean"):
    precompute.check_codes(path, identity, sources)
  precompute.ensure_codes(config, "test", dac_model, progress=False)
  assert "Recomputing" in capsys.readouterr().err
  precompute.check_codes(path, *precompute._expected(config, "test", dac_model)[:2])


def test_invalidated_on_changed_codec(dataset):
  config, dac_model = dataset
  path = precompute.ensure_codes(config, "test", dac_model, progress=False)
  other_sizes = dict(config.codec.arch, codebook_size=128)
  other = codec_bridge.load_dac(random_sizes=other_sizes, device="cpu")
  identity, sources, _ = precompute._expected(config, "test", other)
  with pytest.raises(precompute.CacheMismatch, match="another codec"):
    precompute.check_codes(path, identity, sources)


def test_bad_inputs(dataset):
  config, dac_model = dataset
  with pytest.raises(DataError, match="Split 'nope' not found"):
    precompute.ensure_codes(config, "nope", dac_model)
  config.codec.arch = dict(config.codec.arch, sample_rate=44100)
  with pytest.raises(DataError, match="does not match 1.0 s at 44100 Hz"):
    precompute.ensure_codes(config, "val", dac_model)


def test_continuous_mix_input_stores_the_encoder_output(dataset, capsys):
  """model.mix_input=continuous: a cache without ``noisy_latent`` is recomputed; the
  stored latent is DAC's encoder output, and the codes are unchanged."""
  config, dac_model = dataset
  path = precompute.ensure_codes(config, "val", dac_model, progress=False)
  with h5py.File(path) as f:
    codes = f["noisy_codes"][:]
    assert "noisy_latent" not in f
  config.model.mix_input = "continuous"
  assert precompute.ensure_codes(config, "val", dac_model, progress=False) == path
  assert "lacks ['noisy_latent']" in capsys.readouterr().err
  with h5py.File(path) as f, h5py.File(f"{config.root}/val/noisy_val.h5") as a:
    np.testing.assert_array_equal(f["noisy_codes"][:], codes)
    latent = f["noisy_latent"][:]
    x = torch.from_numpy(a["noisy_val="][:][:, None, :, 0])
  with torch.no_grad():
    ref = dac_model.encoder(dac_model.preprocess(x, 16000)).numpy()
  np.testing.assert_array_equal(latent, ref)
  # The quantized input needs a subset: the same cache stays valid for it.
  config.model.mix_input = "quantized"
  assert precompute.ensure_codes(config, "val", dac_model, progress=False) == path
  assert "Recomputing" not in capsys.readouterr().err


def test_continuous_targets_store_each_talkers_encoder_output(dataset):
  """model.target_latent=continuous: ``clean_latent`` and ``unattended_latent`` are
  DAC's encoder output of each talker's audio (the training targets)."""
  config, dac_model = dataset
  config.model.target_latent = "continuous"
  path = precompute.ensure_codes(config, "val", dac_model, progress=False)
  with h5py.File(path) as f:
    assert "noisy_latent" not in f             # the mixture input stays quantized
    for kind in ("clean", "unattended"):
      with h5py.File(f"{config.root}/val/{kind}_val.h5") as a:
        x = torch.from_numpy(a[f"{kind}_val="][:][:, None, :, 0])
      with torch.no_grad():
        ref = dac_model.encoder(dac_model.preprocess(x, 16000)).numpy()
      np.testing.assert_array_equal(f[f"{kind}_latent"][:], ref)


def test_partial_written_for_other_datasets_is_not_resumed(dataset):
  """A continuous run interrupted, then a quantized one: resuming would leave the rest
  of noisy_latent at zero, so the partial is discarded and the cache recomputed."""
  config, dac_model = dataset
  config.model.mix_input = "continuous"
  with pytest.raises(KeyboardInterrupt):
    precompute.precompute_split(config, "train", dac_model, progress=False, stop_after_batches=1)
  config.model.mix_input = "quantized"
  path = precompute.precompute_split(config, "train", dac_model, progress=False)
  with h5py.File(path) as f:
    assert "noisy_latent" not in f                   # started over: nothing half-written
