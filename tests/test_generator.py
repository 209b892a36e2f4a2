"""EEG encoder and the NeuroCodec generator: supports, shapes, norms, streaming, causality."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from neurocodec_jax.configs import neurocodec
from neurocodec_jax import codec
from neurocodec_jax.models import cue, eeg_encoder
from neurocodec_jax.models.generator import NeuroCodec, stream_mask
from tests.conftest import normwise_error, original_architecture, set_fields
from neurocodec_jax.models.layers import Snake


def supports_by_definition(adj, k):
  """float64 reference written from the definitions, not from our code: A = relu(adj)
  off the diagonal, symmetrized; L = I - D^-1/2 A D^-1/2 entry by entry; L~ = 2 L /
  lambda_max - I (lambda_max = 2); T_k(L~) = V cos(k arccos(Lambda)) V^T from L~'s
  eigendecomposition (its eigenvalues lie in [-1, 1]), not the recurrence."""
  n = len(adj)
  a = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      if i != j:
        a[i, j] = max(float(adj[i, j]), 0.0) + max(float(adj[j, i]), 0.0)
  deg = a.sum(1)
  lap = np.eye(n)
  for i in range(n):
    for j in range(n):
      if a[i, j]:
        lap[i, j] -= a[i, j] / np.sqrt(deg[i] * deg[j])
  lam, v = np.linalg.eigh(2 * lap / 2.0 - np.eye(n))
  theta = np.arccos(np.clip(lam, -1, 1))
  return np.stack([(v * np.cos(j * theta)) @ v.T for j in range(k)])


def test_graph_supports_of_a_hand_computed_graph():
  # relu drops the negatives and the diagonal; A + A^T gives edges 0-1 (weight 1 + 3)
  # and 0-2 (1); node 3 is isolated. Degrees 5, 4, 1, 0.
  adj = np.array([[9., 1., -2., -1.], [3., 7., 0., 0.], [1., 0., 0., 0.], [-3., 0., -1., 2.]])
  s5 = np.sqrt(5)
  t1 = -np.array([[0, 2 / s5, 1 / s5, 0], [2 / s5, 0, 0, 0], [1 / s5, 0, 0, 0], [0, 0, 0, 0]])
  t2 = np.array([[1, 0, 0, 0], [0, .6, .8, 0], [0, .8, -.6, 0], [0, 0, 0, -1]])   # 2 T1^2 - I
  ours = eeg_encoder.chebyshev_supports(eeg_encoder.normalized_laplacian(jnp.asarray(adj, jnp.float32)), 3)
  np.testing.assert_allclose(ours, np.stack([np.eye(4), t1, t2]), rtol=0, atol=1e-6)
  np.testing.assert_allclose(supports_by_definition(adj, 3), ours, rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [128, 64])
def test_graph_supports_match_the_definition(channels):
  adj = np.random.default_rng(channels).standard_normal((channels, channels)).astype(np.float32)
  ours = eeg_encoder.chebyshev_supports(eeg_encoder.normalized_laplacian(jnp.asarray(adj)), 3)
  # float32 vs float64: max abs error 7.7e-8 over 12 graphs of 16-128 channels (entries <= 1).
  np.testing.assert_allclose(ours, supports_by_definition(adj.astype(np.float64), 3), rtol=0, atol=1e-6)


def _config(preset="demo", **kw):
  c = neurocodec.get_config(preset)
  if preset == "demo":
    original_architecture(c)
  for k, v in kw.items():
    c[k] = v
  return c


@pytest.mark.parametrize("channels", [128, 64])
def test_encoder_shapes_and_eval_determinism(channels):
  enc = eeg_encoder.EEGEncoder(eeg_dim=64, act="snake", dropout=0.3)
  eeg = jnp.asarray(np.random.default_rng(0).standard_normal((2, channels, 256)), jnp.float32)
  v = enc.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, eeg, train=False)
  (feats, env) = enc.apply(v, eeg, train=False)
  assert feats.shape == (2, 64, 249) and env.shape == (2, 249)
  again, _ = enc.apply(v, eeg, train=False)
  np.testing.assert_array_equal(feats, again)
  (t1, _), _ = enc.apply(v, eeg, train=True, rngs={"dropout": jax.random.PRNGKey(5)},
                         mutable=["batch_stats"])
  (t2, _), _ = enc.apply(v, eeg, train=True, rngs={"dropout": jax.random.PRNGKey(6)},
                         mutable=["batch_stats"])
  assert not np.allclose(t1, t2)            # dropout is on in training


@pytest.mark.parametrize("kernel", [8, 32])
def test_encoder_sizes_are_what_the_encoder_does(kernel):
  """``EEGEncoder.output_length`` and ``receptive_field`` (which streaming reads) against
  the encoder itself: the EEG samples each output moves with (its Jacobian), eval mode."""
  n = 80
  first, last = eeg_encoder.EEGEncoder.receptive_field(kernel)
  assert (first, last) == (-3, kernel + 2)
  enc = eeg_encoder.EEGEncoder(eeg_dim=8, act="snake", dropout=0.3, kernel=kernel)
  eeg = jnp.asarray(np.random.default_rng(kernel).standard_normal((1, 4, n)), jnp.float32)
  v = enc.init(jax.random.PRNGKey(0), eeg, train=False)
  feats, env = enc.apply(v, eeg, train=False)
  n_out = eeg_encoder.EEGEncoder.output_length(n, kernel)
  assert feats.shape == (1, 8, n_out) and env.shape == (1, n_out) and n_out == n - kernel + 1
  jac = jax.jit(jax.jacfwd(lambda x: enc.apply(v, x, train=False)[0]))(eeg)  # [1, 8, T', 1, 4, n]
  moves = np.asarray(jnp.abs(jac).sum(axis=(0, 1, 3, 4))) > 0          # [T', n]
  for j in range(n_out):
    expected = np.zeros(n, bool)
    expected[max(j + first, 0):min(j + last, n - 1) + 1] = True
    np.testing.assert_array_equal(moves[j], expected, err_msg=f"output {j}")


def test_encoder_linear_branch_is_a_backward_model_inside_the_receptive_field():
  """``linear_branch``: zero at init (the original's envelope), then the envelope plus
  sum_c sum_l w[c, l] x_norm[c, j + l], x_norm the electrode-normalized EEG; its lags
  stay inside ``receptive_field`` (streaming's look-ahead is unchanged)."""
  kernel, n, c = 8, 40, 4
  eeg = jnp.asarray(np.random.default_rng(3).standard_normal((2, c, n)) * 5 + 1, jnp.float32)
  plain = eeg_encoder.EEGEncoder(eeg_dim=8, act="snake", dropout=0.0, kernel=kernel)
  enc = eeg_encoder.EEGEncoder(eeg_dim=8, act="snake", dropout=0.0, kernel=kernel,
                               linear_branch=True)
  v = enc.init(jax.random.PRNGKey(0), eeg, train=False)
  assert v["params"]["linear_branch"].shape == (1, c, kernel)
  np.testing.assert_array_equal(v["params"]["linear_branch"], 0.0)
  without = {**v, "params": {k: p for k, p in v["params"].items() if k != "linear_branch"}}
  _, base = plain.apply(without, eeg, train=False)
  np.testing.assert_array_equal(enc.apply(v, eeg, train=False)[1], base)
  w = np.random.default_rng(4).standard_normal((1, c, kernel)).astype(np.float32)
  # Running statistics other than init's (0, 1), so the branch's input is checked too.
  rng = np.random.default_rng(5)
  stats = {"mean": jnp.asarray(rng.standard_normal(c), jnp.float32),
           "var": jnp.asarray(rng.uniform(0.5, 4.0, c), jnp.float32)}
  v = {"params": {**v["params"], "linear_branch": jnp.asarray(w)},
       "batch_stats": {"electrode_norm": stats}}
  _, base = plain.apply({**v, "params": without["params"]}, eeg, train=False)
  _, env = enc.apply(v, eeg, train=False)
  stats = v["batch_stats"]["electrode_norm"]
  bn = v["params"]["electrode_norm"]
  normed = ((np.asarray(eeg) - np.asarray(stats["mean"])[None, :, None])
            / np.sqrt(np.asarray(stats["var"])[None, :, None] + 1e-5)
            * np.asarray(bn["scale"])[None, :, None] + np.asarray(bn["bias"])[None, :, None])
  expected = np.asarray(base) + np.stack(
      [np.einsum("cl,bcl->b", w[0], normed[:, :, j:j + kernel]) for j in range(n - kernel + 1)],
      axis=1)
  np.testing.assert_allclose(env, expected, rtol=1e-5, atol=1e-5)
  jac = jax.jacfwd(lambda x: enc.apply(v, x, train=False)[1])(eeg[:1])   # [1, T', 1, c, n]
  moves = np.asarray(jnp.abs(jac).sum(axis=(0, 2, 3))) > 0                # [T', n]
  first, last = eeg_encoder.EEGEncoder.receptive_field(kernel)
  for j in range(n - kernel + 1):
    outside = np.ones(n, bool)
    outside[max(j + first, 0):min(j + last, n - 1) + 1] = False
    assert not moves[j][outside].any(), f"output {j}"
    assert moves[j][j:j + kernel].all(), f"output {j}"


def test_encoder_trial_norm_ignores_channel_gains_and_refuses_streaming():
  """``norm="trial"`` z-scores each window's channels: the encoder's outputs do not move
  when every electrode gets its own gain and offset (a subject's other scales), where
  BatchNorm's running statistics pass them on; the model refuses to stream with it."""
  c, n = 4, 40
  rng = np.random.default_rng(6)
  eeg = jnp.asarray(rng.standard_normal((2, c, n)), jnp.float32)
  gain = jnp.asarray(rng.uniform(0.2, 5.0, (1, c, 1)), jnp.float32)
  offset = jnp.asarray(rng.standard_normal((1, c, 1)) * 3, jnp.float32)
  for norm, invariant in (("trial", True), ("batch", False)):
    enc = eeg_encoder.EEGEncoder(eeg_dim=8, act="snake", dropout=0.0, norm=norm)
    v = enc.init(jax.random.PRNGKey(0), eeg, train=False)
    assert ("batch_stats" in v) == (norm == "batch")
    if norm == "trial":        # a learnt affine after the window's statistics, as BatchNorm's
      v = {"params": {**v["params"],
                      "electrode_scale": jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32),
                      "electrode_bias": jnp.asarray(rng.standard_normal(c), jnp.float32)}}
    (f0, e0), (f1, e1) = (enc.apply(v, x, train=False) for x in (eeg, eeg * gain + offset))
    moved = max(float(jnp.abs(f1 - f0).max()), float(jnp.abs(e1 - e0).max()))
    assert (moved < 1e-4) if invariant else (moved > 1e-2), (norm, moved)
  with pytest.raises(ValueError, match="must be one of"):
    eeg_encoder.EEGEncoder(norm="layer").init(jax.random.PRNGKey(0), eeg, train=False)
  config = set_fields(_config(), **{"model.eeg_norm": "trial"})
  model, v, z, eeg = _init(config, frames=30)
  model.apply(v, z, eeg, train=False)
  with pytest.raises(ValueError, match="eeg_norm='batch'"):
    model.apply(v, z, eeg, train=False, streaming=True)
  with pytest.raises(ValueError, match="eeg_norm='batch'"):
    model.apply(v, z, eeg, method=NeuroCodec.stream)


def test_snake_matches_dac_formula():
  x = jnp.linspace(-3, 3, 24).reshape(2, 3, 4)
  y = Snake(axis=1).apply({"params": {"alpha": jnp.array([1.0, 0.5, 2.0])}}, x)
  alpha = np.array([1.0, 0.5, 2.0])[None, :, None]
  np.testing.assert_allclose(y, x + 1 / (alpha + 1e-9) * np.sin(alpha * x) ** 2, rtol=1e-6)


def _init(config, frames=40, eeg_time=96, batch=2):
  model = NeuroCodec.from_config(config)
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.standard_normal((batch, config.codec.arch.latent_dim, frames)), jnp.float32)
  eeg = jnp.asarray(rng.standard_normal((batch, config.eeg_channels, eeg_time)), jnp.float32)
  v = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, z, eeg,
                 train=False)
  return model, v, z, eeg


# Every backbone and activation normalized; unnormalized latents with the default pair
# (the other two pairs in the slow tier: the normalization is independent of both).
@pytest.mark.parametrize("backbone,activation,normalize", [
    ("mamba", "snake", True), ("mamba", "prelu", True), ("transformer", "snake", True),
    ("mamba", "snake", False),
    pytest.param("mamba", "prelu", False, marks=pytest.mark.slow),
    pytest.param("transformer", "snake", False, marks=pytest.mark.slow)])
def test_generator_shapes_norms_jit_grad(backbone, activation, normalize):
  config = _config(backbone=backbone, activation=activation, normalize_latents=normalize)
  model, v, z, eeg = _init(config)
  (z_pred, env), _ = jax.jit(lambda v: model.apply(
      v, z, eeg, train=True, rngs={"dropout": jax.random.PRNGKey(2)}, mutable=["batch_stats"]))(v)
  assert z_pred.shape == z.shape and env.shape == (2, 96 - 7)
  norms = np.linalg.norm(np.asarray(z_pred), axis=1)
  if normalize:
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)
  else:
    assert np.abs(norms - 1).max() > 1e-2
  grads = jax.grad(lambda p: jnp.sum(model.apply(
      {"params": p, "batch_stats": v["batch_stats"]}, z, eeg, train=False)[0] ** 3))(v["params"])
  assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_cocktail_parameter_count(capsys):
  config = neurocodec.get_config("cocktail")
  model = NeuroCodec.from_config(config)
  # The shapes only (eval_shape traces the init, running it took 17 s).
  v = jax.eval_shape(lambda: model.init(
      {"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
      jnp.zeros((1, config.codec.arch.latent_dim, 171)), jnp.zeros((1, config.eeg_channels, 256)),
      train=False))
  n = sum(x.size for x in jax.tree.leaves(v["params"]))
  print(f"cocktail generator parameters: {n:,}")
  assert 3e6 < n < 4e6


@pytest.mark.parametrize("time_aligned_pe,kernel", [(False, 8), (True, 8), (False, 32)])
def test_streaming_frame_by_frame_equals_masked_full_forward(time_aligned_pe, kernel):
  config = _config()
  config.model.stream_lookahead = 4
  config.model.time_aligned_pe, config.model.eeg_kernel = time_aligned_pe, kernel
  model, v, z, eeg = _init(config)
  full, _ = model.apply(v, z, eeg, train=False, streaming=True)
  stepped = model.apply(v, z, eeg, method=NeuroCodec.stream)
  np.testing.assert_allclose(stepped, full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("decision,window,consistency,form,norm", [
    ("soft", "causal", False, "direct", "mixture"), ("hard", "trial", True, "direct", "mixture"),
    ("soft", "causal", False, "mask", "none")])
def test_selector_frame_by_frame_equals_masked_full_forward(decision, window, consistency,
                                                            form, norm):
  """The selector's running correlation from carried sums (``step``) is the causal
  forward's, with its lag; ``select_window="trial"`` streams in the causal form."""
  config = _selector_config(**{"model.select_decision": decision, "model.select_window": window,
                               "model.mixture_consistency": consistency,
                               "model.stream_form": form, "model.output_norm": norm})
  model, v, z, eeg = _init(config, frames=60, eeg_time=160)
  if form == "mask":          # a head that masks (a zero one gives two equal streams)
    params = dict(v["params"], out=dict(v["params"]["out"]))
    params["out"]["kernel"] = jax.nn.initializers.lecun_normal()(
        jax.random.PRNGKey(3), params["out"]["kernel"].shape)
    v = dict(v, params=params)
  assert model.select_lag() > 0
  full, _ = model.apply(v, z, eeg, train=False, streaming=True)
  stepped = model.apply(v, z, eeg, method=NeuroCodec.stream)
  # Relative to the output's scale: masked streams keep the mixture's (up to ~4 here).
  assert normwise_error(stepped, full) < 1e-5


def test_stream_mask_waits_for_the_receptive_field():
  mask = stream_mask(4, 30, frame_seconds=0.02, eeg_rate=128)
  # Feature j needs EEG samples up to j+10. Frame 2 ends at 60 ms (samples 0..7 in):
  # nothing visible; frame 3 at 80 ms (samples 0..10): feature 0 only.
  assert not mask[2].any() and mask[3].sum() == 1 and mask[3, 0]
  assert stream_mask(4, 30, 0.02, 128, lookahead=3)[2].sum() == 1
  mask = stream_mask(10, 30, frame_seconds=0.02, eeg_rate=128)
  assert mask[9].sum() == 16 and mask[9, 15] and not mask[9, 16]   # 200 ms: samples 0..25
  # Kernel 32: up to j+34. Frame 12 ends at 260 ms (samples 0..33), frame 13 at 280 ms (0..35).
  mask = stream_mask(14, 30, frame_seconds=0.02, eeg_rate=128, kernel=32)
  assert not mask[12].any() and mask[13].sum() == 2


@pytest.mark.parametrize("kernel,selector,lookahead", [(8, "none", 0), (32, "none", 4),
                                                       (32, "correlation", 0)])
def test_streaming_sees_each_eeg_sample_from_its_arrival_on(kernel, selector, lookahead):
  """Streaming output frame i depends on exactly the EEG samples taken by the end of
  frame i (plus the look-ahead), once the first feature is complete: no later sample
  (causality) and no arrived one withheld (the mask waits for the encoder's real
  receptive field, for the original kernel and the demo's 32)."""
  config = set_fields(_config(), **{"model.eeg_kernel": kernel, "model.selector": selector,
                                    "model.stream_lookahead": lookahead})
  model, v, z, eeg = _init(config, batch=1)
  n_frames, n = z.shape[-1], eeg.shape[-1]
  w = jnp.asarray(np.random.default_rng(1).standard_normal(z.shape[1]), jnp.float32)
  out = lambda e: model.apply(v, z, e, train=False, streaming=True)[0][0]   # [latent, frames]
  frames = lambda e: w @ out(e)
  moves = np.asarray(jnp.abs(jax.jit(jax.jacrev(frames))(eeg)).sum(axis=(1, 2))) > 0  # [frames, n]
  # Sample k (taken at k / eeg_rate s) has arrived by the end of frame i iff
  # (k - lookahead) / eeg_rate <= (i + 1) hop / sr, in integers.
  arch, rate = config.codec.arch, config.data.eeg_rate
  k, i = np.arange(n)[None, :], np.arange(n_frames)[:, None]
  arrived = (k - lookahead) * arch.sample_rate <= (i + 1) * codec.hop_length(arch) * rate
  last = eeg_encoder.EEGEncoder.receptive_field(kernel)[1]
  expected = arrived & arrived[:, last:last + 1]            # nothing before feature 0 is whole
  assert expected.any() and not expected.all()
  np.testing.assert_array_equal(moves, expected)


@pytest.mark.parametrize("what", ["audio", "eeg"])
def test_streaming_mode_is_causal(what):
  """A burst at 0.6 s leaves every earlier frame unchanged (the future does not reach
  the past) and changes every later one (the past does reach the future)."""
  config = _config()
  model, v, z, eeg = _init(config, frames=50, eeg_time=256)
  base, _ = model.apply(v, z, eeg, train=False, streaming=True)
  t_frame = 30                              # 30 * 20 ms = 0.6 s
  if what == "audio":
    z = z.at[:, :, t_frame].add(5.0)
  else:
    eeg = eeg.at[:, :, 77:85].add(5.0)    # samples taken after 0.6 s (76 is at 0.594 s)
  moved, _ = model.apply(v, z, eeg, train=False, streaming=True)
  np.testing.assert_array_equal(moved[:, :, :t_frame], base[:, :, :t_frame])
  change = np.abs(np.asarray(moved - base)).max(axis=(0, 1))[t_frame:]     # per frame
  if what == "audio":
    # Within the Mamba conv's 4 frames: measured >= 1e-3. Beyond it only the scan's
    # state carries the burst (3.5e-7 .. 1.4e-6; a state that did not carry gives 0).
    assert change[:4].min() > 1e-4 and change[4:].min() > 1e-8, change
  else:
    assert change.min() > 1e-2, change              # attended to from then on: 0.1 .. 0.3


def test_mamba_stack_is_causal_in_audio():
  config = _config()
  model, v, z, eeg = _init(config, frames=30)
  base, _ = model.apply(v, z, eeg, train=False)
  moved, _ = model.apply(v, z.at[:, :, 20].add(5.0), eeg, train=False)
  np.testing.assert_array_equal(moved[:, :, :20], base[:, :, :20])
  # ... and the past reaches every later frame: measured >= 6.4e-4 within the conv's
  # 4 frames, 1.1e-6 .. 3.8e-6 beyond it through the scan's state (0 if it did not carry).
  change = np.abs(np.asarray(moved - base)).max(axis=(0, 1))[20:]
  assert change[:4].min() > 1e-4 and change[4:].min() > 1e-8, change


def test_bidirectional_separator_reads_the_future_and_refuses_streaming():
  """``model.bidirectional``: the backward Mamba is the forward one on reversed frames
  (the same weights make each frame's backward output the forward output of the
  reversed sequence), a change at frame 20 reaches the frames before it, and the
  streaming forms refuse the offline model."""
  from neurocodec_jax.models.generator import Block  # pylint: disable=g-import-not-at-top
  config = set_fields(_config(), **{"model.bidirectional": True})
  model, v, z, eeg = _init(config, frames=30)
  base, _ = model.apply(v, z, eeg, train=False)
  moved, _ = model.apply(v, z.at[:, :, 20].add(5.0), eeg, train=False)
  change = np.abs(np.asarray(moved - base)).max(axis=(0, 1))
  assert change[:20].min() > 1e-8, change
  with pytest.raises(ValueError, match="offline separator"):
    model.apply(v, z, eeg, train=False, streaming=True)
  with pytest.raises(ValueError, match="offline separator"):
    model.apply(v, z, eeg, method=NeuroCodec.stream)
  # One block, backward weights = forward weights: the mixer's output is the forward
  # Mamba of the frames plus the forward Mamba of the reversed frames, reversed.
  mamba = dict(d_state=4, d_conv=4, expand=2)
  one = Block(16, 2, 0.0, "mamba", mamba, 32, bidirectional=True)
  fwd = Block(16, 2, 0.0, "mamba", mamba, 32)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 16))
  kv = jax.random.normal(jax.random.PRNGKey(1), (2, 5, 16))
  p = one.init(jax.random.PRNGKey(2), x, kv, None, train=False)["params"]
  p = dict(p, mixer_backward=p["mixer"])
  q = {k: v for k, v in p.items() if k != "mixer_backward"}
  forward_only = fwd.apply({"params": q}, x, kv, None, train=False)
  y_attn = fwd.apply({"params": q}, x, kv, None, train=False,
                     method=lambda b, x, kv, m, train: x + b.attn(b.attn_norm(x), kv, m,
                                                                   train=train))
  mix = lambda y: fwd.apply({"params": q}, y, method=lambda b, y: b.mixer(b.mixer_norm(y)))
  want = y_attn + mix(y_attn) + mix(y_attn[:, ::-1])[:, ::-1]
  got = one.apply({"params": p}, x, kv, None, train=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(forward_only, got, atol=1e-3)
  with pytest.raises(ValueError, match="needs backbone='mamba'"):
    Block(16, 2, 0.0, "transformer", mamba, 32, bidirectional=True).init(
        jax.random.PRNGKey(2), x, kv, None, train=False)


def test_time_aligned_positions_put_eeg_and_frames_on_one_clock():
  config = _config()
  config.model.time_aligned_pe = True
  model = NeuroCodec.from_config(config)
  pos = model.eeg_positions(249)
  # Feature j is centred at (j + 5) / 128 s; frame i starts at i * hop / sr s.
  frame_seconds = model.frame_seconds
  np.testing.assert_allclose(pos * frame_seconds, (np.arange(249) + 5) / 128, rtol=1e-12)
  config.model.time_aligned_pe = False
  np.testing.assert_array_equal(NeuroCodec.from_config(config).eeg_positions(249), np.arange(249))


def _selector_config(**kw):
  c = _config()
  c.model.selector, c.model.eeg_kernel = "correlation", 16
  return set_fields(c, **kw)


def test_selector_shapes_and_mixture_of_streams():
  model, v, z, eeg = _init(_selector_config())
  z_pred, env, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  assert z_pred.shape == z.shape and env.shape == (2, 96 - 15)
  assert aux["streams"].shape == (2, 2) + z.shape[1:] and aux["weights"].shape == (2, 40, 2)
  np.testing.assert_allclose(np.asarray(aux["weights"]).sum(-1), 1.0, rtol=1e-6)
  mixed = jnp.einsum("bkdf,bfk->bdf", aux["streams"], aux["weights"])
  mixed = mixed / jnp.linalg.norm(mixed, axis=1, keepdims=True)
  np.testing.assert_allclose(z_pred, mixed, rtol=1e-5, atol=1e-6)


def test_selector_mixture_consistency_streams_add_up_to_the_mixture():
  config = _selector_config(**{"model.mixture_consistency": True, "normalize_latents": False})
  model, v, z, eeg = _init(config)
  _, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  np.testing.assert_allclose(np.asarray(aux["streams"]).sum(1), z, rtol=1e-5, atol=1e-5)
  config.model.mixture_consistency = False
  _, _, aux = NeuroCodec.from_config(config).apply(v, z, eeg, train=False, return_aux=True)
  assert np.abs(np.asarray(aux["streams"]).sum(1) - z).max() > 1e-2


def test_selector_hard_decision_outputs_one_stream_at_evaluation():
  config = _selector_config(**{"model.select_decision": "hard"})
  model, v, z, eeg = _init(config)
  z_pred, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  w = np.asarray(aux["weights"])
  assert set(np.unique(w)) <= {0.0, 1.0} and (w.sum(-1) == 1).all()
  picked = np.einsum("bkdf,bfk->bdf", np.asarray(aux["streams"]), w)
  np.testing.assert_allclose(z_pred, picked, rtol=1e-5, atol=1e-6)
  # Training keeps the differentiable softmax.
  _, _, aux = model.apply(v, z, eeg, train=True, return_aux=True, rngs={"dropout": jax.random.PRNGKey(1)},
                          mutable=["batch_stats"])[0]
  assert (np.asarray(aux["weights"]) % 1 != 0).any()


def test_selector_competing_stream_is_the_other_one_at_the_outputs_scale():
  """``aux["competing"]`` (model.output_waveform's mask): the stream not selected,
  scaled as the output is (here the mixture's frame norms)."""
  config = _selector_config(**{"model.select_decision": "hard", "model.output_norm": "mixture"})
  model, v, z, eeg = _init(config)
  z_pred, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  w, streams = np.asarray(aux["weights"]), np.asarray(aux["streams"])
  scale = np.linalg.norm(np.asarray(z), axis=1, keepdims=True)
  np.testing.assert_allclose(z_pred, np.einsum("bkdf,bfk->bdf", streams, w) * scale,
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(aux["competing"], np.einsum("bkdf,bfk->bdf", streams, 1 - w)
                             * scale, rtol=1e-5, atol=1e-5)
  assert not np.allclose(aux["competing"], z_pred, atol=1e-2)


def test_selector_cue_fn_replaces_the_decoded_envelope_as_cue():
  """The cue curriculum's hook: the selector correlates with cue_fn(env), the
  returned env stays the decoded one, and a cue of another shape is refused."""
  model, v, z, eeg = _init(_selector_config())
  _, env, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  _, env2, aux2 = model.apply(v, z, eeg, train=False, return_aux=True, cue_fn=lambda e: -e)
  np.testing.assert_array_equal(env2, env)
  np.testing.assert_allclose(aux2["cue"], -aux["cue"], rtol=1e-6, atol=1e-6)
  # A negated cue flips every correlation: the weights swap streams.
  np.testing.assert_allclose(aux2["weights"], aux["weights"][..., ::-1], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="cue_fn must keep the decoded envelope's shape"):
    model.apply(v, z, eeg, train=False, cue_fn=lambda e: e[:, 1:])


def test_selector_trial_window_uses_one_weight_per_trial():
  model, v, z, eeg = _init(_selector_config(**{"model.select_window": "trial"}))
  _, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  w = np.asarray(aux["weights"])
  np.testing.assert_allclose(w, np.broadcast_to(w[:, -1:], w.shape), rtol=1e-6)


@pytest.mark.slow     # a refuted option no preset uses (31 s); its math: test_cue.py
def test_selector_forward_cue_form_compares_whitened_predicted_responses():
  """``model.cue_form="forward"``: the cue is whitened by each trial's own fit and
  correlated with the response predicted from the stream envelopes with each stream
  attended (attended response an impulse at init, unattended none), whitened alike;
  the response is trained; the form is offline only."""
  config = _selector_config(**{"model.select_window": "trial", "model.cue_form": "forward"})
  model, v, z, eeg = _init(config)
  assert v["params"]["response"].shape == (2, cue.response_taps(model.frame_seconds))
  _, env, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  _, _, plain = NeuroCodec.from_config(set_fields(config, **{"model.cue_form": "backward"})
                                       ).apply(v, z, eeg, train=False, return_aux=True)
  white = cue.whitener(plain["cue"])
  np.testing.assert_allclose(aux["whitener"], white, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(aux["cue"], cue.source(plain["cue"], "forward", white),
                             rtol=1e-5, atol=1e-6)
  compared = cue.compared(aux["stream_env"], "forward", v["params"]["response"], white)
  r = [np.corrcoef(np.asarray(aux["cue"])[i], np.asarray(compared)[i, :, k])[0, 1]
       for i in range(2) for k in (0, 1)]
  np.testing.assert_allclose(aux["logits"][:, -1].reshape(-1),
                             np.asarray(v["params"]["select_scale"]) * np.array(r),
                             rtol=1e-3, atol=1e-4)
  grad = jax.grad(lambda p: model.apply(dict(v, params=p), z, eeg, train=False,
                                        return_aux=True)[2]["logits"].sum())(v["params"])
  assert np.abs(np.asarray(grad["response"])).max() > 0
  with pytest.raises(ValueError, match="streaming needs model.cue_form='backward'"):
    model.apply(v, z, eeg, train=False, streaming=True)
  with pytest.raises(ValueError, match="model.select_window='trial'"):
    _init(_selector_config(**{"model.cue_form": "forward"}))


def test_selector_encoding_cue_form_takes_its_cue_from_the_encoding_model():
  """``model.cue_form="encoding"``: undecided before any training batch; a training call
  fits the encoding model on both talkers' envelopes (batch statistics, no
  parameters), and the selector then correlates its whitened source with each stream's
  predicted response; it needs the talkers in training, refuses streaming and a cue
  curriculum."""
  from neurocodec_jax.models import encoding  # pylint: disable=g-import-not-at-top
  config = _selector_config(**{"model.select_window": "trial", "model.cue_form": "encoding"})
  model, v, z, eeg = _init(config)
  assert "response" not in v["params"] and "encoding" not in v["params"]
  assert float(v["batch_stats"]["encoding"]["count"]) == 0.0
  _, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  np.testing.assert_array_equal(aux["logits"], 0.0)                  # no fit yet
  talkers = jnp.abs(jnp.asarray(np.random.default_rng(1).standard_normal(
      (2, eeg.shape[-1], 2)), jnp.float32))
  with pytest.raises(ValueError, match="both talkers' envelopes"):
    model.apply(v, z, eeg, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                mutable=["batch_stats"])
  _, upd = model.apply(v, z, eeg, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                       mutable=["batch_stats"], talkers=talkers)
  assert float(upd["batch_stats"]["encoding"]["count"]) == 1.0
  v = dict(v, batch_stats=upd["batch_stats"])
  _, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  source, fit = encoding.EncodingModel(model.frame_seconds, model.eeg_rate).apply(
      {"batch_stats": v["batch_stats"]["encoding"]}, eeg, None, z.shape[-1], train=False)
  white = jnp.broadcast_to(fit["whitener"], aux["whitener"].shape)
  np.testing.assert_allclose(aux["cue"], cue.source(source, "encoding", white),
                             rtol=1e-5, atol=1e-6)
  compared = cue.compared(aux["stream_env"], "encoding", fit["response"], white)
  r = [np.corrcoef(np.asarray(aux["cue"])[i], np.asarray(compared)[i, :, k])[0, 1]
       for i in range(2) for k in (0, 1)]
  np.testing.assert_allclose(aux["logits"][:, -1].reshape(-1),
                             np.asarray(v["params"]["select_scale"]) * np.array(r),
                             rtol=1e-3, atol=1e-4)
  with pytest.raises(ValueError, match="streaming needs model.cue_form='backward'"):
    model.apply(v, z, eeg, train=False, streaming=True)
  with pytest.raises(ValueError, match="cue curriculum"):
    model.apply(v, z, eeg, train=False, cue_fn=lambda e: e)
  with pytest.raises(ValueError, match="needs model.selector='correlation'"):
    _init(set_fields(_config(), **{"model.cue_form": "encoding"}))


def test_selector_encoding_per_subject_decodes_each_trial_with_its_subjects_fit():
  """``model.encoding_subjects``: a training call adds each trial to its subject's
  statistics; the selector then compares with that subject's source, responses and
  whitener; without subject ids, the pooled fit. Only the encoding form keeps one."""
  from neurocodec_jax.models import encoding  # pylint: disable=g-import-not-at-top
  config = _selector_config(**{"model.select_window": "trial", "model.cue_form": "encoding",
                               "model.encoding_subjects": 3})
  model, v, z, eeg = _init(config)
  talkers = jnp.abs(jnp.asarray(np.random.default_rng(1).standard_normal(
      (2, eeg.shape[-1], 2)), jnp.float32))
  ids = jnp.array([0, 2])
  _, upd = model.apply(v, z, eeg, train=True, rngs={"dropout": jax.random.PRNGKey(2)},
                       mutable=["batch_stats"], talkers=talkers, subject=ids)
  stats = upd["batch_stats"]["encoding"]
  np.testing.assert_array_equal(stats["subject_count"], [1.0, 0.0, 1.0])
  v = dict(v, batch_stats=upd["batch_stats"])
  own = encoding.EncodingModel(model.frame_seconds, model.eeg_rate, subjects=3)
  for subject in (ids, None):
    _, _, aux = model.apply(v, z, eeg, train=False, return_aux=True, subject=subject)
    source, fit = own.apply({"batch_stats": stats}, eeg, None, z.shape[-1], train=False,
                            subject=subject)
    white = jnp.broadcast_to(fit["whitener"], aux["whitener"].shape)
    np.testing.assert_allclose(aux["cue"], cue.source(source, "encoding", white),
                               rtol=1e-5, atol=1e-6)
    assert aux["response"].shape == ((2,) if subject is not None else ()) + (
        2, cue.response_taps(model.frame_seconds))
  with pytest.raises(ValueError, match="encoding_subjects=3 keeps an encoding model per "
                                       "subject: it needs model.cue_form='encoding'"):
    _init(_selector_config(**{"model.select_window": "trial", "model.cue_form": "forward",
                              "model.encoding_subjects": 3}))


@pytest.mark.parametrize("window", ["causal", "trial"])
def test_selector_streaming_is_causal_in_eeg(window):
  """Streaming: perturbing EEG from sample k on leaves every frame that cannot have
  received it unchanged (both windows: streaming always uses the causal form)."""
  config = _selector_config(**{"model.select_window": window})
  model, v, z, eeg = _init(config)
  k = 60
  eeg2 = eeg.at[:, :, k:].add(5.0)
  a, _ = model.apply(v, z, eeg, train=False, streaming=True)
  b, _ = model.apply(v, z, eeg2, train=False, streaming=True)
  # Frame i has EEG samples up to floor((i + 1) * frame_seconds * rate).
  frame_s = codec.frame_seconds(config.codec.arch)
  first = int(np.ceil(k / (frame_s * config.data.eeg_rate))) - 1
  np.testing.assert_allclose(a[..., :first], b[..., :first], rtol=1e-6, atol=1e-6)
  change = np.abs(np.asarray(a - b)).max(axis=(0, 1))
  assert change[first + 1:].min() > 1e-2, change          # it arrives: measured 0.2 .. 0.4


def test_output_norm_mixture_rescales_frames_only():
  model, v, z, eeg = _init(_config())
  unit, _ = model.apply(v, z, eeg, train=False)
  c = _config()
  c.model.output_norm = "mixture"
  scaled, _ = NeuroCodec.from_config(c).apply(v, z, eeg, train=False)
  np.testing.assert_allclose(scaled, unit * jnp.linalg.norm(z, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)


def test_selector_mask_streams_start_at_half_the_mixture_and_add_up_to_it():
  """stream_form="mask": at initialisation both streams are half the mixture latent
  (the copy-the-input solution); after any change of the head they still add up to
  it; with output_norm="none" the hard decision outputs the stream as it is."""
  config = _selector_config(**{"model.stream_form": "mask", "model.output_norm": "none",
                               "model.select_decision": "hard"})
  model, v, z, eeg = _init(config)
  z_pred, _, aux = model.apply(v, z, eeg, train=False, return_aux=True)
  streams = np.asarray(aux["streams"])
  np.testing.assert_allclose(streams, np.broadcast_to(np.asarray(z)[:, None] / 2, streams.shape),
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(z_pred, np.asarray(z) / 2, rtol=1e-6, atol=1e-6)
  params = jax.tree.map(lambda p: p, v["params"])
  kernel = params["out"]["kernel"]
  params["out"]["kernel"] = jax.random.normal(jax.random.PRNGKey(3), kernel.shape)
  _, _, aux = model.apply(dict(v, params=params), z, eeg, train=False, return_aux=True)
  streams = np.asarray(aux["streams"])
  np.testing.assert_allclose(streams.sum(1), z, rtol=1e-5, atol=1e-5)
  assert np.abs(streams[:, 0] - streams[:, 1]).max() > 0.1
  # Unit output (the default): the same direction, unit frames.
  config.model.output_norm = "unit"
  unit, _ = NeuroCodec.from_config(config).apply(v, z, eeg, train=False)
  np.testing.assert_allclose(unit, z / jnp.linalg.norm(z, axis=1, keepdims=True),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="needs model.selector"):
    _init(set_fields(_config(), **{"model.stream_form": "mask"}))


def _random_quantizer(arch, seed=0):
  rng = np.random.default_rng(seed)
  n, k, d, dim = arch.n_codebooks, arch.codebook_size, arch.codebook_dim, arch.latent_dim
  normal = lambda *shape: jnp.asarray(rng.standard_normal(shape), jnp.float32)
  return dict(codebook=normal(n, k, d), in_w=normal(n, d, dim), in_b=normal(n, d),
              out_w=normal(n, dim, d), out_b=normal(n, dim))


def test_weights_to_z_of_one_hot_codes_is_codes_to_z():
  arch = _config().codec.arch
  q = _random_quantizer(arch)
  codes = jnp.asarray(np.random.default_rng(1).integers(0, arch.codebook_size, (2, 3, 7)))
  one_hot = jax.nn.one_hot(codes, arch.codebook_size)                # [b, n, F, K]
  np.testing.assert_allclose(codec.weights_to_z(q, one_hot), codec.codes_to_z(q, codes),
                             rtol=1e-6, atol=1e-6)


def test_token_streams_decode_their_argmax_codes_straight_through():
  """stream_form="tokens": each stream is the codec latent of its logits' argmax
  codes, the same in training's forward (straight through) as in evaluation's; a
  latent loss on the output reaches the logits' head; it needs the quantizer, and
  it does not stream."""
  config = _selector_config(**{"model.stream_form": "tokens", "model.output_norm": "none",
                               "model.select_decision": "hard", "lambda_token": 1.0,
                               "codec.n_quantizers_eval": 3})
  arch = config.codec.arch
  q = _random_quantizer(arch)
  model = NeuroCodec.from_config(config)
  rng = np.random.default_rng(0)
  z = jnp.asarray(rng.standard_normal((2, arch.latent_dim, 40)), jnp.float32)
  eeg = jnp.asarray(rng.standard_normal((2, config.eeg_channels, 96)), jnp.float32)
  v = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)}, z, eeg,
                 train=False, quantizer=q)
  # The head starts at zero (every code equally likely); a trained one is not.
  assert float(jnp.abs(v["params"]["out"]["kernel"]).max()) == 0
  params = jax.tree.map(lambda p: p, v["params"])
  params["out"]["kernel"] = jax.random.normal(jax.random.PRNGKey(3),
                                              params["out"]["kernel"].shape)
  v = dict(v, params=params)
  z_pred, _, aux = model.apply(v, z, eeg, train=False, return_aux=True, quantizer=q)
  logits = aux["token_logits"]
  assert len(np.unique(np.asarray(jnp.argmax(logits, -1)))) > 10
  # Every codebook classified (the head's size is the codec's, whatever is decoded);
  # the first n_quantizers_eval decoded.
  assert logits.shape == (2, 2, arch.n_codebooks, 40, arch.codebook_size)
  codes = jnp.argmax(logits, -1)[:, :, :3]                            # [b, 2, n, F]
  for s in range(2):
    np.testing.assert_allclose(aux["streams"][:, s], codec.codes_to_z(q, codes[:, s]),
                               rtol=1e-5, atol=1e-5)
  # The hard decision outputs, frame by frame, one stream as it is (output_norm="none").
  weights = np.asarray(aux["weights"])
  assert set(np.unique(weights)) == {0.0, 1.0}
  np.testing.assert_allclose(z_pred, np.einsum("bkdf,bfk->bdf", aux["streams"], weights),
                             rtol=1e-5, atol=1e-5)
  # Training's forward (straight through) decodes the same codes; its gradient
  # reaches the head through the softmax.
  x = jnp.asarray(rng.standard_normal((2, 40, config.hidden_dim)), jnp.float32)
  tokens = lambda p, train: model.apply(dict(v, params=p), x, q, train,
                                        method="_token_streams")[0]
  # Equal to rounding: one-hot + p - stop_gradient(p) is the one-hot to an ulp of 1,
  # times the random entries and projections (measured 1.4e-6 absolute).
  np.testing.assert_allclose(tokens(v["params"], True), tokens(v["params"], False),
                             rtol=0, atol=1e-5)
  grads = jax.grad(lambda p: jnp.sum(tokens(p, True) ** 2))(v["params"])
  assert float(jnp.abs(grads["out"]["kernel"]).max()) > 0
  assert float(jnp.abs(jax.grad(lambda p: jnp.sum(tokens(p, False) ** 2))(
      v["params"])["out"]["kernel"]).max()) == 0                   # argmax alone: none
  with pytest.raises(ValueError, match="needs the codec's quantizer"):
    model.apply(v, z, eeg, train=False)
  with pytest.raises(ValueError, match="does not stream"):
    model.apply(v, z, eeg, train=False, streaming=True, quantizer=q)
