"""The spectral mask refiner (neurocodec_jax.models.refiner) on cases with known answers."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from neurocodec_jax import mixture_mask
from neurocodec_jax.models import refiner


def _talkers(n=4, length=4000, seed=0):
  """Two harmonic 'talkers' per trial (random pitches), their sum, and noisy streams."""
  rng = np.random.default_rng(seed)
  t = np.arange(length) / 16000
  def voice(f0):
    return sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in range(1, 8))
  a = np.stack([voice(rng.uniform(100, 180)) for _ in range(n)])
  b = np.stack([voice(rng.uniform(200, 300)) for _ in range(n)])
  # Streams that know the talkers only roughly: each plus a share of the other and noise.
  sel = a + 0.6 * b + 0.3 * rng.standard_normal(a.shape)
  comp = b + 0.6 * a + 0.3 * rng.standard_normal(a.shape)
  f = lambda x: jnp.asarray(x, jnp.float32)
  return f(a + b), f(a), f(b), f(sel), f(comp)


def test_untrained_refiner_outputs_the_streams_mask():
  mix, _, _, sel, comp = _talkers()
  model = refiner.MaskRefiner(width=16, layers=2, kernel=3, floor=0.2, power=0.5)
  params = model.init(jax.random.PRNGKey(0), mix, sel, comp)
  got = model.apply(params, mix, sel, comp)
  want = mixture_mask.ratio_mask(mix, sel, comp, 0.5, 0.2)
  # Measured 1.2e-7 on recorded speech (the logit and sigmoid round trip in float32).
  np.testing.assert_allclose(got, want, atol=2e-6 * float(jnp.abs(want).max()))


def test_refiner_learns_to_separate_past_its_streams():
  """Trained on the talker its stream carries, the refined output beats the streams'
  mask on the training trials (a case the mixture's spectrum can solve: the talkers'
  harmonics fall in different bins)."""
  mix, a, _, sel, comp = _talkers(n=8)
  model = refiner.MaskRefiner(width=32, layers=2, kernel=3, floor=0.2, power=0.5)
  params = model.init(jax.random.PRNGKey(0), mix, sel, comp)
  opt = optax.adam(3e-3)
  state = opt.init(params)
  snr = lambda y: 10 * jnp.log10(jnp.sum(a ** 2) / jnp.sum((y - a) ** 2))
  loss = lambda p: -snr(model.apply(p, mix, sel, comp)) + refiner.compressed_spectral_distance(
      model.apply(p, mix, sel, comp), a)

  @jax.jit
  def step(p, s):
    g = jax.grad(loss)(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s

  before = float(snr(model.apply(params, mix, sel, comp)))
  for _ in range(60):
    params, state = step(params, state)
  after = float(snr(model.apply(params, mix, sel, comp)))
  assert after > before + 3, (before, after)


def test_compressed_spectral_distance_is_zero_at_the_target_and_scale_aware():
  _, a, b, _, _ = _talkers(n=2)
  assert float(refiner.compressed_spectral_distance(a, a)) == pytest.approx(0, abs=1e-6)
  assert float(refiner.compressed_spectral_distance(2 * a, a)) > 0.1
  assert float(refiner.compressed_spectral_distance(a + b, a)) > 0.1


def test_refiner_save_and_load_round_trip(tmp_path):
  mix, _, _, sel, comp = _talkers(n=1)
  model = refiner.MaskRefiner(width=8, layers=1, kernel=3, floor=0.1, power=1.0)
  params = model.init(jax.random.PRNGKey(1), mix, sel, comp)
  params = jax.tree_util.tree_map(lambda x: x + 0.01, params)   # not the init
  path = str(tmp_path / "refiner.msgpack")
  refiner.save(path, params, model)
  loaded, got = refiner.load(path)
  assert loaded == model
  np.testing.assert_array_equal(loaded.apply(got, mix, sel, comp), model.apply(params, mix, sel, comp))
  with pytest.raises(FileNotFoundError, match="refiner.save"):
    refiner.load(str(tmp_path / "missing.msgpack"))
  assert refiner.chosen_back_off(path) is None
  back_off = dict(unsure_margin=0.3, unsure_mix=0.5, n=256)
  refiner.save(path, params, model, back_off=back_off)
  assert refiner.chosen_back_off(path) == back_off and refiner.load_module(path) == model


def test_use_refiner_applies_the_back_off_chosen_for_it(tmp_path):
  from neurocodec_jax.cli import use_refiner  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  model = refiner.MaskRefiner(width=8, layers=1, kernel=3)
  path = str(tmp_path / "refiner.msgpack")
  refiner.save(path, refiner.init_params(model), model,
               back_off=dict(unsure_margin=0.25, unsure_mix=0.75))
  config = neurocodec.get_config("speech")
  use_refiner(config, path)
  assert (config.model.output_waveform, config.model.refiner) == ("refined_mask", path)
  assert (config.model.unsure_margin, config.model.unsure_mix) == (0.25, 0.75)
  with pytest.raises(FileNotFoundError, match="missing"):
    use_refiner(config, str(tmp_path / "missing.msgpack"))


def test_choose_back_off_picks_the_threshold_and_share_that_help():
  """Trials with a small margin are wrong choices (the mixture helps them), the rest
  right ones (the mixture hurts): the threshold separating them and the whole share
  win; where the mixture hurts everywhere, no back-off."""
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  margin = np.linspace(0.0, 1.0, 100)
  unsure = margin < 0.3
  mixes = (0.5, 1.0)
  # Columns: the refined output alone, then mixture shares 0.5 and 1.
  stoi = np.where(unsure[:, None], [[0.5, 0.6, 0.7]], [[0.8, 0.75, 0.7]])
  sdr = np.where(unsure[:, None], [[-5.0, -1.0, 0.0]], [[6.0, 3.0, 0.0]])
  got = refining.choose_back_off(margin, dict(stoi=stoi, si_sdr=sdr), mixes,
                                 quantiles=(0.1, 0.3, 0.5))
  assert got["unsure_margin"] == pytest.approx(np.quantile(margin, 0.3))
  assert got["unsure_mix"] == 1.0 and got["n"] == 100
  assert got["stoi"] == pytest.approx(np.where(unsure, 0.7, 0.8).mean())
  assert got["stoi_refined"] == pytest.approx(stoi[:, 0].mean())
  hurts = dict(stoi=np.tile([[0.8, 0.7, 0.6]], (100, 1)),
               si_sdr=np.tile([[6.0, 3.0, 0.0]], (100, 1)))
  assert refining.choose_back_off(margin, hurts, mixes)["unsure_margin"] == 0.0


def test_finished_refiner_state_is_reused_for_its_own_fingerprint_only(tmp_path):
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  mix, a, _, sel, comp = _talkers(n=4, length=2000)
  streams = dict(mixture=np.asarray(mix), selected=np.asarray(sel), competing=np.asarray(comp))
  model = refiner.MaskRefiner(width=8, layers=1, kernel=3)
  path = str(tmp_path / "r.state")
  mine = dict(checkpoint="runs/x/best/8", recipe=dict(steps=2))
  assert refining.finished_params(path, model, 2, mine) is None
  train = lambda until=None: refining.train(
      streams, np.asarray(a), model, steps_total=2, batch_size=2, lr=1e-2, lambda_spec=1.0,
      sample_rate=16000, state_path=path, checkpoint_every=1, until=until)
  train(until=1)
  with pytest.raises(ValueError, match="delete it"):       # no record of what it is
    refining.finished_params(path, model, 2, mine)
  with open(path + ".json", "w") as f:
    json.dump(mine, f)
  assert refining.finished_params(path, model, 2, mine) is None          # unfinished
  params = train()
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         refining.finished_params(path, model, 2, mine), params)
  assert refining.finished_params(path, model, 4, mine) is None          # more steps asked
  with pytest.raises(ValueError, match="runs/x/best/9"):
    refining.finished_params(path, model, 2, dict(mine, checkpoint="runs/x/best/9"))


def test_refine_run_decodes_the_training_streams_once(tmp_path, monkeypatch):
  """A second refine_run for the same checkpoint and recipe reuses the finished
  refiner: only the val streams are decoded again (the back-off is chosen anew)."""
  import types  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs import neurocodec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.refine import Recipe  # pylint: disable=g-import-not-at-top
  mix, a, b, sel, comp = _talkers(n=4, length=8000)
  streams = {k: np.asarray(v) for k, v in dict(mixture=mix, clean=a, unattended=b,
                                               selected=sel, competing=comp).items()}
  streams["margin"] = np.linspace(0.1, 1.0, 4)
  decoded = []
  def collect(run, state, split, n):
    decoded.append(split)
    return {k: v[:n] for k, v in streams.items()}
  monkeypatch.setattr(refining, "collect_streams", collect)
  run = types.SimpleNamespace(config=neurocodec.get_config("speech"))
  recipe = Recipe(n_trials=4, steps=2, batch_size=2, width=8, layers=1, kernel=3,
                  back_off_trials=4)
  out = str(tmp_path / "refiner.msgpack")
  first = refining.refine_run(run, {}, recipe, out, checkpoint="runs/x/best/8")
  _, params = refiner.load(out)
  second = refining.refine_run(run, {}, recipe, out, checkpoint="runs/x/best/8")
  assert decoded == ["train", "val", "val"] and first == second == refiner.chosen_back_off(out)
  jax.tree_util.tree_map(np.testing.assert_array_equal, refiner.load(out)[1], params)
  with pytest.raises(ValueError, match="delete it"):        # another model behind it
    refining.refine_run(run, {}, recipe, out, checkpoint="runs/x/best/9")


def test_refiner_training_resumes_exactly(tmp_path):
  """Interrupted after two of four steps and run again, the refiner ends where four
  steps straight end."""
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  mix, a, _, sel, comp = _talkers(n=6, length=2000)
  streams = dict(mixture=np.asarray(mix), selected=np.asarray(sel), competing=np.asarray(comp))
  model = refiner.MaskRefiner(width=8, layers=1, kernel=3)
  run = lambda path, until=None: refining.train(
      streams, np.asarray(a), model, steps_total=4, batch_size=2, lr=1e-2, lambda_spec=1.0,
      sample_rate=16000, state_path=path, checkpoint_every=2, until=until)
  straight = run(str(tmp_path / "straight.state"))
  path = str(tmp_path / "resumed.state")
  half = run(path, until=2)
  resumed = run(path)
  jax.tree_util.tree_map(np.testing.assert_array_equal, straight, resumed)
  assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(straight),
                                                      jax.tree_util.tree_leaves(half)))


def test_carried_talker_follows_the_selected_stream():
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  mix, a, b, sel, comp = _talkers(n=4, length=4000)
  streams = {k: np.asarray(v) for k, v in dict(mixture=mix, clean=a, unattended=b,
                                               selected=sel, competing=comp).items()}
  np.testing.assert_array_equal(refining.carried_talker(streams, 16000), streams["clean"])
  swapped = dict(streams, selected=streams["competing"], competing=streams["selected"])
  np.testing.assert_array_equal(refining.carried_talker(swapped, 16000), streams["unattended"])


def test_blend_scores_score_each_share_of_the_mixture():
  """With the attended talker equal to the mixture, the whole share scores the
  mixture against itself (STOI 1, SI-SDR far above the refined output's)."""
  from neurocodec_jax import refining  # pylint: disable=g-import-not-at-top
  mix, _, _, sel, comp = _talkers(n=2, length=16000)
  streams = dict(mixture=np.asarray(mix), selected=np.asarray(sel), competing=np.asarray(comp),
                 clean=np.asarray(mix))
  model = refiner.MaskRefiner(width=8, layers=1, kernel=3)
  got = refining.blend_scores(streams, model, refiner.init_params(model), (0.5, 1.0), 16000)
  assert got["stoi"].shape == got["si_sdr"].shape == (2, 3)
  np.testing.assert_allclose(got["stoi"][:, 2], 1.0, atol=1e-6)
  assert np.all(got["si_sdr"][:, 2] > 60) and np.all(got["si_sdr"][:, 0] < got["si_sdr"][:, 1])
