"""Public AAD datasets to the project's HDF5 layout (``python -m neurocodec_jax.data.prepare``).

Reader contract. Each dataset module (``kul``, ``kulmix``, ``cocktail``, ``dtu``)
exposes::

  iter_recordings(src: str, *, sample_rate: int, eeg_rate: int, **options)
      -> Iterator[Recording]

yielding :class:`~neurocodec_jax.data.prepare.recording.Recording` objects grouped
by subject (all of one subject's recordings before the next subject's), EEG
``[time, channels]`` in microvolts at ``eeg_rate`` and audio ``[samples]`` at
``sample_rate``, time-aligned (sample 0 = EEG sample 0). Malformed inputs raise
:class:`~neurocodec_jax.data.prepare.recording.DatasetError` naming the file, the
field and what was expected. Optional, used when present:

* a ``subjects`` keyword of ``iter_recordings`` (``Collection[str] | None``): read
  only these subjects (a resumed run skips the finished ones without reading them;
  without the keyword their recordings are read and dropped);
* ``list_subjects(src: str, **options) -> list[str]``: the subject ids, in the order
  ``iter_recordings`` yields them (sizes the progress bar);
* ``add_arguments(group: argparse._ArgumentGroup)``: the reader's own command-line
  options, named ``--<dataset>_<option>`` with ``dest="<option>"``; their values
  reach ``iter_recordings`` as ``**options``.
"""

from neurocodec_jax.data.prepare.recording import DatasetError, Recording

__all__ = ["DatasetError", "Recording"]
