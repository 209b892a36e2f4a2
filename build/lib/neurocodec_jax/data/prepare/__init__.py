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
field and what was expected. ``options`` always holds ``eeg``, the common EEG
preprocessing (:class:`~neurocodec_jax.data.prepare.signals.EEGSettings`, from
``--eeg_*``; apply it with :func:`~neurocodec_jax.data.prepare.signals.preprocess_eeg`),
plus the reader's own options. Optional, used when present:

* ``list_subjects(src: str, **options) -> list[str]``: the subject ids (sizes the
  progress bar);
* a ``subjects`` keyword of ``iter_recordings`` (``Collection[str] | None``): read
  only these subjects. With both, the reader runs once per subject, so each subject
  is cached as soon as it is read and a resumed run never reads a finished one
  (without them a subject is complete when the next starts, and a resumed run
  reads and drops the finished ones);
* ``add_arguments(group: argparse._ArgumentGroup)``: the reader's own command-line
  options, named ``--<dataset>_<option>`` with ``dest="<option>"``; their values
  reach ``iter_recordings`` as ``**options``;
* module attributes ``SOURCE`` (dict: name, record, version — ``"unversioned"`` when
  the record states none —, DOI, URL), ``PREPROCESSING``
  (text) and ``EEG_UNITS`` (default ``"microvolts"``), copied into ``manifest.json``
  (beside ``code``: the package version and git commit that wrote it).

Modules: ``recording`` (the unit readers yield), ``files`` (.mat and wav reading with
named errors), ``signals`` (EEG preprocessing, audio resampling), ``protocols``
(split assignment), ``layout`` (windows, the HDF5 writer), ``build`` (the resumable,
atomic run), ``__main__`` (the command line).
"""

from neurocodec_jax.data.prepare.recording import DatasetError, Recording

__all__ = ["DatasetError", "Recording"]
