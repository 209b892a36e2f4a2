"""Grain input pipelines over :class:`~neurocodec_jax.data.hdf5.AADSource`.

Training: this host's shard, shuffled with a seed that grain folds with the
epoch number (a new order every epoch), batched with the remainder dropped,
repeated. Evaluation: in order, no shuffling (the original shuffled val/test, a
bug), remainder kept. The iterators are grain ``DatasetIterator``s whose
``get_state()``/``set_state()`` let a resumed run see exactly the batches it
would have seen.
"""

from __future__ import annotations

from absl import flags
import grain
import jax

from neurocodec_jax.data.hdf5 import AADSource


def _host_shard(ds: grain.MapDataset, shard: tuple[int, int] | None):
  index, count = shard if shard is not None else (jax.process_index(),
                                                  jax.process_count())
  return ds[index::count] if count > 1 else ds


def _iterable(ds: grain.MapDataset, num_workers: int) -> grain.IterDataset:
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))
  if num_workers > 0:
    # grain reads absl flags to start its workers: the process's, which its entry
    # point parses (an absl app does); this module never parses them for it.
    if not flags.FLAGS.is_parsed():
      raise RuntimeError(
          f"num_workers={num_workers}: grain's worker processes read absl flags, which "
          f"this process has not parsed. absl apps (train.py, evaluate.py) parse them; "
          f"elsewhere parse them first, e.g. absl.flags.FLAGS(sys.argv[:1]) (defaults).")
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return it


def train_dataset(source: AADSource, batch_size: int, *, seed: int,
                  num_epochs: int | None = None, num_workers: int = 0,
                  shard: tuple[int, int] | None = None) -> grain.IterDataset:
  """Shuffled, batched (remainder dropped) and repeated training batches.

  Args:
    source: the split's source.
    batch_size: per-host batch size.
    seed: shuffle seed; each epoch is shuffled differently but reproducibly.
    num_epochs: epochs to repeat for; None repeats forever.
    num_workers: grain worker processes (0 reads in this process).
    shard: ``(index, count)`` of this host; defaults to JAX's process index/count.

  Returns:
    An ``IterDataset`` of dicts of numpy arrays with a leading batch axis.
  """
  ds = _host_shard(grain.MapDataset.source(source), shard)
  if len(ds) < batch_size:
    raise ValueError(f"Training split has {len(ds)} examples on this host, fewer "
                     f"than batch_size={batch_size}.")
  ds = ds.shuffle(seed=seed).batch(batch_size, drop_remainder=True)
  return _iterable(ds.repeat(num_epochs), num_workers)


def eval_dataset(source: AADSource, batch_size: int, *, num_workers: int = 0,
                 shard: tuple[int, int] | None = None) -> grain.IterDataset:
  """In-order batches over this host's shard, the last one possibly smaller."""
  ds = _host_shard(grain.MapDataset.source(source), shard)
  return _iterable(ds.batch(batch_size, drop_remainder=False), num_workers)


def steps_per_epoch(num_examples: int, batch_size: int,
                    shard_count: int | None = None) -> int:
  """Training steps in one epoch of one host's shard (remainder dropped)."""
  count = jax.process_count() if shard_count is None else shard_count
  per_host = len(range(0, num_examples, count)) if count > 1 else num_examples
  return per_host // batch_size
