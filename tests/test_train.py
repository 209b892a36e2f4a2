"""End to end on a tiny config: train, checkpoint, resume exactly, evaluate, extract, report
(data parallelism: test_data_parallel.py)."""

import json
import os
import subprocess

import jax
import numpy as np
import pytest

from neurocodec_jax import evaluation, latent_structure
from neurocodec_jax.configs.saved import load_run_config
from neurocodec_jax.run import build_run
from neurocodec_jax import training as loop
from neurocodec_jax.train import steps
from tests.conftest import set_fields, tiny_config


def train_config(root, **overrides):
  """Tiny model and run: every loss on, a few steps."""
  base = {"hidden_dim": 16, "num_layers": 1, "model.num_heads": 2, "model.eeg_dim": 8,
          "model.dropout": 0.1, "batch_size": 4, "lambda_env": 0.1,
          "train.max_steps": 6, "train.checkpoint_every": 3, "train.eval_every": 4,
          "train.log_every": 1, "mel.n_mels": (5, 10, 20, 40),
          "mel.window_lengths": (32, 64, 128, 256), "disc.periods": (2, 3),
          "disc.fft_sizes": (256,), "disc.width": 0.125}
  base.update(overrides)
  return tiny_config(root, **base)


def _params(result):
  return jax.tree.leaves(result["state"]["g"]["params"]) + jax.tree.leaves(
      result["state"]["d"])


@pytest.fixture(scope="module")
def uninterrupted(tiny_dataset, tmp_path_factory):
  """``(workdir, result)`` of a full run; ``result["initial"]``: its initial state;
  ``result["run"]``: its run, whose compiled programs the other runs here reuse."""
  root, _ = tiny_dataset
  workdir = str(tmp_path_factory.mktemp("run") / "full")
  from neurocodec_jax.run import Run  # pylint: disable=g-import-not-at-top
  initial, init_state = [], Run.init_state

  def keep_initial(self):
    state = init_state(self)
    initial.append(jax.tree.map(np.array, state))    # copies: the step donates buffers
    return state

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(Run, "init_state", keep_initial)
    result = loop.train_and_evaluate(train_config(root), workdir)
  return workdir, dict(result, initial=initial[0])


def test_run_writes_checkpoints_metrics_and_config(uninterrupted):
  workdir, result = uninterrupted
  assert result["step"] == 6
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3", "6"]
  assert os.listdir(os.path.join(workdir, "best"))
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  train_rows = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
  for key in ("loss_latent", "loss_mel", "loss_adversarial", "loss_features",
              "loss_envelope", "d_loss", "g_loss", "lr"):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  val_rows = [r for r in rows if r["split"] == "val"]
  assert [r["step"] for r in val_rows] == [4, 6] and "si_sdr" in val_rows[0]
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["hidden_dim"] == 16 and saved["preset"] == "demo"


# Leaves whose gradient is 0 in exact arithmetic by an invariance of the loss: the
# envelope head's bias (the decoded envelope enters every term only through Pearson
# correlations, which ignore an offset) and the attention key bias (the softmax over
# keys ignores a shift shared by all keys). Adam scales their rounding-level gradients
# up to steps of ~lr or to nothing, as the rounding falls: the envelope head bias
# moved 0.66 lr over the 6 steps, then 0.005 lr with another form of the discriminator's
# convolutions; the key bias 0.50 lr. So they are checked finite and
# within Adam's bound only.
ZERO_GRADIENT_BY_INVARIANCE = ("['envelope_head']['Conv_0']['bias']", "['key']['bias']")


def test_parameters_change_and_stay_finite(uninterrupted):
  """Every parameter leaf of the generator and of the discriminator (every loss is on)
  is moved by its gradient, not only by AdamW's decoupled weight decay (which takes a
  leaf with zero gradient to p (1 - lr wd)^steps), and stays finite."""
  _, result = uninterrupted
  config = train_config("unused")
  exempt = set()
  for net, lr in (("g", config.lr), ("d", config.disc.lr)):
    kept = (1 - lr * config.train.weight_decay) ** result["step"]
    before = jax.tree_util.tree_flatten_with_path(result["initial"][net]["params"])[0]
    after = jax.tree.leaves(result["state"][net]["params"])
    assert before and len(before) == len(after)
    for (path, a), b in zip(before, after):
      name = f"{net}{jax.tree_util.keystr(path)}"
      assert np.all(np.isfinite(b)), name
      # Adam moves a leaf with a gradient by ~lr a step: measured >= 3.2 lr over the 6
      # steps. A leaf cut off from the loss moves by rounding only, ~1e-7 |p|.
      moved = np.abs(b - a * kept).max()
      if name.endswith(ZERO_GRADIENT_BY_INVARIANCE):
        exempt.update(s for s in ZERO_GRADIENT_BY_INVARIANCE if name.endswith(s))
        assert moved < 10 * lr * result["step"], (name, moved)    # Adam's bound
      else:
        assert moved > 0.1 * lr, (name, moved)
  assert exempt == set(ZERO_GRADIENT_BY_INVARIANCE)     # the exemptions name real leaves


def test_resume_after_kill_mid_epoch_is_bitwise_equal(uninterrupted, tiny_dataset, tmp_path):
  root, _ = tiny_dataset
  _, full = uninterrupted
  workdir = str(tmp_path / "killed")
  config = train_config(root)
  # Killed after step 5: the checkpoint at step 3 (mid-epoch 1) survives, step
  # 4's validation and plateau update and step 5 are lost and must be redone.
  killed = loop.train_and_evaluate(config, workdir, reuse=full["run"], stop_after=5)
  assert killed["step"] == 5
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
  resumed = loop.train_and_evaluate(config, workdir, reuse=full["run"])
  assert resumed["step"] == 6
  for a, b in zip(_params(full), _params(resumed)):
    np.testing.assert_array_equal(a, b)


def test_restart_after_completion_trains_nothing(uninterrupted, tiny_dataset):
  root, _ = tiny_dataset
  workdir, full = uninterrupted
  again = loop.train_and_evaluate(train_config(root), workdir, reuse=full["run"])
  assert again["step"] == 6
  for a, b in zip(_params(full), _params(again)):
    np.testing.assert_array_equal(a, b)


def _nan_on_step(monkeypatch, bad_step):
  original, calls = loop.shard_batch, []

  def poisoned(batch, sharding):
    calls.append(1)
    if len(calls) == bad_step and "eeg" in batch and len(batch) > 3:
      batch = dict(batch, eeg=np.full_like(batch["eeg"], np.nan))
    return original(batch, sharding)

  monkeypatch.setattr(loop, "shard_batch", poisoned)


def test_non_finite_loss_stops_naming_step_and_checkpoint(uninterrupted, tiny_dataset, tmp_path,
                                                          monkeypatch):
  root, _ = tiny_dataset
  workdir = str(tmp_path / "nan")
  _nan_on_step(monkeypatch, 5)
  with pytest.raises(FloatingPointError, match=r"step 5.*kept at step 4.*Last good "
                     r"checkpoint: step 3"):
    loop.train_and_evaluate(train_config(root, **{"train.eval_every": 100}), workdir,
                            reuse=uninterrupted[1]["run"])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]


def test_non_finite_loss_skip_keeps_parameters(uninterrupted, tiny_dataset, tmp_path, monkeypatch):
  root, _ = tiny_dataset
  run = uninterrupted[1]["run"]
  config = train_config(root, **{"train.nonfinite": "skip", "train.max_steps": 2,
                                 "train.eval_every": 100})
  before = loop.train_and_evaluate(config.copy_and_resolve_references(),
                                   str(tmp_path / "a"), reuse=run, stop_after=1)
  _nan_on_step(monkeypatch, 2)
  after = loop.train_and_evaluate(config, str(tmp_path / "b"), reuse=run)
  assert after["step"] == 2
  for a, b in zip(_params(before), _params(after)):
    np.testing.assert_array_equal(a, b)


def test_evaluate_outputs_and_ablations(uninterrupted, tiny_dataset):
  workdir, full = uninterrupted
  config = load_run_config(workdir)
  normal = evaluation.evaluate(config, workdir=workdir, split="test", num_samples=2,
                               reuse=full["run"])
  keys = {"latent_loss", "si_sdr", "pesq_wb", "stoi", "estoi", "cos_attended",
          "cos_unattended", "si_sdr_unattended", "id_latent", "id_si_sdr",
          "cos_mix_attended", "cos_mix_unattended", "id_latent_mixture"}
  references = {f"{k}_{r}" for k in evaluation.QUALITY for r in evaluation.REFERENCES}
  improvements = {f"{k}i{se}" for k in evaluation.QUALITY for se in ("", "_se")}
  assert keys | references | improvements <= set(normal["metrics"]) and normal["n"] == 8
  m = normal["metrics"]
  assert all(np.isfinite(m[k]) for k in ("si_sdr_mixture", "si_sdr_oracle", "stoi_oracle"))
  assert m["si_sdri"] == pytest.approx(m["si_sdr"] - m["si_sdr_mixture"], abs=1e-4)
  assert set(normal["quality"]) == {"floor", "model", "ceiling", "improvement"}
  assert set(normal["per_subject"]) == {"0", "1"}
  out = normal["out_dir"]
  for name in ("metrics.json", "per_example.csv", "input_noisy_1.wav", "prediction_1.wav",
               "target_clean_1.wav", "inference_plot_1.png"):
    assert os.path.exists(os.path.join(out, name)), name
  noise = evaluation.evaluate(config, workdir=workdir, split="test", ablation="noise_cue",
                              perceptual=False, reuse=full["run"])
  shuffled = evaluation.evaluate(config, workdir=workdir, split="test",
                                 ablation="shuffle_eeg", perceptual=False, reuse=full["run"])
  # The model sees other EEG, so its predictions change.
  for other in (noise, shuffled):
    assert other["metrics"]["latent_loss"] != normal["metrics"]["latent_loss"]
    # The copy-the-mixture baseline is EEG-free: identical under every ablation.
    for k in ("cos_mix_attended", "cos_mix_unattended", "id_latent_mixture"):
      assert other["metrics"][k] == normal["metrics"][k], k
  compared = evaluation.compare(os.path.join(out, "metrics.json"),
                                os.path.join(noise["out_dir"], "metrics.json"))
  assert "drop" in compared and "ceiling: codec oracle" in compared
  linear = evaluation.linear_baseline(config, "test", out_dir=out)
  assert 0 <= linear["identification"] <= 1 and linear["n"] == 8 and linear["ridge"] > 0
  assert json.load(open(os.path.join(out, "linear_baseline.json")))["n"] == 8
  assert len(linear["per_trial"]) == 8 and np.mean(linear["per_trial"]) == linear["identification"]
  forward = linear["forward"]                # the forward decoder, on the same trials
  assert forward["n"] == 8 and np.mean(forward["per_trial"]) == forward["identification"]


def test_latent_structure_agrees_with_evaluation(uninterrupted):
  """The diagnostic encodes the audio through the bridge; evaluation reads the cached
  codes."""
  workdir, full = uninterrupted
  config = load_run_config(workdir)
  metrics = evaluation.evaluate(config, workdir=workdir, split="test", perceptual=False,
                                reuse=full["run"])["metrics"]
  run = build_run(config, {"test": latent_structure.KINDS}, reuse=full["run"])
  result = latent_structure.measure(run.codec, run.sources["test"], n=8)
  quantized = result["quantized"]
  assert result["n"] == 8
  assert quantized["id_copy"] == metrics["id_latent_mixture"]
  for k in ("cos_mix_attended", "cos_mix_unattended"):
    assert abs(quantized[k] - metrics[k]) < 1e-5, (k, quantized[k], metrics[k])


def test_demo_recipe_trains_end_to_end(tiny_dataset, tmp_path):
  """The EEG recipe (selector, PIT and envelope terms, waveform curriculum) in the loop,
  its waveform stage judging the mixture masked by the decoded streams."""
  root, _ = tiny_dataset
  config = train_config(root, **{"model.selector": "correlation", "model.eeg_kernel": 16,
                                 "model.select_window": "trial", "lambda_env": 1.0,
                                 "lambda_sep": 1.0, "lambda_sep_env": 5.0,
                                 "model.mix_input": "continuous",
                                 "model.target_latent": "continuous",
                                 "model.mixture_consistency": True,
                                 "model.select_decision": "hard",
                                 "codec.cache_dir": str(tmp_path / "codes"),
                                 "train.waveform_start": 3, "train.eval_every": 3,
                                 "train.cue_curriculum_steps": 4, "lambda_select": 0.5,
                                 "lambda_sisdr": 0.5, "lambda_env_contrast": 0.5,
                                 "train.waveform_output": "attended_stream_masked",
                                 "model.output_waveform": "mixture_mask",
                                 "model.mask_floor": 0.2,
                                 "train.waveform_ramp_steps": 2,
                                 "train.waveform_lr_scale": 0.1})
  workdir = str(tmp_path / "recipe")
  result = loop.train_and_evaluate(config, workdir)
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))
          if json.loads(l)["split"] == "train"]
  assert result["step"] == 6
  # Curriculum: waveform terms and the discriminator only from step waveform_start.
  assert all("loss_mel" not in r and "d_loss" not in r for r in rows[:3])
  assert all("loss_mel" in r and "d_loss" in r for r in rows[3:])
  # The waveform stage's learning rate: train.waveform_lr_scale times the latent stage's.
  np.testing.assert_allclose([r["lr"] for r in rows[3:]], 0.1 * rows[0]["lr"], rtol=1e-6)
  # The SI-SDR term (negative dB) of the held attended stream's decode.
  assert all(np.isfinite(r["loss_sisdr"]) and abs(r["loss_sisdr"]) < 100 for r in rows[3:])
  # Cue curriculum: the oracle's share of the selector's cue, 1 -> 0 over 4 steps.
  np.testing.assert_allclose([r["cue_oracle_weight"] for r in rows], [1, .75, .5, .25, 0, 0])
  val_rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))
              if json.loads(l)["split"] == "val"]
  # The best checkpoint is the waveform stage's (step 6), whatever the latent loss.
  assert [r["step"] for r in val_rows] == [3, 6]
  assert os.listdir(os.path.join(workdir, "best")) == ["6"]
  # Validation reports identification (the val split has the competing talker).
  assert val_rows and all(0 <= r["id_latent"] <= 1 for r in val_rows)
  for r in rows:
    assert np.isfinite(r["loss_sep"]) and -1 <= r["loss_sep_env"] <= 1
    assert 0 < r["loss_select"] < 10           # a two-way cross-entropy: ln 2 at chance
    assert 0 < r["loss_env_contrast"] < 21     # the same over correlations / 0.1
    # The gradient reaching the EEG encoder is logged, nonzero and part of the total.
    assert 0 < r["g_grad_norm_eeg"] < r["g_grad_norm"]
  assert "select_scale" in result["state"]["g"]["params"]
  # Evaluation needs no target latents (continuous targets are training-only fields).
  # One run (codec, models, compiled programs) for the three evaluations, as make demo.
  first = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                              perceptual=False, reuse=result["run"])
  metrics = first["metrics"]
  assert np.isfinite(metrics["stream_r_own"])
  assert first["out_dir"].endswith("val_none_masked_floor0.2") and first["mask_floor"] == 0.2
  # One identification: validation's (last step) is evaluation's on the same checkpoint.
  assert metrics["id_latent"] == pytest.approx(val_rows[-1]["id_latent"])
  # The oracle-cue diagnostic: the selector's cue is the attended talker's envelope.
  oracle = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                               ablation="oracle_cue", perceptual=False,
                               reuse=first["run"])["metrics"]
  assert oracle["id_cue_true_envelopes"] == 1.0
  assert oracle["cue_r_attended"] > max(metrics["cue_r_attended"], 0.8)
  # The oracle-norm diagnostic: the same directions (scale-free latent metrics),
  # decoded at the attended talker's frame norms (another waveform).
  normed = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                               ablation="oracle_norm", perceptual=False,
                               reuse=first["run"])["metrics"]
  assert normed["cos_attended"] == pytest.approx(metrics["cos_attended"], rel=1e-6)
  assert normed["si_sdr_oracle"] == pytest.approx(metrics["si_sdr_oracle"], rel=1e-6)
  assert abs(normed["si_sdr"] - metrics["si_sdr"]) > 1e-3
  # model.output_waveform="mixture_mask": evaluation's output is the mixture through
  # the ratio mask of the decoded selected and competing streams, rebuilt here from
  # the prediction's parts.
  from neurocodec_jax import codec, mixture_mask  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.data import eval_dataset  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.metrics import HOST_FIELDS, make_metrics  # pylint: disable=g-import-not-at-top
  masked, run = config, first["run"]
  state, _ = run.restore_generator(workdir=workdir, which="latest")
  batch = next(iter(eval_dataset(run.sources["val"], run.local_batch)))
  wave = make_metrics(run, target="quantized", references=True)(state, batch)["wave"]
  device = {k: v for k, v in batch.items() if k not in HOST_FIELDS}
  z, _, aux = steps.predict(run.models, state, device, run.frozen, return_aux=True)
  n_q = masked.codec.n_quantizers_eval
  decode = lambda z: np.asarray(run.models.decode(
      run.frozen["decoder"], codec.output_latent(run.frozen["quantizer"], z, True, n_q)))[:, 0]
  want = mixture_mask.ratio_mask(batch["noisy"][:, 0], decode(z), decode(aux["competing"]),
                                 masked.model.mask_power, masked.model.mask_floor)
  np.testing.assert_allclose(wave, want, atol=1e-5)
  assert np.abs(wave - decode(z)).max() > 1e-3
  # Extraction of one trial-long recording outputs the same masked mixture.
  from neurocodec_jax import extraction  # pylint: disable=g-import-not-at-top
  got = extraction.extract(run, state, batch["noisy"][0, 0], batch["eeg"][0])["wave"]
  np.testing.assert_allclose(got, wave[0], atol=1e-4)


@pytest.mark.slow                   # trains a selector model, compiles three new programs
def test_refined_mask_through_the_cli_evaluation_and_extraction(tiny_dataset, tmp_path):
  """model.output_waveform="refined_mask": a refiner trained for 0 steps (its last
  layer starts at zero) outputs the floored ratio mask through `cli.refine`,
  evaluation and extraction; `cli.refine` records a back-off chosen on val, which
  `use_refiner` applies; backed off everywhere with the whole share, the mixture;
  trained two steps, something else."""
  from neurocodec_jax import extraction  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.cli import refine, use_refiner  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.models import refiner  # pylint: disable=g-import-not-at-top
  root, _ = tiny_dataset
  config = train_config(root, **{"model.selector": "correlation", "model.eeg_kernel": 16,
                                 "model.select_window": "trial", "lambda_env": 1.0,
                                 "lambda_sep": 1.0, "model.mix_input": "continuous",
                                 "model.mixture_consistency": True,
                                 "model.select_decision": "hard",
                                 "codec.cache_dir": str(tmp_path / "codes"),
                                 "lambda_mel": 0.0, "lambda_adv": 0.0, "lambda_feat": 0.0,
                                 "model.output_waveform": "mixture_mask",
                                 "model.mask_floor": 0.2, "train.max_steps": 2,
                                 "train.eval_every": -1})
  workdir = str(tmp_path / "selector")
  result = loop.train_and_evaluate(config, workdir)
  masked = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                               perceptual=False, reuse=result["run"])
  path = os.path.join(workdir, "refiner.msgpack")
  args = ["--workdir", workdir, "--which", "latest", "--n_trials", "8", "--width", "8",
          "--layers", "1"]
  assert refine.main(args + ["--steps", "0"]) == 0
  back_off = refiner.chosen_back_off(path)         # chosen on val, applied by use_refiner
  assert back_off["n"] == len(masked["run"].sources["val"])
  chosen = config.copy_and_resolve_references()
  use_refiner(chosen, path)
  backed = evaluation.evaluate(chosen, workdir=workdir, split="val", which="latest",
                               perceptual=False, reuse=masked["run"])
  assert backed["refiner"] == path
  if back_off["unsure_margin"] > 0:
    assert (backed["unsure_margin"], backed["unsure_mix"]) == (back_off["unsure_margin"],
                                                                back_off["unsure_mix"])
  refined_config = set_fields(config.copy_and_resolve_references(),
                              **{"model.output_waveform": "refined_mask", "model.refiner": path})
  refined = evaluation.evaluate(refined_config, workdir=workdir, split="val", which="latest",
                                perceptual=False, reuse=masked["run"])
  assert refined["out_dir"].endswith("val_none_refined") and refined["refiner"] == path
  np.testing.assert_allclose(refined["metrics"]["si_sdr"], masked["metrics"]["si_sdr"],
                             atol=1e-4)
  state, _ = masked["run"].restore_generator(workdir=workdir, which="latest")
  source = masked["run"].sources["val"][0]
  mixture, eeg = np.asarray(source["noisy"])[0], np.asarray(source["eeg"])
  want = extraction.extract(masked["run"], state, mixture, eeg)["wave"]
  got = extraction.extract(refined["run"], state, mixture, eeg)["wave"]
  np.testing.assert_allclose(got, want, atol=1e-4)
  # Backing off everywhere with the mixture's whole share outputs the mixture.
  everywhere = set_fields(refined_config.copy_and_resolve_references(),
                          **{"model.unsure_margin": 1e9, "model.unsure_mix": 1.0})
  mixture_out = evaluation.evaluate(everywhere, workdir=workdir, split="val", which="latest",
                                    perceptual=False, reuse=refined["run"])
  assert mixture_out["out_dir"].endswith("val_none_refined_unsure1e+09x1")
  np.testing.assert_allclose(mixture_out["metrics"]["si_sdr"],
                             mixture_out["metrics"]["si_sdr_mixture"], atol=1e-4)
  got = extraction.extract(mixture_out["run"], state, mixture, eeg)["wave"]
  inner = slice(2000, -2000)      # the windows' overlap-add weights aside
  np.testing.assert_allclose(got[inner], mixture[inner], atol=1e-4)
  # Trained two steps, it departs from the mask (0 steps wrote no train state, so
  # this trains anew).
  assert refine.main(args + ["--steps", "2"]) == 0
  trained = evaluation.evaluate(refined_config, workdir=workdir, split="val", which="latest",
                                perceptual=False, reuse=refined["run"])
  assert abs(trained["metrics"]["si_sdr"] - masked["metrics"]["si_sdr"]) > 1e-4


def test_cosine_schedule_with_default_max_steps_trains(tiny_dataset, tmp_path):
  """train.schedule=cosine with train.max_steps=-1: the rate decays over the epochs'
  steps (it was 0 from the second step on)."""
  root, _ = tiny_dataset
  config = train_config(root, **{"train.schedule": "cosine", "train.max_steps": -1,
                                 "epochs": 2, "lambda_mel": 0.0, "lambda_adv": 0.0,
                                 "lambda_feat": 0.0, "train.eval_every": -1})
  workdir = str(tmp_path / "cosine")
  result = loop.train_and_evaluate(config, workdir)
  rates = [json.loads(l)["lr"] for l in open(os.path.join(workdir, "metrics.jsonl"))
           if json.loads(l)["split"] == "train"]
  total = result["step"]
  assert total == 2 * 4 and len(rates) == total          # 16 trials, batch 4, 2 epochs
  assert rates[0] == pytest.approx(config.lr)
  assert all(a > b > 0 for a, b in zip(rates, rates[1:]))   # decaying, never 0 in the run


def test_extract_a_recording_in_every_eeg_format(uninterrupted, tmp_path, capsys):
  """``neurocodec_jax.cli.extract`` on a recording longer than a window, from a wav at
  another rate and EEG as .npy (time-major, volts), .h5 and .fif (MNE) at 256 Hz."""
  import h5py  # pylint: disable=g-import-not-at-top
  import mne  # pylint: disable=g-import-not-at-top
  import soundfile as sf  # pylint: disable=g-import-not-at-top
  from neurocodec_jax.cli import extract  # pylint: disable=g-import-not-at-top
  workdir, _ = uninterrupted
  config = load_run_config(workdir)
  rng = np.random.default_rng(0)
  seconds, channels = 2.7, config.eeg_channels
  sf.write(str(tmp_path / "mix.wav"), 0.1 * rng.standard_normal(int(seconds * 22050)), 22050)
  eeg = 1e-5 * rng.standard_normal((int(seconds * 256) + 10, channels))      # volts
  np.save(tmp_path / "eeg.npy", eeg)
  with h5py.File(tmp_path / "eeg.h5", "w") as f:
    f.create_dataset("eeg", data=eeg.T * 1e6)                                # microvolts
  info = mne.create_info([f"E{i}" for i in range(channels)], 256.0, "eeg")
  mne.io.RawArray(eeg.T, info, verbose=False).save(tmp_path / "eeg_raw.fif", verbose=False)
  sr = config.codec.arch.sample_rate
  for name, extra in (("eeg.npy", ["--eeg_rate", "256"]), ("eeg.h5", ["--eeg_rate", "256"]),
                      ("eeg_raw.fif", [])):
    out = tmp_path / f"out_{name}.wav"
    assert extract.main(["--workdir", workdir, "--which", "latest", "--mixture",
                         str(tmp_path / "mix.wav"), "--eeg", str(tmp_path / name),
                         "--out", str(out)] + extra) == 0
    wave, rate = sf.read(out)
    assert rate == sr and abs(len(wave) - seconds * sr) <= 1 and np.isfinite(wave).all()
    assert os.path.getsize(str(out)[:-4] + ".png") > 0
  # Bad inputs: one line naming the file and what was expected.
  np.save(tmp_path / "bad.npy", eeg[:, :channels - 1])
  for argv, message in (
      (["--eeg", str(tmp_path / "bad.npy"), "--eeg_rate", "256"], "the model takes"),
      (["--eeg", str(tmp_path / "eeg.npy")], "pass --eeg_rate"),
      (["--eeg", str(tmp_path / "eeg.txt"), "--eeg_rate", "256"], "EEG format .txt"),
      (["--eeg", str(tmp_path / "eeg.npy"), "--eeg_rate", "256", "--output_waveform",
        "mixture_mask"], "needs a selector model")):
    with pytest.raises(SystemExit) as e:
      extract.main(["--workdir", workdir, "--mixture", str(tmp_path / "mix.wav"),
                    "--out", str(tmp_path / "x.wav")] + argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--mute-audio"]
# Run in the page once it has loaded: each player's file is fetched (synchronously: a
# media element's own metadata load is not bound to the headless run's time budget)
# and must be a RIFF/WAVE file; each image must have decoded. The result is the title.
LOAD_CHECK = """<script>
window.addEventListener('load', () => {
  const audios = [...document.querySelectorAll('audio')];
  const images = [...document.querySelectorAll('img')];
  let ok = 0, failed = 0;
  for (const a of audios) {
    try {
      const xhr = new XMLHttpRequest();
      xhr.open('GET', a.src, false);
      xhr.overrideMimeType('text/plain; charset=x-user-defined');
      xhr.send();
      const head = xhr.responseText.slice(0, 12);
      (head.startsWith('RIFF') && head.slice(8) === 'WAVE') ? ok++ : failed++;
    } catch (e) { failed++; }
  }
  document.title = `audio ${ok}/${audios.length} failed ${failed} ` +
      `images ${images.filter(i => i.complete && i.naturalWidth > 0).length}/${images.length}`;
});
</script>"""


def test_report_renders_with_its_players_and_images(uninterrupted, tmp_path):
  """report.html in a real browser (headless Chromium): every audio player's file is
  there and a WAV, every image decodes, from file:// with relative paths."""
  import shutil  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import re  # pylint: disable=g-import-not-at-top
  from neurocodec_jax import report  # pylint: disable=g-import-not-at-top
  workdir, full = uninterrupted
  config = load_run_config(workdir)
  result = evaluation.evaluate(config, workdir=workdir, split="test", num_samples=2,
                               out_dir=str(tmp_path / "eval" / "test_none"), reuse=full["run"])
  page = report.write_report(result["out_dir"])
  text = open(page).read()
  assert text.count("<audio") == 6 and text.count("<img") == 2 and "ceiling: codec oracle" in text
  assert "http://" not in text and "https://" not in text            # self-contained
  browser = shutil.which("chromium") or shutil.which("chromium-browser")
  if browser is None:
    pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
  check = os.path.join(result["out_dir"], "report_check.html")
  with open(check, "w") as f:
    f.write(text.replace("</body>", LOAD_CHECK + "</body>"))
  proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                         "--allow-file-access-from-files", "--virtual-time-budget=10000",
                         "--dump-dom", "file://" + check],
                        capture_output=True, text=True, timeout=120)
  title = re.search(r"<title>(.*?)</title>", proc.stdout)
  assert title and title.group(1) == "audio 6/6 failed 0 images 2/2", (
      title and title.group(1), proc.stderr[-1500:])
