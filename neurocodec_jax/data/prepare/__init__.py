"""Public AAD datasets to the project's HDF5 layout (``python -m neurocodec_jax.data.prepare``).

Reader contract: each dataset module (``kul``, ``kulmix``, ``cocktail``, ``dtu``)
exposes::

  iter_recordings(src: str, *, sample_rate: int, eeg_rate: int, **options)
      -> Iterator[Recording]

yielding :class:`~neurocodec_jax.data.prepare.recording.Recording` objects grouped
by subject (all of one subject's recordings before the next subject's), EEG in
microvolts at ``eeg_rate`` and audio at ``sample_rate``, time-aligned. Malformed
inputs raise :class:`~neurocodec_jax.data.prepare.recording.DatasetError` naming the
file, the field and what was expected.
"""

from neurocodec_jax.data.prepare.recording import DatasetError, Recording

__all__ = ["DatasetError", "Recording"]
