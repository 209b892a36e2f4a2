"""End to end on a tiny config: train, checkpoint, resume exactly, evaluate; 8 devices."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from neurocodec_jax import evaluation, latent_structure
from neurocodec_jax.configs.saved import load_run_config
from neurocodec_jax.run import build_run
from neurocodec_jax import training as loop
from neurocodec_jax.train import steps
from tests.conftest import record_error, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
  initial, init_state = [], steps.init_state

  def keep_initial(*args, **kwargs):
    state = init_state(*args, **kwargs)
    initial.append(jax.tree.map(np.array, state))    # copies: the step donates buffers
    return state

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(steps, "init_state", keep_initial)
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


# ------------------------------------------------------- data parallelism ----

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
  state = jax.device_put(steps_lib.init_state(config, run.models, run.example, frozen,
                                              config.seed), rep)
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
  param_err = {}
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(one)[0], jax.tree.leaves(eight)):
    name = jax.tree_util.keystr(path)
    param_err[name] = float(np.max(np.abs(a - b)) / max_update)
  kept = {k: v for k, v in param_err.items() if not any(g in k for g in GRADIENT_FREE)}
  # Relative differences, except the envelope loss: a Pearson correlation (scale 1)
  # that starts near 0 (0.0017 here), where a relative error only measures rounding
  # of the sum (4e-8 absolute); it is compared in absolute terms.
  scale = lambda k, v: 1.0 if k == "loss_envelope" else abs(v) + 1e-12
  metric_err = max(abs(x[k] - y[k]) / scale(k, x[k])
                   for x, y in zip(m1, m8) for k in x if k != "finite")
  # Validation: the latent loss relative, the SI-SDR in dB.
  val_err = dict(latent_loss=float(np.max(np.abs(v1["latent_loss"] / v8["latent_loss"] - 1))),
                 si_sdr_db=float(np.max(np.abs(v1["si_sdr"] - v8["si_sdr"]))))
  return dict(params=max(kept.values()), metrics=metric_err, val=val_err,
              excluded=sorted(set(param_err) - set(kept)))


def _compare_on_eight_devices(root: str, waveform: bool) -> dict:
  script = (
      "import json, jax\n"
      "from tests.test_train import compare_devices\n"
      "assert len(jax.devices()) == 8, jax.devices()\n"
      f"print(json.dumps(compare_devices({root!r}, waveform={waveform})))\n")
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


# Measured (demo codec sizes): losses/gradient norms relative and
# parameters in units of the update bound (2 x lr): latent and envelope terms
# 1.2e-7 / 6.2e-4; with the mel, adversarial and feature terms and the
# discriminator step on the JAX codec (the torch callback is refused on several CPU
# devices) 5.7e-6 / 4.0e-3, the latter in the Mamba x_proj kernel (7.1e-6 / 1.6e-3
# since the decoder's weights are an argument, not constants XLA folds). The largest
# parameter differences are entries whose gradient is near Adam's epsilon; a
# gradient not averaged over the devices would change Adam's normalised update of
# most entries by O(lr), i.e. O(1) here (reasoned from Adam's update, not measured
# with such a bug). Validation on the next batch (the decode on one device
# with the torch codec, sharded with the JAX one): latent loss
# 3.6e-7 / 4.8e-7 relative, SI-SDR 3.8e-6 / 7.6e-6 dB (the parameters differ as above).
@pytest.mark.parametrize("waveform, params_bound", [(False, 3e-3), (True, 2e-2)],
                         ids=["latent", "waveform_jax_codec"])
def test_eight_devices_equal_one_device(tiny_dataset, waveform, params_bound):
  root, _ = tiny_dataset
  err = _compare_on_eight_devices(root, waveform=waveform)
  name = "train step, 8 vs 1 device" + (", waveform" if waveform else "")
  print(f"{name}, 2 steps: max relative difference of losses/grad norms "
        f"{err['metrics']:.2e}, of parameters {err['params']:.2e} of 2 x lr "
        f"(excluding gradient-free {err['excluded']}); validation: {err['val']}")
  assert len(err["excluded"]) == 2          # one key bias (1 layer), one envelope bias
  record_error(name, "parameters / (steps x lr)", err["params"])
  record_error(name, "losses, grad norms (relative)", err["metrics"])
  record_error(name, "validation latent loss (relative)", err["val"]["latent_loss"])
  record_error(name, "validation SI-SDR (dB)", err["val"]["si_sdr_db"])
  assert err["metrics"] < 1e-5
  assert err["params"] < params_bound
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


def test_demo_recipe_trains_end_to_end(tiny_dataset, tmp_path):
  """The EEG recipe (selector, PIT and envelope terms, waveform curriculum) in the loop."""
  root, _ = tiny_dataset
  config = train_config(root, **{"model.selector": "correlation", "model.eeg_kernel": 16,
                                 "model.select_window": "trial", "lambda_env": 1.0,
                                 "lambda_sep": 1.0, "lambda_sep_env": 5.0,
                                 "model.mix_input": "continuous",
                                 "model.target_latent": "continuous",
                                 "model.mixture_consistency": True,
                                 "model.select_decision": "hard",
                                 "codec.cache_dir": str(tmp_path / "codes"),
                                 "train.waveform_start": 3, "train.eval_every": 6,
                                 "train.cue_curriculum_steps": 4, "lambda_select": 0.5,
                                 "lambda_sisdr": 0.5,
                                 "train.waveform_output": "attended_stream",
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
  # Validation reports identification (the val split has the competing talker).
  assert val_rows and all(0 <= r["id_latent"] <= 1 for r in val_rows)
  for r in rows:
    assert np.isfinite(r["loss_sep"]) and -1 <= r["loss_sep_env"] <= 1
    assert 0 < r["loss_select"] < 10           # a two-way cross-entropy: ln 2 at chance
    # The gradient reaching the EEG encoder is logged, nonzero and part of the total.
    assert 0 < r["g_grad_norm_eeg"] < r["g_grad_norm"]
  assert "select_scale" in result["state"]["g"]["params"]
  # Evaluation needs no target latents (continuous targets are training-only fields).
  metrics = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                                perceptual=False)["metrics"]
  assert np.isfinite(metrics["stream_r_own"])
  # One identification: validation's (last step) is evaluation's on the same checkpoint.
  assert metrics["id_latent"] == pytest.approx(val_rows[-1]["id_latent"])
  # The oracle-cue diagnostic: the selector's cue is the attended talker's envelope.
  oracle = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                               ablation="oracle_cue", perceptual=False)["metrics"]
  assert oracle["id_cue_true_envelopes"] == 1.0
  assert oracle["cue_r_attended"] > max(metrics["cue_r_attended"], 0.8)
  # The oracle-norm diagnostic: the same directions (scale-free latent metrics),
  # decoded at the attended talker's frame norms (another waveform).
  normed = evaluation.evaluate(config, workdir=workdir, split="val", which="latest",
                               ablation="oracle_norm", perceptual=False)["metrics"]
  assert normed["cos_attended"] == pytest.approx(metrics["cos_attended"], rel=1e-6)
  assert normed["si_sdr_oracle"] == pytest.approx(metrics["si_sdr_oracle"], rel=1e-6)
  assert abs(normed["si_sdr"] - metrics["si_sdr"]) > 1e-3


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
      (["--eeg", str(tmp_path / "eeg.txt"), "--eeg_rate", "256"], "EEG format .txt")):
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
