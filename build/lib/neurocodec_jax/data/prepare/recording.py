"""One preprocessed recording (a continuous trial or run of one subject), the unit
every dataset reader yields, and the error readers raise on malformed inputs."""

from __future__ import annotations

import dataclasses

import numpy as np


class DatasetError(ValueError):
  """A source file of a public dataset does not hold what its reader expects.

  Messages name the file, the field (or variable, column, key) and what was
  expected, e.g. ``S1.mat: field 'trials{3}.FileHeader.SampleRate' is 64, expected 128``.
  """


@dataclasses.dataclass
class Recording:
  """One continuous trial/run of one subject after preprocessing.

  Attributes:
    subject: subject id, unique within the dataset (e.g. ``"S1"``).
    trial: trial/run id, unique within the subject (e.g. ``"3"``).
    eeg: float32 ``[time, channels]`` in microvolts at the target EEG rate.
    attended: float32 ``[samples]`` attended talker at the codec sample rate.
    unattended: float32 ``[samples]`` competing talker, same rate and length.
    noisy: float32 ``[samples]`` the mixture the listener heard (or the recipe's
      mixture), same rate and length.
    stimuli: ``(attended id, unattended id)``, stimulus ids (e.g. wav names or
      story parts) used to exclude windows whose speech repeats across splits.
    provenance: free-form source facts (file names, attended ear/track, SNR, ...);
      JSON-serialisable values only, it goes into ``manifest.json``.
    group: the unit ``trial-held-out`` keeps whole, unique within the subject;
      None means ``trial``. Set it when several recordings are cut from one
      continuous trial (KUL-mix lists segments of a trial), so they stay together.
    split: the split the source itself assigns (KUL-mix's list has one), used by
      ``--protocol recipe``; None when the source assigns none.

  Audio sample 0 and EEG sample 0 are the same instant; the audio covers
  ``len(eeg) / eeg_rate`` seconds (:meth:`validate` checks this to the sample).
  """
  subject: str
  trial: str
  eeg: np.ndarray
  attended: np.ndarray
  unattended: np.ndarray
  noisy: np.ndarray
  stimuli: tuple[str, str]
  provenance: dict = dataclasses.field(default_factory=dict)
  group: str | None = None
  split: str | None = None

  @property
  def unit(self) -> str:
    """What trial-held-out keeps whole: ``group``, else ``trial``."""
    return self.trial if self.group is None else self.group

  def duration(self, eeg_rate: int) -> float:
    """Seconds covered by the EEG (the audio covers the same span)."""
    return self.eeg.shape[0] / eeg_rate

  def validate(self, *, sample_rate: int, eeg_rate: int) -> "Recording":
    """Checks dtypes, shapes and alignment; raises :class:`DatasetError`.

    The audio must hold ``round(len(eeg) * sample_rate / eeg_rate)`` samples
    (one sample of slack for rounding) and everything must be finite.
    """
    where = f"recording subject={self.subject!r} trial={self.trial!r}"
    if self.eeg.ndim != 2 or self.eeg.dtype != np.float32:
      raise DatasetError(f"{where}: eeg is {self.eeg.dtype} {self.eeg.shape}, "
                         f"expected float32 [time, channels].")
    expected = round(self.eeg.shape[0] * sample_rate / eeg_rate)
    for name in ("attended", "unattended", "noisy"):
      a = getattr(self, name)
      if a.ndim != 1 or a.dtype != np.float32:
        raise DatasetError(f"{where}: {name} is {a.dtype} {a.shape}, expected "
                           f"float32 [samples].")
      if abs(a.shape[0] - expected) > 1:
        raise DatasetError(
            f"{where}: {name} has {a.shape[0]} samples, expected {expected} "
            f"({self.eeg.shape[0]} EEG samples at {eeg_rate} Hz, audio at "
            f"{sample_rate} Hz).")
      if not np.isfinite(a).all():
        raise DatasetError(f"{where}: {name} has non-finite samples.")
    if not np.isfinite(self.eeg).all():
      raise DatasetError(f"{where}: eeg has non-finite samples.")
    if len(self.stimuli) != 2:
      raise DatasetError(f"{where}: stimuli is {self.stimuli!r}, expected "
                         f"(attended id, unattended id).")
    return self
