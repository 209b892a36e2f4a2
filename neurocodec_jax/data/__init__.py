"""Data: the original HDF5 layout, grain pipelines and the synthetic AAD dataset."""

from neurocodec_jax.data.hdf5 import (AADSource, DataError, SplitInfo, check_subject_ids,
                                      find_split_files, inspect_split, open_dataset,
                                      open_split)
from neurocodec_jax.data.pipeline import eval_dataset, steps_per_epoch, train_dataset
