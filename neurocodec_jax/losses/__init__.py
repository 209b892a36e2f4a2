"""Training losses and metrics (DAC's acoustic objectives, latent, envelope, SI-SDR)."""

from neurocodec_jax.losses.envelope import envelope_contrast_loss, envelope_loss, speech_envelope
from neurocodec_jax.losses.gan import discriminator_loss, generator_loss
from neurocodec_jax.losses.latent import frame_cosine, latent_loss
from neurocodec_jax.losses.mel import mel_loss
from neurocodec_jax.losses.sisdr import si_sdr
