"""EEG preprocessing (MNE-Python) and audio resampling shared by the readers.

EEG, in order (each step's reason):
  1. re-reference (default: the channel average): BioSemi records without a true
     reference (CMS/DRL), so some reference must be chosen; the average spreads it
     over the scalp instead of silencing one electrode;
  2. zero-phase FIR band-pass (default 1-32 Hz): below 1 Hz sit electrode drifts,
     above 32 Hz muscle activity and 50 Hz mains, while the cortical tracking of
     speech lies in the delta-to-beta range; zero phase keeps the EEG aligned with
     the audio;
  3. resampling to the target EEG rate (polyphase, with its anti-alias filter).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import signal

from neurocodec_jax import codec_arch
from neurocodec_jax.data.prepare.recording import DatasetError

# The audio samples per latent frame of DAC's released models, by sample rate;
# windows are cut to a multiple of it.
DAC_HOP_LENGTHS = {a["sample_rate"]: codec_arch.hop_length(a) for a in codec_arch.DAC_ARCHS.values()}
REFERENCES = ("average", "none")


@dataclasses.dataclass(frozen=True)
class EEGSettings:
  """How EEG is preprocessed; saved in ``manifest.json``.

  ``l_freq``/``h_freq`` None skip that edge (both None: no filter). ``reference``:
  ``"average"``, ``"none"`` (as recorded) or a channel name (needs channel names).
  """
  l_freq: float | None = 1.0
  h_freq: float | None = 32.0
  reference: str = "average"

  def check(self, eeg_rate: int):
    if self.h_freq is not None and self.h_freq >= eeg_rate / 2:
      raise ValueError(f"EEG low-pass {self.h_freq} Hz must be below the target EEG "
                       f"rate's Nyquist frequency ({eeg_rate / 2} Hz).")
    if self.l_freq is not None and self.h_freq is not None and self.l_freq >= self.h_freq:
      raise ValueError(f"EEG band-pass {self.l_freq}-{self.h_freq} Hz is empty.")


def preprocess_eeg(eeg: np.ndarray, rate: float, *, eeg_rate: int, settings: EEGSettings,
                   where: str, channel_names: list[str] | None = None) -> np.ndarray:
  """Re-references, band-passes and resamples EEG (see the module docstring).

  Args:
    eeg: ``[time, channels]`` in microvolts at ``rate`` Hz.
    rate: its sampling rate.
    eeg_rate: the target rate.
    settings: the preprocessing.
    where: file and field, for errors.
    channel_names: names of the channels (needed for a channel reference).

  Returns:
    float32 ``[round(time * eeg_rate / rate), channels]`` in microvolts.
  """
  import mne  # pylint: disable=g-import-not-at-top
  eeg = np.asarray(eeg, np.float64)
  if eeg.ndim != 2 or min(eeg.shape) == 0:
    raise DatasetError(f"{where}: EEG of shape {eeg.shape}, expected [time, channels].")
  if not np.isfinite(eeg).all():
    raise DatasetError(f"{where}: EEG holds non-finite values; expected finite samples.")
  names = list(channel_names) if channel_names else [f"EEG{i + 1:03d}" for i in range(eeg.shape[1])]
  if len(names) != eeg.shape[1]:
    raise DatasetError(f"{where}: {len(names)} channel names for {eeg.shape[1]} channels.")
  info = mne.create_info(names, float(rate), "eeg", verbose=False)
  raw = mne.io.RawArray(eeg.T * 1e-6, info, verbose=False)   # MNE works in volts
  if settings.reference == "average":
    raw.set_eeg_reference("average", projection=False, verbose=False)
  elif settings.reference != "none":
    if settings.reference not in names:
      raise DatasetError(f"{where}: reference channel {settings.reference!r} is not "
                         f"among the channels {names}.")
    raw.set_eeg_reference([settings.reference], projection=False, verbose=False)
  if settings.l_freq is not None or settings.h_freq is not None:
    h_freq = settings.h_freq
    if h_freq is not None and h_freq >= rate / 2:
      raise DatasetError(f"{where}: EEG at {rate} Hz cannot be low-passed at {h_freq} Hz.")
    raw.filter(settings.l_freq, h_freq, fir_design="firwin", phase="zero", verbose=False)
  if rate != eeg_rate:
    raw.resample(float(eeg_rate), method="polyphase", verbose=False)
  out = raw.get_data().T * 1e6
  expected = round(eeg.shape[0] * eeg_rate / rate)
  return np.ascontiguousarray(out[:expected], np.float32)


def resample_audio(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
  """float32 ``[round(len * target / rate)]``: polyphase resampling (scipy)."""
  audio = np.asarray(audio, np.float32)
  if rate == target:
    return audio
  g = math.gcd(int(rate), int(target))
  out = signal.resample_poly(audio, target // g, rate // g).astype(np.float32)
  return out[:round(len(audio) * target / rate)]


def hop_length(sample_rate: int, hop: int | None = None) -> int:
  """The codec hop to cut windows to: ``hop`` if given, else DAC's for the rate."""
  if hop:
    return int(hop)
  if sample_rate not in DAC_HOP_LENGTHS:
    raise ValueError(f"No DAC model at {sample_rate} Hz (known: {sorted(DAC_HOP_LENGTHS)}); "
                     f"pass --hop_length.")
  return DAC_HOP_LENGTHS[sample_rate]
