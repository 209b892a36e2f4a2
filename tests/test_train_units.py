"""Trainer pieces that stand alone: plateau vs PyTorch, LR injection, EEG ablations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from neurocodec_jax.configs import neurocodec
from neurocodec_jax import latent_structure
from neurocodec_jax.data import open_split
from neurocodec_jax.evaluation import (EEGAblation, compare, quality_table, quality_verdict,
                                       summarize)
from neurocodec_jax.train import optim


def test_plateau_matches_torch_reduce_lr_on_plateau():
  rng = np.random.default_rng(0)
  values = np.concatenate([np.linspace(1, 0.5, 6), 0.5 + 0.01 * rng.random(20),
                           np.linspace(0.49, 0.3, 4), 0.3 + 0.01 * rng.random(15)])
  param = torch.nn.Parameter(torch.zeros(1))
  opt = torch.optim.SGD([param], lr=1e-3)
  ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5)
  plateau = optim.init_plateau()
  for v in values:
    ref.step(float(v))
    plateau = optim.plateau_update(plateau, float(v), factor=0.5, patience=5)
    np.testing.assert_allclose(1e-3 * float(plateau["scale"]), opt.param_groups[0]["lr"],
                               rtol=1e-6)
  assert float(plateau["scale"]) < 0.25          # it did reduce, several times


def test_learning_rate_is_injected_and_weight_decay_decoupled():
  config = neurocodec.get_config("demo")
  tx = optim.generator_optimizer(config)
  params = {"w": jnp.ones(3)}
  state = tx.init(params)
  state = optim.set_learning_rate(state, 0.5)
  updates, _ = tx.update({"w": jnp.zeros(3)}, state, params)
  # Zero gradient: only decoupled weight decay acts, lr * wd * w.
  np.testing.assert_allclose(updates["w"], -0.5 * config.train.weight_decay, rtol=1e-6)


@pytest.mark.parametrize("which", ["generator", "discriminator"])
def test_gradient_clipping_at_global_norm(which):
  """The optimizer as training builds it equals AdamW fed gradients clipped by hand
  (Adam's first update is scale-free, so clipping shows from the second step)."""
  config = neurocodec.get_config("demo")
  if which == "generator":
    tx, clip = optim.generator_optimizer(config), config.train.grad_clip
    adamw = optax.adamw(config.lr, weight_decay=config.train.weight_decay)
  else:
    tx, clip = optim.discriminator_optimizer(config), config.disc.grad_clip
    adamw = optax.adamw(config.disc.lr, b1=0.8, b2=0.99, weight_decay=config.train.weight_decay)
  big = 5 * clip / np.sqrt(6)                     # global norm 5 * clip over the 6 entries
  grads = [{"w": jnp.full(4, big), "b": jnp.array([big, -big])},
           {"w": jnp.array([0.1, -0.2, 0.3, 0.0]) * clip, "b": jnp.array([0.05, 0.0]) * clip}]

  def by_hand(g):
    norm = np.sqrt(sum(float(np.sum(np.square(x))) for x in g.values()))
    return {k: v * min(1.0, clip / norm) for k, v in g.items()}

  def run(tx, grads):
    params = {"w": jnp.zeros(4), "b": jnp.zeros(2)}
    state = tx.init(params)
    for g in grads:
      updates, state = tx.update(g, state, params)
      params = optax.apply_updates(params, updates)
    return np.concatenate([params["b"], params["w"]])

  ours, expected = run(tx, grads), run(adamw, [by_hand(g) for g in grads])
  # Measured 7e-6 (injected vs plain AdamW's float32 rounding); no clipping: ~25%.
  np.testing.assert_allclose(ours, expected, rtol=1e-4)
  assert np.abs(run(adamw, grads) / expected - 1).max() > 0.05     # the test can tell


@pytest.mark.parametrize("kind", ["plateau", "constant", "cosine"])
def test_schedules(kind):
  config = neurocodec.get_config("demo")
  config.train.schedule = kind
  lr = lambda s: float(optim.learning_rate(config, jnp.asarray(s), jnp.asarray(0.5), 100))
  expected = dict(plateau=(0.5 * config.lr, 0.5 * config.lr),
                  constant=(config.lr, config.lr), cosine=(config.lr, 0.0))[kind]
  np.testing.assert_allclose([lr(0), lr(100)], expected, atol=1e-9)


def test_unknown_schedule_rejected():
  config = neurocodec.get_config("demo")
  config.train.schedule = "linear"
  with pytest.raises(ValueError, match="train.schedule"):
    optim.learning_rate(config, jnp.asarray(0), jnp.asarray(1.0), 100)


def test_noise_cue_replaces_eeg_with_matched_noise(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "test", fields=("eeg", "index"))
  ablated = EEGAblation(source, "noise_cue", seed=0)
  for i in range(len(source)):
    real, fake = source[i]["eeg"], ablated[i]["eeg"]
    assert fake.shape == real.shape and fake.dtype == np.float32
    assert not np.allclose(fake, real)
    np.testing.assert_allclose(fake.mean(1), real.mean(1), atol=0.35 * real.std())
    np.testing.assert_allclose(fake.std(1), real.std(1), rtol=0.25)
    # Noise carries none of the trial's time course.
    assert abs(np.corrcoef(fake.ravel(), real.ravel())[0, 1]) < 0.2
  np.testing.assert_array_equal(ablated[3]["eeg"], EEGAblation(source, "noise_cue")[3]["eeg"])


def test_shuffle_eeg_gives_another_trials_eeg(tiny_dataset):
  _, config = tiny_dataset
  source = open_split(config, "test", fields=("eeg", "subject", "index"))
  ablated = EEGAblation(source, "shuffle_eeg", seed=1)
  partners = []
  for i in range(len(source)):
    eeg = ablated[i]["eeg"]
    j = int(ablated.partner[i])
    assert j != i
    np.testing.assert_array_equal(eeg, source[j]["eeg"])
    assert ablated[i]["subject"] == source[j]["subject"]    # the EEG's subject goes with it
    assert ablated[i]["index"] == i                  # everything else is the trial's own
    partners.append(j)
  assert sorted(partners) == list(range(len(source)))


def test_summary_identification_rates_and_compare(tmp_path):
  rows = [dict(index=i, subject=0, si_sdr=s, si_sdr_unattended=u, cos_attended=ca,
               cos_unattended=cu, cos_mix_attended=ma, cos_mix_unattended=mu,
               pesq_wb=float("nan") if i == 0 else 2.0)
          for i, (s, u, ca, cu, ma, mu) in enumerate(
              [(5, 1, .9, .2, .4, .5), (2, 3, .8, .1, .5, .4), (4, 0, .1, .5, .3, .6)])]
  out = summarize(rows)
  assert out["id_si_sdr"] == pytest.approx(2 / 3) and out["id_latent"] == pytest.approx(2 / 3)
  assert out["id_latent_mixture"] == pytest.approx(1 / 3)
  assert out["pesq_wb"] == 2.0 and out["si_sdr"] == pytest.approx(11 / 3)
  import json
  a, b = tmp_path / "a.json", tmp_path / "b.json"
  a.write_text(json.dumps(dict(ablation="none", metrics=dict(si_sdr=5.0))))
  b.write_text(json.dumps(dict(ablation="noise_cue", metrics=dict(si_sdr=-1.5))))
  table = compare(str(a), str(b))
  assert "si_sdr" in table and "6.5000" in table


def test_floor_ceiling_and_improvements_on_a_known_case():
  """Improvements are per-trial differences from the mixture; their standard error is
  that of the mean difference; the table and the verdict read them."""
  diffs = np.array([3.0, 5.0, 4.0, 8.0])
  rows = [dict(index=i, subject=0, si_sdr=1.0 + d, si_sdr_mixture=1.0, si_sdr_oracle=15.0,
               stoi=0.7 + d / 100, stoi_mixture=0.7, stoi_oracle=0.9, estoi=0.5,
               estoi_mixture=0.5, estoi_oracle=0.8, pesq_wb=1.5, pesq_wb_mixture=1.1,
               pesq_wb_oracle=float("nan") if i == 0 else 2.0)
          for i, d in enumerate(diffs)]
  out = summarize(rows)
  assert out["si_sdri"] == pytest.approx(5.0)
  assert out["si_sdri_se"] == pytest.approx(diffs.std(ddof=1) / 2)
  assert out["stoii"] == pytest.approx(0.05) and out["estoii"] == pytest.approx(0.0)
  assert out["pesq_wbi"] == pytest.approx(0.4) and out["pesq_wb_oracle"] == 2.0
  table = quality_table(out)
  assert table["floor"]["si_sdr"] == 1.0 and table["ceiling"]["si_sdr"] == 15.0
  assert table["model"]["stoi"] == pytest.approx(0.75)
  assert table["improvement"]["si_sdri"]["mean"] == pytest.approx(5.0)
  assert quality_verdict(out).startswith("output better than the mixture: SI-SDRi +5.00 dB")
  worse = summarize([dict(r, si_sdr=r["si_sdr_mixture"] - 2, stoi=r["stoi_mixture"] - 0.1)
                     for r in rows])
  assert quality_verdict(worse).startswith("output NOT better")


def test_latent_structure_measures():
  rng = np.random.default_rng(0)
  # An odd frame count: the two talkers never hold the floor equally long (no ties).
  att, un = rng.standard_normal((2, 6, 16, 41))
  active = rng.random((6, 1, 41)) < 0.5          # one talker per frame (turn taking)
  att, un = att * active, un * ~active
  out = latent_structure.structure(att + un, att, un)
  assert out["additivity"] == pytest.approx(1.0, abs=1e-6)
  assert out["id_gate"] == 1.0                    # gated mixture = the attended talker
  assert out["cos_mix_attended"] == pytest.approx(active.mean(), abs=1e-6)
  swapped = latent_structure.structure(att + un, un, att)
  assert swapped["id_copy"] == pytest.approx(1 - out["id_copy"])
  assert swapped["cos_mix_attended"] == pytest.approx(out["cos_mix_unattended"])
  # A latent that is not additive (a hash of the input) scores low.
  hashed = latent_structure.structure(rng.standard_normal(att.shape), att, un)
  assert abs(hashed["additivity"]) < 0.1


def test_selector_diagnostics_separate_cue_from_separation_errors():
  """Perfect streams + a good cue score 1; swapped-content streams and a cue that
  follows the unattended talker are each caught by their own measure."""
  from neurocodec_jax import losses, metrics  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  rng = np.random.default_rng(0)
  b, dim, frames, n = 4, 16, 100, 32000
  clean, unatt = (rng.standard_normal((b, 1, n)).astype(np.float32) for _ in range(2))
  # Bursty audio so the envelopes vary: each talker loud in its own random frames.
  for x in (clean, unatt):
    x *= np.repeat(rng.random((b, 1, frames)) > 0.5, n // frames, axis=-1) + 0.05
  z_att, z_un = (jnp.asarray(rng.standard_normal((b, dim, frames)), jnp.float32)
                 for _ in range(2))
  env = lambda x: losses.speech_envelope(jnp.asarray(x)[:, 0], 16000, 50.0, frames)
  env_a, env_u = env(clean), env(unatt)
  batch = dict(clean=clean, unattended=unatt)
  good = dict(streams=jnp.stack([z_un, z_att], 1), stream_env=jnp.stack([env_u, env_a], -1),
              cue=env_a + 0.2 * env_u)
  d = {k: np.asarray(v) for k, v in
       metrics.selector_diagnostics(config, good, batch, z_att, z_un).items()}
  assert d["id_cue_true_envelopes"].all() and d["id_oracle_cue"].all()
  assert (d["stream_r_own"] > 0.99).all() and (np.abs(d["stream_r_other"]) < 0.3).all()
  assert (d["cue_r_attended"] > d["cue_r_unattended"]).all()
  # A cue that follows the ignored talker: the cue measure fails, separation is intact.
  bad_cue = dict(good, cue=env_u)
  d = metrics.selector_diagnostics(config, bad_cue, batch, z_att, z_un)
  assert not np.asarray(d["id_cue_true_envelopes"]).any() and np.asarray(d["id_oracle_cue"]).all()
  # Stream envelopes swapped against the stream latents: a perfect cue picks the wrong stream.
  crossed = dict(good, stream_env=jnp.stack([env_a, env_u], -1))
  d = metrics.selector_diagnostics(config, crossed, batch, z_att, z_un)
  assert not np.asarray(d["id_oracle_cue"]).any()
  assert (np.asarray(d["stream_r_other"]) > 0.99).all()


def test_cosine_schedule_takes_the_run_length_from_epochs():
  """With the default train.max_steps=-1 the cosine schedule decays over the run's
  resolved length (epochs x steps per epoch), passed in, never re-read from the
  config (where it read -1: a one-step decay, learning rate 0 from step 1)."""
  from neurocodec_jax import training as loop  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.train.schedule, config.train.max_steps = "cosine", -1
  total = loop.total_steps(config, per_epoch=25)
  assert total == config.epochs * 25
  lr = lambda s: float(optim.learning_rate(config, jnp.asarray(s), jnp.asarray(1.0), total))
  assert lr(0) == pytest.approx(config.lr)
  assert lr(total // 2) == pytest.approx(config.lr / 2, rel=1e-5)
  assert lr(total) == pytest.approx(0.0, abs=1e-9)
  with pytest.raises(ValueError, match="run's length"):
    optim.learning_rate(config, jnp.asarray(0), jnp.asarray(1.0), -1)
  # Train steps differ by run length only where the schedule traces it.
  assert loop.traced_length(config, 100) != loop.traced_length(config, 200)
  config.train.schedule = "plateau"
  assert loop.traced_length(config, 100) == loop.traced_length(config, 200)


def test_run_config_from_before_an_option_gets_its_base_default(tmp_path):
  """A config.json saved before model.mix_input & co existed evaluates as trained
  (quantized input, soft decision), not with the demo preset's newer values."""
  import json  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.configs.saved import load_run_config  # pylint: disable=g-import-not-at-top
  saved = json.loads(neurocodec.get_config("demo").to_json_best_effort())
  for key in ("mix_input", "mixture_consistency", "select_decision"):
    del saved["model"][key]
  saved["model"]["selector"] = "correlation"
  (tmp_path / "config.json").write_text(json.dumps(saved))
  config = load_run_config(str(tmp_path))
  assert (config.model.mix_input, config.model.mixture_consistency,
          config.model.select_decision) == ("quantized", False, "soft")
  assert config.model.selector == "correlation" and config.lambda_sep_env == 5.0  # saved values


def test_continuous_mix_input_needs_its_field():
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  batch = dict(noisy_codes=np.zeros((1, 4, 5), np.int32))
  with pytest.raises(KeyError, match="noisy_latent"):
    steps.mix_latent(None, batch, "continuous")
  latent = np.ones((1, 64, 5), np.float32)
  np.testing.assert_array_equal(steps.mix_latent(None, dict(batch, noisy_latent=latent),
                                                 "continuous"), latent)


def test_continuous_targets_need_their_fields_and_are_the_targets():
  """model.target_latent=continuous: the attended and the competing talker's targets
  are their stored continuous latents, not their codes' quantized z."""
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.model.target_latent = "continuous"
  fields = steps.batch_fields(config)
  assert {"clean_latent", "unattended_latent", "clean_codes"} <= set(fields)
  batch = dict(clean_codes=np.zeros((1, 4, 5), np.int32))
  with pytest.raises(KeyError, match="clean_latent"):
    steps.target_latent(None, batch, "continuous")
  latent = np.full((1, 64, 5), 2.0, np.float32)
  np.testing.assert_array_equal(
      steps.target_latent(None, dict(batch, unattended_latent=latent), "continuous",
                          "unattended"), latent)
  config.model.target_latent = "quantized"
  assert not any(f.endswith("_latent") and f != "noisy_latent"
                 for f in steps.batch_fields(config))


def test_forward_cue_form_terms_and_diagnostics_compare_as_the_selector():
  """``model.cue_form="forward"``: the envelope terms and ``id_cue_true_envelopes``
  correlate the selector's whitened cue with each talker's predicted response through
  the model's response and the trial's whitener (``models.cue``), at the frame rate;
  a source that is the attended talker's delayed response in steep noise is
  identified."""
  from neurocodec_jax import losses, metrics  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import cue  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.model.cue_form = "forward"
  rng = np.random.default_rng(0)
  b, frames, n = 8, 100, 32000
  clean, unatt = (rng.standard_normal((b, 1, n)).astype(np.float32) for _ in range(2))
  for x in (clean, unatt):
    x *= np.repeat(rng.random((b, 1, frames)) > 0.5, n // frames, axis=-1) + 0.05
  batch = dict(clean=clean, unattended=unatt, eeg=np.zeros((b, 4, 256), np.float32))
  env_a, env_u = steps.talker_envelopes(config, batch, frames)
  response = jnp.zeros((2, cue.response_taps(0.02))).at[0, 4].set(1.0)
  drift = np.cumsum(rng.standard_normal((b, frames)), -1)            # a random walk
  source = (cue.causal_fir(env_a / env_a.std(), response[0])
            + jnp.asarray(0.1 * drift, jnp.float32))
  white = cue.whitener(source)
  aux = dict(cue=cue.source(source, "forward", white), response=response, whitener=white,
             streams=jnp.zeros((b, 2, 4, frames)), stream_env=jnp.stack([env_a, env_u], -1))
  got, att, unatt_pred = steps.envelope_pair(config, batch, None, aux, True)
  np.testing.assert_array_equal(got, aux["cue"])
  hypotheses = cue.compared(jnp.stack([env_a, env_u], -1), "forward", response, white)
  np.testing.assert_allclose(att, hypotheses[..., 0], rtol=1e-6)
  np.testing.assert_allclose(unatt_pred, hypotheses[..., 1], rtol=1e-6)
  z = jnp.zeros((b, 4, frames))
  d = metrics.selector_diagnostics(config, aux, batch, z, z)
  assert np.asarray(d["id_cue_true_envelopes"]).all()
  assert (np.asarray(d["cue_r_attended"]) > 0.9).all()
  assert float(losses.envelope_loss(got, att)) < -0.9
  assert "unattended" in steps.batch_fields(config)
  # The backward form reads the ignored talker only for the contrast term.
  config.model.cue_form = "backward"
  env = jnp.zeros((b, 256 - 31))
  assert steps.envelope_pair(config, dict(clean=clean, eeg=batch["eeg"]), env, {}, False)[2] is None


def test_cue_curriculum_anneals_from_the_oracle_to_the_eeg():
  """train.cue_curriculum_steps=N: the selector's cue is the attended envelope at
  step 0, the EEG's decoded envelope from step N on, linear between (both
  standardized), and the oracle passes no gradient."""
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.train.cue_curriculum_steps = 100
  sr, rate = config.codec.arch.sample_rate, config.data.eeg_rate
  rng = np.random.default_rng(0)
  clean = rng.standard_normal((2, 1, sr)).astype(np.float32)
  batch = dict(clean=clean, eeg=np.zeros((2, 32, rate), np.float32))
  env = jnp.asarray(rng.standard_normal((2, rate - 31)) * 3 + 7, jnp.float32)
  oracle = steps.envelope_target(config, batch, env.shape[-1])
  z = lambda x: (x - x.mean(-1, keepdims=True)) / x.std(-1, keepdims=True)
  for step, w in [(0, 1.0), (25, 0.75), (100, 0.0), (900, 0.0)]:
    cue = steps.curriculum_cue(config, batch, env, jnp.asarray(step))
    np.testing.assert_allclose(cue, w * z(oracle) + (1 - w) * z(env), rtol=0, atol=2e-5)
    assert float(steps.cue_oracle_weight(config, jnp.asarray(step))) == pytest.approx(w)
  grad = lambda step: jax.grad(lambda e: (steps.curriculum_cue(
      config, batch, e, jnp.asarray(step)) * oracle).sum())(env)
  assert float(jnp.abs(grad(0)).max()) == 0.0 and float(jnp.abs(grad(50)).max()) > 0
  assert "clean" in steps.batch_fields(config)


def test_select_term_is_the_selectors_cross_entropy_against_the_attended_stream():
  """lambda_select: -log softmax(logits)[the stream the PIT gives the attended talker],
  whichever stream that is."""
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  z_att, z_un = (jnp.asarray(rng.standard_normal((3, 8, 5)), jnp.float32) for _ in range(2))
  logits = jnp.asarray(rng.standard_normal((3, 5, 2)), jnp.float32)
  log_w = np.asarray(jax.nn.log_softmax(logits, -1))
  aux = dict(streams=jnp.stack([z_att, z_un], 1), logits=logits)
  terms = steps.separation_terms(aux, z_att, z_un)
  assert float(terms["sep"]) == pytest.approx(0.0, abs=1e-6)
  assert float(terms["select"]) == pytest.approx(-log_w[..., 0].mean(), rel=1e-6)
  # Streams swapped (example 1 only): its label follows the attended talker.
  streams = np.asarray(aux["streams"]).copy()
  streams[1] = streams[1, ::-1]
  terms = steps.separation_terms(dict(aux, streams=jnp.asarray(streams)), z_att, z_un)
  expected = np.concatenate([log_w[0, :, 0], log_w[1, :, 1], log_w[2, :, 0]])
  assert float(terms["select"]) == pytest.approx(-expected.mean(), rel=1e-6)


def test_token_term_is_the_pit_cross_entropy_and_sets_the_assignment():
  """lambda_token: uniform logits cost ln K; logits that name one talker's codes per
  stream cost ~0 under the right assignment whichever stream holds which talker, and
  that assignment (not the latent term's) labels the select term."""
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  b, n, f, k = 3, 2, 5, 16
  att, un = (jnp.asarray(rng.integers(0, k, (b, 4, f)), jnp.int32) for _ in range(2))
  flat = jnp.zeros((b, 2, n, f, k))
  assert float(steps.token_cross_entropy(flat[:, 0], att).mean()) == pytest.approx(np.log(k))
  sharp = lambda c: 30.0 * jax.nn.one_hot(c[:, :n], k)          # [b, n, f, k]
  logits = jnp.stack([sharp(att), sharp(un)], 1)
  logits = logits.at[1].set(logits[1, ::-1])                    # example 1: streams swapped
  z = jnp.asarray(rng.standard_normal((b, 8, f)), jnp.float32)
  sel = jnp.asarray(rng.standard_normal((b, f, 2)), jnp.float32)
  # The latent streams say "not swapped" for every example; the codes say otherwise.
  aux = dict(streams=jnp.stack([z, -z], 1), logits=sel, token_logits=logits)
  terms = steps.separation_terms(aux, z, -z, codes=(att, un))
  assert float(terms["token"]) == pytest.approx(0.0, abs=1e-6)
  log_w = np.asarray(jax.nn.log_softmax(sel, -1))
  expected = np.concatenate([log_w[0, :, 0], log_w[1, :, 1], log_w[2, :, 0]])
  assert float(terms["select"]) == pytest.approx(-expected.mean(), rel=1e-6)
  assert "token" not in steps.separation_terms(aux, z, -z)      # no codes: no term


def test_attended_stream_is_the_one_nearer_the_attended_talker_held():
  """train.waveform_output='attended_stream': per example the stream of higher mean frame
  cosine with the attended latent, whichever index it has; the gradient reaches that
  stream only (the choice is held)."""
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  z_att, z_un = (jnp.asarray(rng.standard_normal((2, 8, 5)), jnp.float32) for _ in range(2))
  near, far = z_att + 0.3 * z_un, z_un + 0.3 * z_att
  streams = jnp.stack([jnp.stack([near[0], far[0]]), jnp.stack([far[1], near[1]])])
  np.testing.assert_array_equal(steps.attended_stream(streams, z_att), near)
  w = jnp.asarray(rng.standard_normal(near.shape), jnp.float32)
  grad = jax.grad(lambda s: jnp.sum(steps.attended_stream(s, z_att) * w))(streams)
  np.testing.assert_array_equal(grad[0, 0], w[0])
  np.testing.assert_array_equal(grad[1, 1], w[1])
  assert not np.any(grad[0, 1]) and not np.any(grad[1, 0])


def test_waveform_ramp_brings_the_waveform_terms_in_linearly():
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  ramp = [float(steps.waveform_ramp(s, 10, 4)) for s in (10, 11, 12, 13, 14, 100)]
  np.testing.assert_allclose(ramp, [0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
  assert float(steps.waveform_ramp(10, 10, 0)) == 1.0          # no ramp


def test_best_checkpoint_of_a_waveform_stage_is_its_latest():
  """Validation's loss (latent and envelope terms) rises in a waveform stage, which
  trades it for the decoded waveform: within the stage the latest validation is the
  best; before it, and without a stage, the lowest loss."""
  from neurocodec_jax.training import is_new_best  # pylint: disable=g-import-not-at-top
  best = dict(best_val=-0.69)
  assert not is_new_best(-0.60, 5000, best, stage=5000)      # step 5000: not in the stage
  assert is_new_best(-0.70, 5000, best, stage=5000)
  assert is_new_best(-0.60, 5200, best, stage=5000)          # in the stage: the latest
  assert is_new_best(-0.50, 5400, dict(best_val=-0.60), stage=5000)
  assert not is_new_best(-0.60, 5200, best, stage=0)         # no stage: the loss alone
  assert is_new_best(-0.70, 5200, best, stage=0)


def test_mask_waveform_terms_judge_the_mixture_masked_by_the_held_streams():
  """train.waveform_output="attended_stream_masked": the waveform terms judge the mixture through the ratio mask of the stream nearer the
  attended talker and the other one, each decoded at the output's scale."""
  from neurocodec_jax import mixture_mask  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models.generator import NeuroCodec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")        # selector, output_norm="mixture"
  b, d, f, hop = 2, config.codec.arch.latent_dim, 20, 80
  rng = np.random.default_rng(0)
  z_mix = jnp.asarray(rng.standard_normal((b, d, f)), jnp.float32)
  eeg = jnp.asarray(rng.standard_normal((b, config.eeg_channels, 64)), jnp.float32)
  model = NeuroCodec.from_config(config)
  variables = model.init(jax.random.PRNGKey(0), z_mix, eeg, train=False)
  streams = rng.standard_normal((b, 2, d, f)).astype(np.float32)
  streams /= np.linalg.norm(streams, axis=2, keepdims=True)
  att = np.array([1, 0])                         # the attended talker's stream per example
  z_att = jnp.asarray(streams[np.arange(b), att] + 0.1 * rng.standard_normal((b, d, f)))
  decode = lambda decoder, z: jnp.repeat(z.sum(1, keepdims=True), hop, axis=-1)  # [b, 1, T]
  models = steps.Models(generator=model, discriminator=None, decode=decode, g_tx=None,
                        d_tx=None)
  mixture = jnp.asarray(rng.standard_normal((b, 1, f * hop)), jnp.float32)
  wave = steps.decoded_waveform(models, variables, dict(decoder=None, quantizer=None), None,
                                jnp.asarray(streams), z_mix, z_att, requantize=False, n_q=8,
                                mask=(mixture, 0.5, 0.2))
  scale = np.linalg.norm(np.asarray(z_mix), axis=1, keepdims=True)
  held = streams[np.arange(b), att] * scale
  other = streams[np.arange(b), 1 - att] * scale
  want = mixture_mask.ratio_mask(mixture, decode(None, held), decode(None, other), 0.5, 0.2)
  np.testing.assert_allclose(wave, want, rtol=1e-5, atol=1e-6)
  # The mask needs the selector's streams.
  config.unlock()
  config.lambda_sisdr, config.model.selector = 1.0, "none"
  config.train.waveform_output = "attended_stream_masked"
  with pytest.raises(ValueError, match="needs the selector's streams"):
    steps.make_train_step(config, None, total_steps=1)


def test_waveform_output_needs_a_known_value_and_the_selector():
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  config.unlock()
  config.lambda_sisdr = 1.0
  config.train.waveform_output = "blend"
  with pytest.raises(ValueError, match="waveform_output must be one of"):
    steps.make_train_step(config, None, total_steps=1)
  config.train.waveform_output, config.model.selector = "attended_stream", "none"
  with pytest.raises(ValueError, match="needs the selector"):
    steps.make_train_step(config, None, total_steps=1)


@pytest.mark.integration            # compiles a whole train step with the codec
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_train_step_takes_the_frozen_codec_as_an_argument(tiny_dataset, backend):
  """The codec's arrays (``run.frozen``: the quantizer, and with codec.backend=jax the
  decoder's weights) are an argument of the jitted train step, not constants in its
  program. Closed over, each array was in the program's text as
  a constant: 1.4 M (torch) / 4.3 M (jax) characters of StableHLO here (the mel term
  on, no GAN), 0.82 / 0.91 M with the arrays as an argument."""
  import re  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  from tests.test_train import train_config  # pylint: disable=g-import-not-at-top
  root, _ = tiny_dataset
  # A waveform term on (the decode, hence the decoder's weights, in the program); the
  # GAN's discriminator adds no frozen array, only tracing time.
  config = train_config(root, **{"codec.backend": backend, "lambda_adv": 0.0,
                                 "lambda_feat": 0.0})
  run = build_run(config, {"train": steps.batch_fields(config)})
  step = steps.make_train_step(config, run.models, total_steps=6)
  state = run.init_state()
  text = jax.jit(step).lower(state, run.example, run.frozen).as_text()
  # A constant's values are printed as the hex of its bytes: no frozen array's are
  # there (arrays of >= 64 values, not all equal, e.g. zero biases: no chance match).
  hex_of = lambda x: np.asarray(x).tobytes().hex().upper()
  arrays = [x for x in jax.tree.leaves(run.frozen) if x.size >= 64 and np.ptp(x) > 0]
  # The codebooks and projections (and with jax the decoder's 30 kernels; its biases
  # are zero, its alphas one).
  assert len(arrays) == (3 if backend == "torch" else 33), len(arrays)
  for x in arrays:
    assert hex_of(x) not in text, x.shape
  # What constants there are: the mel filterbanks and windows (measured 39 640 bytes);
  # the frozen arrays are 0.30 MB (torch: the quantizer) / 1.68 MB (jax).
  constant_bytes = sum(len(h) // 2 for h in re.findall(r'dense<"0x([0-9A-F]+)">', text))
  assert constant_bytes < 80_000, constant_bytes
  # The check can tell: closed over, the codebooks are a constant.
  closed = jax.jit(lambda s, b: step(s, b, run.frozen)).lower(state, run.example).as_text()
  assert hex_of(run.frozen["quantizer"]["codebook"]) in closed


@pytest.mark.integration            # compiles a train step
@pytest.mark.slow                   # an option no preset uses (26 s)
def test_token_streams_train_on_their_codes(tiny_dataset):
  """stream_form="tokens" in the train step: the token term is logged and falls
  over a few steps on one batch (the codes are learnable), every term finite."""
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  from tests.test_train import train_config  # pylint: disable=g-import-not-at-top
  root, _ = tiny_dataset
  config = train_config(root, **{"model.selector": "correlation", "model.eeg_kernel": 16,
                                 "model.stream_form": "tokens", "lambda_token": 1.0,
                                 "lambda_sep": 1.0, "codec.requantize_output": False,
                                 "codec.n_quantizers_eval": 2, "lambda_mel": 0.0,
                                 "lambda_adv": 0.0, "lambda_feat": 0.0, "lr": 1e-2,
                                 "model.dropout": 0.0})
  run = build_run(config, {"train": steps.batch_fields(config)})
  step = jax.jit(steps.make_train_step(config, run.models, total_steps=20))
  state, batch = run.init_state(), run.example
  losses = []
  for _ in range(8):
    state, m = step(state, batch, run.frozen)
    assert bool(m["finite"])
    losses.append(float(m["loss_token"]))
  k = config.codec.arch.codebook_size
  assert losses[0] == pytest.approx(np.log(k), rel=0.1)         # near chance at init
  assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.integration            # compiles a train step
@pytest.mark.slow                   # an option no preset uses (24 s)
def test_encoding_cue_form_fits_on_training_batches(tiny_dataset):
  """``model.cue_form="encoding"`` in the train step: the batch carries both talkers
  (and, with per-subject fits, the subjects), every step adds one batch to the
  encoding model's statistics and each trial to its subject's, the envelope term stays
  the backward one (it trains the EEG encoder's head), every term finite."""
  from neurocodec_jax.run import build_run  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  from tests.test_train import train_config  # pylint: disable=g-import-not-at-top
  root, _ = tiny_dataset
  config = train_config(root, **{"model.selector": "correlation", "model.eeg_kernel": 16,
                                 "model.select_window": "trial", "model.cue_form": "encoding",
                                 "model.encoding_subjects": 4,
                                 "lambda_env": 1.0, "lambda_mel": 0.0, "lambda_adv": 0.0,
                                 "lambda_feat": 0.0})
  assert {"clean", "unattended", "subject"} <= set(steps.batch_fields(config))
  run = build_run(config, {"train": steps.batch_fields(config)})
  step = jax.jit(steps.make_train_step(config, run.models, total_steps=4))
  state, batch = run.init_state(), run.example
  for i in range(3):
    state, m = step(state, batch, run.frozen)
    assert bool(m["finite"]) and np.isfinite(float(m["loss_envelope"]))
    assert float(state["g"]["batch_stats"]["encoding"]["count"]) == i + 1
  ids = np.asarray(batch["subject"])
  assert (ids >= 0).all() and (ids < 4).all(), ids
  np.testing.assert_array_equal(state["g"]["batch_stats"]["encoding"]["subject_count"],
                                3 * np.bincount(ids, minlength=4))
  # The statistics are the attended talker's first, the ignored one's second.
  from neurocodec_jax import codec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import encoding  # pylint: disable=g-import-not-at-top
  n = batch["eeg"].shape[-1]
  talkers = jnp.stack([steps.envelope_target(config, batch, n, k)
                       for k in ("clean", "unattended")], -1)
  model = encoding.EncodingModel(codec.frame_seconds(config.codec.arch), config.data.eeg_rate)
  frames = steps.mix_latent(run.frozen["quantizer"], batch, config.model.mix_input).shape[-1]
  fresh = model.init(jax.random.PRNGKey(0), batch["eeg"], None, frames, train=False)
  _, upd = model.apply(fresh, batch["eeg"], talkers, frames, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(state["g"]["batch_stats"]["encoding"]["xty"],
                             upd["batch_stats"]["xty"], rtol=1e-4, atol=1e-6)
  env = jnp.zeros((2, 10))
  got = steps.envelope_pair(config, batch, env, {}, False)
  assert got[0] is env and got[2] is None


def test_oracle_cue_needs_a_selector_and_a_known_cue():
  import types  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.metrics import make_metrics  # pylint: disable=g-import-not-at-top
  config = neurocodec.get_config("demo")
  with pytest.raises(ValueError, match="cue must be one of"):
    make_metrics(types.SimpleNamespace(config=config), "quantized", cue="envelope")
  with pytest.raises(ValueError, match="norm must be one of"):
    make_metrics(types.SimpleNamespace(config=config), "quantized", norm="mixture")
  config.unlock()
  config.model.selector = "none"
  with pytest.raises(ValueError, match="needs a selector model"):
    make_metrics(types.SimpleNamespace(config=config), "quantized", cue="oracle")


def test_latent_structure_quantization_cosine_on_known_quantizers():
  """A quantizer that only scales keeps every direction (cosine 1); one that maps the
  first half of the latent onto the second (orthogonal) keeps none (cosine 0)."""
  rng = np.random.default_rng(0)
  audio = [rng.standard_normal((4, 1, 6 * 8)).astype(np.float32) for _ in range(3)]

  class Codec:
    def __init__(self, quantize):
      self.quantize = quantize

    def encode(self, x):
      z = np.zeros((len(x), 8, 6), np.float32)
      z[:, :4] = x[:, 0].reshape(len(x), 6, 8)[..., :4].transpose(0, 2, 1)
      return None, self.quantize(z), z

  scaled = latent_structure.measure_arrays(Codec(lambda z: 3 * z), *(a[:, 0] for a in audio))
  assert scaled["quantization_cosine"] == pytest.approx(1.0, abs=1e-6)
  rotated = latent_structure.measure_arrays(
      Codec(lambda z: np.concatenate([z[:, 4:], z[:, :4]], axis=1)), *(a[:, 0] for a in audio))
  assert rotated["quantization_cosine"] == pytest.approx(0.0, abs=1e-6)


def test_waveform_terms_decode_the_requantized_prediction_straight_through():
  """The training step's waveform terms decode what evaluation decodes (the
  prediction re-quantized), and the gradient passes the quantizer unchanged."""
  from neurocodec_jax import codec  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.train import steps  # pylint: disable=g-import-not-at-top
  from tests.test_streaming import D, NQ, small_codec  # pylint: disable=g-import-not-at-top
  *_, qparams = small_codec()
  z = jnp.asarray(np.random.default_rng(4).standard_normal((1, D, 6)), jnp.float32)
  w = jnp.asarray(np.random.default_rng(5).standard_normal(z.shape), jnp.float32)
  out = steps.decoded_latent(qparams, z, True, NQ)
  # Equal up to one float32 add and subtract (z + (q - z)).
  np.testing.assert_allclose(out, codec.requantize(qparams, z, NQ), rtol=0,
                             atol=4 * np.finfo(np.float32).eps * np.abs(np.asarray(z)).max())
  assert np.abs(np.asarray(out - z)).max() > 1e-2          # re-quantization moves it
  grad = jax.grad(lambda x: jnp.sum(steps.decoded_latent(qparams, x, True, NQ) * w))(z)
  np.testing.assert_allclose(grad, w, rtol=1e-6)
  assert steps.decoded_latent(qparams, z, False, NQ) is z
