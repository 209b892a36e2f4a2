"""A run built from its config, in one place: codec, cached codes, sources, models,
mesh, an example batch, compiled programs and restores.

Training (``training``), evaluation, ``latent_structure``, the benchmarks and the
tests all start from :func:`build_run`::

  run = build_run(config, {"test": fields})       # codes computed when missing or stale
  state, where = run.restore_generator(workdir=workdir)

The codec is injected: ``build_run(..., codec=...)`` takes any object with the
methods of :class:`Codec`; without one, :func:`load_codec` calls the loader
registered with :func:`use_codec_loader` (``codec_bridge`` registers the frozen DAC's
when an entry point imports it). This package never imports the bridge or torch.

A run holds its compiled programs (``Run.compiled``): building and compiling a step
costs tens of seconds on a CPU. A second run in the same process (a resume, an
evaluation after training, a test) passes the first as ``reuse=``: it shares the
first's codec when the codec config is the same, and its models, mesh and programs
when the program key (:func:`program_key`) is.

Data parallel: one mesh axis ``data`` over every device of every host; batches are
sharded along it (:func:`shard_batch`), parameters and optimizer states replicated.

The frozen codec's arrays (``Run.frozen``: the quantizer, and the decoder's weights
with ``codec.backend=jax``) are placed on the devices once, replicated, and passed to
every jitted program as an argument: closed over, XLA would embed them in each
program as constants (the train step with DAC's 44.1 kHz decoder in JAX: 209 MB of
constants, 444 M characters of StableHLO instead of 10 M; ``bench.bench_step
--programs``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Protocol

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from neurocodec_jax import config_fields
from neurocodec_jax.codec_arch import CODEC_BACKENDS
from neurocodec_jax.data import AADSource, open_split
from neurocodec_jax.train import optim, steps
from neurocodec_jax.train.checkpoint import CheckpointError, Checkpoints, abstract, restore_step


class Codec(Protocol):
  """What a run needs of the frozen codec (``codec_bridge.FrozenDAC`` and ``JaxDAC``
  provide it)."""

  def frozen_params(self) -> dict:
    """``{"quantizer": <neurocodec_jax.codec's pytree>, "decoder": <decode's params or
    None>}``: the codec's arrays, which the jitted programs take as an argument
    (``Run.frozen``); None where the weights live outside JAX (torch)."""

  def decoder(self) -> Callable[[Any, jax.Array], jax.Array]:
    """``decode(params, z) [B, D, F] -> [B, 1, F * hop]``, ``params`` the frozen
    ``"decoder"`` entry: pure, differentiable, usable under jit."""

  def encode(self, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[n, 1, T]`` audio -> ``(codes, quantized z, continuous latent)``."""

  def encoder(self) -> tuple[Callable[[Any, jax.Array], jax.Array], Any]:
    """``(encode, params)``: ``encode(params, audio [B, 1, T]) -> latent [B, D, T / hop]``,
    usable under jit (streaming extraction encodes in chunks with it)."""

  def ensure_codes(self, config, split: str) -> str:
    """The path of ``split``'s valid codes cache (computed when missing or stale)."""




_codec_loader: Callable[[Any], Codec] | None = None


def use_codec_loader(loader: Callable[[Any], Codec]) -> None:
  """Sets how a run without an explicit codec builds one from its config's ``codec``
  group. ``codec_bridge`` registers its loader when imported; the entry points import
  it, so this package never names the bridge."""
  global _codec_loader
  _codec_loader = loader


def load_codec(codec_config) -> Codec:
  """The frozen codec per a config's ``codec`` group, from the registered loader."""
  backend = codec_config.get("backend", "torch")
  if backend not in CODEC_BACKENDS:
    raise ValueError(f"codec.backend={backend!r}: expected one of {CODEC_BACKENDS}.")
  if _codec_loader is None:
    raise RuntimeError("No codec loader is registered: import codec_bridge (the entry "
                       "points do), or pass codec= to build_run.")
  return _codec_loader(codec_config)


def program_key(config) -> str:
  """Config JSON without the host-only fields (``config_fields.HOST``), plus the
  devices: what programs compiled for ``config`` depend on."""
  d = json.loads(config.to_json_best_effort())
  for path in config_fields.host_only():
    *groups, leaf = path.split(".")
    node = d
    for g in groups:
      node = node.get(g, {})
    node.pop(leaf, None)
  return json.dumps(d, sort_keys=True) + repr([d.id for d in jax.devices()])


# ------------------------------------------------------------------ build ----

def build_models(config, codec: Codec) -> steps.Models:
  """Generator, discriminator (when a GAN term is on), the codec's decode function,
  optimizers; the codec's arrays are the run's ``frozen``, not part of the models."""
  from neurocodec_jax.models import discriminators, generator, refiner  # pylint: disable=g-import-not-at-top
  disc = discriminators.Discriminator.from_config(config) if steps.uses_gan(config) else None
  refine = None
  if config.model.output_waveform == "refined_mask":
    module = refiner.load_module(config.model.refiner)
    refine = lambda params, *signals: module.apply(params, *signals)
  return steps.Models(
      generator=generator.NeuroCodec.from_config(config),
      discriminator=disc, decode=codec.decoder(),
      g_tx=optim.generator_optimizer(config),
      d_tx=optim.discriminator_optimizer(config) if disc is not None else None,
      mix_input=config.model.mix_input, target=config.model.target_latent, refine=refine)


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), ("data",))


def shard_batch(batch: dict, sharding: NamedSharding) -> dict:
  """Host-local numpy batch -> global jax arrays sharded along the batch axis."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def pad_batch(batch: dict, size: int) -> dict:
  """Pads the batch axis to ``size`` by repeating the last example (the padding's
  results are dropped: the first ``n`` rows are the batch's)."""
  n = len(next(iter(batch.values())))
  if n == size:
    return batch
  idx = np.minimum(np.arange(size), n - 1)
  return {k: np.asarray(v)[idx] for k, v in batch.items()}


def first_example(source) -> dict:
  """One example with a batch axis, for shapes at initialization."""
  return {k: np.asarray(v)[None] for k, v in source[0].items()}


@dataclasses.dataclass
class Run:
  """What a config builds before any state (see the module docstring).

  ``frozen``: the codec's ``frozen_params()`` replicated over the mesh (and
  ``"refiner"``'s parameters with ``model.output_waveform="refined_mask"``), the
  argument the compiled programs take them as; ``sources``: ``{split: AADSource}`` with the
  requested fields; ``example``: one example with a batch axis (shapes for
  initialization); ``programs``: compiled programs by key, shared with the runs that
  reuse this one.
  """
  config: Any
  codec: Codec
  models: steps.Models
  mesh: Mesh
  frozen: dict
  sources: dict[str, AADSource]
  example: dict | None
  programs: dict

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def batched(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))

  @property
  def local_batch(self) -> int:
    """This host's share of ``config.batch_size``."""
    return self.config.batch_size // jax.process_count()

  def compiled(self, key, build: Callable[[], Any]):
    """``build()``, once per ``key`` for this run and the runs that reuse it."""
    if key not in self.programs:
      self.programs[key] = build()
    return self.programs[key]

  def init_state(self) -> dict:
    """The fresh train state (``steps.init_state``), replicated over the mesh.

    One compiled program: run op by op, Flax's init compiles every layer's
    initializers separately (half the start-up of a small run)."""
    config, models = self.config, self.models      # not self: runs reusing it keep it alive
    init = self.compiled("init_state", lambda: jax.jit(
        lambda example, frozen: steps.init_state(config, models, example, frozen, config.seed)))
    return jax.device_put(init(self.example, self.frozen), self.replicated)

  def restore_generator(self, *, workdir: str | None = None, checkpoint: str | None = None,
                        which: str = "best") -> tuple[dict, str]:
    """``({"g": {"params", "batch_stats"}}, where)``: the generator alone, read from a
    step folder (``checkpoint``) or a workdir's best or latest checkpoint.

    Only the generator's arrays are read (a partial restore): the discriminator and
    the optimizer states stay on disk. From a workdir, the newest readable step (an
    unreadable one is named in a warning and left in place: a training run may own
    the folder).
    """
    key = jax.random.PRNGKey(0)                  # shapes only
    variables = jax.eval_shape(lambda: steps.init_generator(
        self.config, self.models, self.example, self.frozen, {"params": key, "dropout": key}))
    target = abstract({"g": variables}, self.replicated)
    if checkpoint:
      return restore_step(checkpoint, target), checkpoint
    ckpt = Checkpoints(workdir, use_async=False, writable=False)
    try:
      best = which == "best" and ckpt.best.latest_step() is not None
      manager = ckpt.best if best else ckpt.latest
      try:
        state, _ = ckpt.restore(target, best=best, partial=True)
      except CheckpointError as e:
        hint = " (--which latest evaluates the latest checkpoint)" if best else ""
        raise CheckpointError(f"{e}{hint}") from None
      return state, os.path.join(str(manager.directory), str(ckpt.restored_step))
    finally:
      ckpt.close()


def build_run(config, splits: dict | None = None, *, codec: Codec | None = None,
              example: dict | None = None, reuse: Run | None = None) -> Run:
  """The :class:`Run` of ``config``.

  Args:
    config: a NeuroCodec config (neurocodec_jax/configs/neurocodec.py).
    splits: ``{split: fields}`` to open; code fields get the split's codes cache,
      computed first when missing or stale.
    codec: the frozen codec; default: ``reuse``'s when its codec config is the
      same, else :func:`load_codec`.
    example: the example batch; default: the first example of the first split.
    reuse: an earlier run whose codec, models and programs to share where they fit.
  """
  if reuse is not None and codec is None and _codec_key(reuse.config) == _codec_key(config):
    codec = reuse.codec
  codec = codec if codec is not None else load_codec(config.codec)
  sources = {}
  for split, fields in (splits or {}).items():
    needs_codes = any(f in AADSource.CODE_FIELDS for f in fields)
    sources[split] = open_split(config, split, fields=tuple(fields),
                                codes_path=codec.ensure_codes(config, split) if needs_codes
                                else None)
  if example is None and sources:
    example = first_example(next(iter(sources.values())))
  if (reuse is not None and reuse.codec is codec
      and program_key(reuse.config) == program_key(config)):
    models, mesh, programs = reuse.models, reuse.mesh, reuse.programs
  else:
    models, mesh, programs = build_models(config, codec), make_mesh(), {}
  if config.batch_size % mesh.devices.size:
    raise ValueError(f"batch_size={config.batch_size} must be a multiple of the "
                     f"{mesh.devices.size} devices.")
  if reuse is not None and reuse.codec is codec and reuse.mesh == mesh:
    frozen = reuse.frozen                          # on the devices already
  else:
    frozen = jax.device_put(codec.frozen_params(), NamedSharding(mesh, P()))
  frozen = {k: v for k, v in frozen.items() if k != "refiner"}
  if config.model.output_waveform == "refined_mask":
    from neurocodec_jax.models import refiner  # pylint: disable=g-import-not-at-top
    frozen["refiner"] = jax.device_put(refiner.load(config.model.refiner)[1],
                                       NamedSharding(mesh, P()))
  return Run(config=config, codec=codec, models=models, mesh=mesh, frozen=frozen,
             sources=sources, example=example, programs=programs)


def _codec_key(config) -> str:
  return config.codec.to_json_best_effort(sort_keys=True)
