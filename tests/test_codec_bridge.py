"""The codec bridge vs DAC itself (small random DAC): quantizer, decode, VJP, loading."""

import logging
import os
import pickle
import pickletools
import re
import shutil
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch

import codec_bridge
from codec_bridge import loading
from neurocodec_jax.codec_arch import DAC_ARCHS, DEMO_CODEC
from neurocodec_jax import codec
from tests.conftest import normwise_error, record_error


@pytest.fixture(scope="module")
def dac_model():
  return codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu")


@pytest.fixture(scope="module")
def qparams(dac_model):
  return codec_bridge.quantizer_params(dac_model)


def test_codes_to_z_equals_dac_from_codes(dac_model, qparams):
  audio = torch.from_numpy(np.random.default_rng(0).uniform(-.5, .5, (2, 1, 9600)).astype(np.float32))
  with torch.no_grad():
    z, codes, *_ = dac_model.encode(dac_model.preprocess(audio, 16000))
    z_ref, _, _ = dac_model.quantizer.from_codes(codes)
  ours = codec.codes_to_z(qparams, jnp.asarray(codes.numpy()))
  for ref in (z_ref, z):                       # z is from_codes(codes)
    err = normwise_error(ours, ref.numpy())
    record_error("codec vs DAC", "codes_to_z", err)
    assert err < 5e-6, err                     # measured 3.7e-7 (3 seeds; 2.4e-6 abs), ~13x


@pytest.mark.parametrize("n_quantizers", [1, 2, 4])
def test_requantize_equals_dac_quantizer(dac_model, qparams, n_quantizers):
  audio = torch.from_numpy(np.random.default_rng(1).uniform(-.5, .5, (2, 1, 9600)).astype(np.float32))
  with torch.no_grad():
    z_enc = dac_model.encoder(dac_model.preprocess(audio, 16000))
    z_noisy = z_enc + 0.3 * torch.randn_like(z_enc)      # a "prediction" off the codebooks
    ref, ref_codes, *_ = dac_model.quantizer(z_noisy, n_quantizers=n_quantizers)
  ours, ours_codes = codec.requantize(qparams, jnp.asarray(z_noisy.numpy()), n_quantizers,
                                      return_codes=True)
  np.testing.assert_array_equal(ours_codes, ref_codes.numpy())
  err = normwise_error(ours, ref.numpy())
  record_error("codec vs DAC", "requantize", err, f"n={n_quantizers}")
  assert err < 3e-6, err                       # measured 1.7e-7 (3 seeds, n = 1/2/4), ~18x


def test_decode_equals_torch_decoder_and_vjp_equals_autograd(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  rng = np.random.default_rng(2)
  z = rng.standard_normal((3, 64, 17)).astype(np.float32)
  wave, vjp = jax.vjp(decode, jnp.asarray(z))
  assert wave.shape == (3, 1, 17 * 320)
  zt = torch.from_numpy(z).requires_grad_()
  ref = dac_model.decoder(zt)
  n = ref.shape[-1]                          # 17 * 320 - 8 (odd stride 5), tail zero-padded
  # The bridge runs DAC's own decoder: measured bitwise equal (3 seeds), so held to it.
  np.testing.assert_array_equal(wave[..., :n], ref.detach().numpy())
  np.testing.assert_array_equal(wave[..., n:], 0.0)
  g = rng.standard_normal(wave.shape).astype(np.float32)
  (gz,) = vjp(jnp.asarray(g))
  ref.backward(torch.from_numpy(g[..., :n]))
  np.testing.assert_array_equal(gz, zt.grad.numpy())       # torch's own backward, too
  assert len(decode.cache) == 0              # the backward consumed the kept graph


def test_decode_finite_differences(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  z = np.random.default_rng(3).standard_normal((1, 64, 6)).astype(np.float64)
  loss = lambda z: float(jnp.sum(decode(jnp.asarray(z, jnp.float32)) ** 2))
  grad = np.asarray(jax.grad(lambda z: jnp.sum(decode(z) ** 2))(jnp.asarray(z, jnp.float32)))
  eps = 1e-2
  for idx in [(0, 0, 0), (0, 10, 3), (0, 63, 5)]:
    zp, zm = z.copy(), z.copy()
    zp[idx] += eps
    zm[idx] -= eps
    fd = (loss(zp) - loss(zm)) / (2 * eps)
    np.testing.assert_allclose(grad[idx], fd, rtol=2e-2, atol=2e-3)


def test_decode_under_jit_and_grad_of_scalar_loss(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  z = jnp.asarray(np.random.default_rng(4).standard_normal((2, 64, 5)), jnp.float32)
  f = jax.jit(jax.value_and_grad(lambda z: jnp.mean(decode(z) ** 2)))
  value, grad = f(z)
  value2, grad2 = f(z)
  np.testing.assert_array_equal(grad, grad2)
  assert np.isfinite(value) and grad.shape == z.shape and np.abs(grad).max() > 0
  assert len(decode.cache) == 0


def test_forward_without_backward_does_not_leak(dac_model):
  decode = codec_bridge.make_decoder(dac_model, max_graphs=2)
  z = jnp.ones((1, 64, 3))
  for _ in range(5):
    jax.vjp(decode, z)                      # forward kept, backward never called
  assert len(decode.cache) == 2


def test_decode_shape_errors(dac_model):
  decode = codec_bridge.make_decoder(dac_model)
  with pytest.raises(ValueError, match=r"z of shape \[batch, 64, frames\]"):
    decode(jnp.ones((1, 32, 4)))
  with pytest.raises(ValueError, match="float32"):
    decode(jnp.ones((1, 64, 4), jnp.float16))


@pytest.mark.parametrize("name", ["demo", "44khz", "24khz", "16khz"])
def test_hop_length_is_the_real_encoders_samples_per_frame(name, dac_model):
  """``codec.hop_length`` (the one definition of the hop) against DAC's encoder: n hops
  of audio make n latent frames. The released architectures are built with their
  strides and tiny widths (random weights)."""
  if name == "demo":
    arch, model = DEMO_CODEC, dac_model
  else:
    arch = DAC_ARCHS[name]
    model = codec_bridge.load_dac(random_sizes=dict(
        TINY_DAC, sample_rate=arch["sample_rate"], encoder_rates=list(arch["encoder_rates"]),
        decoder_rates=list(arch["decoder_rates"])), device="cpu")
  hop, sr = codec.hop_length(arch), arch["sample_rate"]
  assert hop == codec.hop_length(ml_collections.ConfigDict(arch)) == codec.hop_length(model)
  assert hop == model.hop_length                       # DAC's own attribute
  rng = np.random.default_rng(4)
  for frames in (3, 4):
    audio = torch.from_numpy(rng.uniform(-.5, .5, (1, 1, frames * hop)).astype(np.float32))
    with torch.no_grad():
      assert model.encoder(model.preprocess(audio, sr)).shape[-1] == frames
  assert codec.frame_count(arch, 1.0) == sr // hop
  assert codec.frame_seconds(arch) == hop / sr and codec.frame_rate(arch) == sr / hop


def test_missing_weights_offline_gives_helpful_error(tmp_path, monkeypatch):
  monkeypatch.setattr(loading, "DAC_CACHE", str(tmp_path / "cache"))
  with pytest.raises(codec_bridge.WeightsNotFound, match=r"python -m dac download "
                     r"--model_type 44khz.*codec\.weights"):
    codec_bridge.load_dac("44khz")
  with pytest.raises(codec_bridge.WeightsNotFound, match="does not exist"):
    codec_bridge.load_dac("16khz", weights=str(tmp_path / "nope.pth"))


def test_loads_weights_file_and_cache(tmp_path, monkeypatch, dac_model):
  # A DAC-format file (state_dict + metadata kwargs), as the release files are.
  kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in DEMO_CODEC.items()}
  path = tmp_path / "cache" / "weights_16khz_8kbps_0.0.5.pth"
  path.parent.mkdir()
  torch.save({"state_dict": dac_model.state_dict(), "metadata": {"kwargs": kwargs}}, path)
  monkeypatch.setattr(loading, "DAC_CACHE", str(path.parent))
  loaded = codec_bridge.load_dac("16khz", device="cpu")       # found in the cache
  assert loaded.neurocodec_identity["random"] is False
  assert all(not p.requires_grad for p in loaded.parameters()) and not loaded.training
  assert (codec_bridge.codec_identity(loaded)["weights_sha256"]
          == codec_bridge.codec_identity(dac_model)["weights_sha256"])


def test_random_mode_is_logged_loudly_and_reproducible(caplog):
  with caplog.at_level(logging.WARNING):
    a = codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu")
  assert "RANDOM-WEIGHT DAC" in caplog.text
  b = codec_bridge.load_dac(random_sizes=DEMO_CODEC, device="cpu")
  assert codec_bridge.codec_identity(a) == codec_bridge.codec_identity(b)


def test_real_config_never_falls_back_to_random(tmp_path, monkeypatch):
  from neurocodec_jax.configs import neurocodec
  monkeypatch.setattr(loading, "DAC_CACHE", str(tmp_path))
  with pytest.raises(codec_bridge.WeightsNotFound):
    codec_bridge.load_dac_from_config(neurocodec.get_config("cocktail").codec)


# ---- Every form DAC's BaseModel saves (audiotools.ml.layers.base), loaded safely ----

TINY_DAC = dict(encoder_dim=4, encoder_rates=[2, 4, 5, 8], latent_dim=16, decoder_dim=16,
                decoder_rates=[8, 5, 4, 2], n_codebooks=2, codebook_size=16, codebook_dim=4,
                sample_rate=16000)


class _RunsShell:
  """Pickles as ``os.system(command)``: unpickling it with real imports runs the command."""

  def __init__(self, command):
    self.command = command

  def __reduce__(self):
    return os.system, (self.command,)


@pytest.fixture(scope="module")
def dac_save_forms(tmp_path_factory):
  """A tiny DAC (seeded) written in each form DAC offers; ``(model, {form: path})``."""
  import dac  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("dac_forms")
  with torch.random.fork_rng(devices=[]):
    torch.manual_seed(7)
    model = dac.DAC(**TINY_DAC).eval()
  model.save(str(root / "plain.pth"), package=False)
  model.save(str(root / "package.pth"))                   # the default: torch.package
  model.save_to_folder(str(root / "folder"))              # folder/dac/{package,weights}.pth
  (root / "folder_pkg" / "dac").mkdir(parents=True)       # save_to_folder, package.pth only
  shutil.copy(root / "folder" / "dac" / "package.pth", root / "folder_pkg" / "dac")
  return model, {"save(package=False)": root / "plain.pth",
                 "save() (torch.package)": root / "package.pth",
                 "save_to_folder": root / "folder",
                 "save_to_folder, package.pth only": root / "folder_pkg"}


def test_load_dac_reads_every_dac_save_form(dac_save_forms):
  model, paths = dac_save_forms
  reference = model.state_dict()
  audio = torch.from_numpy(np.random.default_rng(5).uniform(-.5, .5, (1, 1, 1600))
                           .astype(np.float32))
  with torch.no_grad():
    z_ref, codes_ref, *_ = model.encode(audio)
    wave_ref = model.decode(z_ref)
  identities = {}
  for form, path in paths.items():
    loaded = codec_bridge.load_dac(model_type="16khz", weights=str(path), device="cpu")
    state = loaded.state_dict()
    assert state.keys() == reference.keys(), form
    for key, value in reference.items():
      assert torch.equal(state[key], value), (form, key)
    with torch.no_grad():
      z, codes, *_ = loaded.encode(audio)
      wave = loaded.decode(z)
    assert torch.equal(codes, codes_ref) and torch.equal(z, z_ref), form
    assert torch.equal(wave, wave_ref), form
    identities[form] = codec_bridge.codec_identity(loaded)
  assert (paths["save_to_folder"] / "dac" / "package.pth").exists()
  assert identities["save_to_folder"]["arch"] == TINY_DAC
  first = identities["save(package=False)"]
  assert all(ident == first for ident in identities.values()), identities
  assert first["weights_sha256"] == loading.weights_hash(model)


def test_load_dac_folder_prefers_weights_pth(dac_save_forms):
  _, paths = dac_save_forms
  sd, _, path, form = loading.read_weights(str(paths["save_to_folder"]))
  assert path.endswith(os.path.join("dac", "weights.pth")) and form == "state_dict"
  _, _, path, form = loading.read_weights(str(paths["save_to_folder, package.pth only"]))
  assert path.endswith(os.path.join("dac", "package.pth")) and form == "package"


def _zip_package(path, records):
  """A zip laid out like a torch.package archive: ``<root>/<record>`` entries."""
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/.data/version", "6\n")
    for name, data in records.items():
      z.writestr(f"archive/{name}", data)


def _pickled_globals(path, suffix):
  """The globals (``module name``) the archive's record ending in ``suffix`` names."""
  with zipfile.ZipFile(path) as z:
    data = z.read(next(n for n in z.namelist() if n.endswith(suffix)))
  return {str(arg) for op, arg, _ in pickletools.genops(data) if op.name == "GLOBAL"}


def test_load_dac_package_never_runs_pickled_code(tmp_path, dac_save_forms):
  model, _ = dac_save_forms
  marker = tmp_path / "pwned"
  payload = pickle.dumps(_RunsShell(f"touch {marker}"), protocol=3)
  assert "system" in " ".join(str(arg) for _, arg, _ in pickletools.genops(payload))
  # 1. The model pickle itself is the payload (also via a builtins.exec/eval global).
  exec_payload = (b"cbuiltins\nexec\n(V__import__('os').system('touch " + str(marker).encode()
                  + b"')\ntR.")
  for i, records in enumerate([{"DAC/DAC.pth": payload}, {"DAC/DAC.pth": exec_payload}]):
    path = tmp_path / f"evil{i}.pth"
    _zip_package(path, records)
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: torch\.package archive"
                       r".*not a pickled DAC module readable without running code"):
      codec_bridge.load_dac(model_type="16khz", weights=str(path))
    assert not marker.exists()
  # 2. A genuine DAC package (torch.package.PackageExporter) carrying the payload as an
  #    attribute and in its metadata: the weights load, the payload stays inert data.
  model.evil = _RunsShell(f"touch {marker}")
  try:
    path = model.save(str(tmp_path / "evil_dac.pth"), metadata={"evil": _RunsShell(
        f"touch {marker}")})
  finally:
    del model.evil
    model.metadata.pop("evil")
  for record in ("DAC/DAC.pth", "DAC/DAC.metadata"):     # the payload is in the archive
    assert f"{os.system.__module__} system" in _pickled_globals(path, record)
  loaded = codec_bridge.load_dac(model_type="16khz", weights=path, device="cpu")
  assert not marker.exists()
  assert loading.weights_hash(loaded) == loading.weights_hash(model)


def test_load_dac_non_dac_file_names_the_path(tmp_path):
  marker = tmp_path / "pwned"
  text = tmp_path / "notes.pth"
  text.write_text("not weights")
  tensor = tmp_path / "tensor.pth"
  torch.save(torch.zeros(3), tensor)
  evil = tmp_path / "evil_torch_save.pth"
  torch.save({"state_dict": _RunsShell(f"touch {marker}")}, evil)
  other_zip = tmp_path / "other.zip"
  with zipfile.ZipFile(other_zip, "w") as z:
    z.writestr("readme.txt", "hello")
  cases = {text: "not a DAC weights file", tensor: r"expected DAC's format",
           evil: "not a DAC weights file", other_zip: "a zip archive but neither a torch.save"}
  for path, message in cases.items():
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}: {message}"):
      codec_bridge.load_dac(model_type="16khz", weights=str(path))
  assert not marker.exists()
  (tmp_path / "empty").mkdir()
  with pytest.raises(codec_bridge.WeightsNotFound, match=r"empty is a folder without DAC "
                     r"weights: expected DAC's save_to_folder layout"):
    codec_bridge.load_dac(model_type="16khz", weights=str(tmp_path / "empty"))
