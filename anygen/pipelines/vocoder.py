"""Griffin-Lim vocoder: log-mel → waveform with torchaudio, in the slot AudioLDM gives ``SpeechT5HifiGan``.

It has no weights; it is a ``ModelMixin`` so that pipelines save and load it
like any other component (its config is the mel layout).
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin  # noqa: F401  (diffusers resolves the loader through these names)
from diffusers.configuration_utils import register_to_config

from ..world.mel import inverse_mel_transforms


class GriffinLimVocoder(ModelMixin, ConfigMixin):
    """Turns (normalised) log-mel spectrograms into waveforms.

    Same call signature as ``transformers.SpeechT5HifiGan``: ``vocoder(spectrogram)``
    with ``spectrogram`` of shape (batch, frames, mels) → (batch, samples).

    Args:
        sampling_rate: output sample rate (Hz).
        model_in_dim: number of mel bins.
        n_fft: STFT size of the spectrogram.
        hop_length: STFT hop.
        f_min: lowest mel frequency (Hz).
        f_max: highest mel frequency (Hz).
        mel_scale: ``"htk"`` or ``"slaney"``.
        n_iter: Griffin-Lim iterations (32: ~10 ms per second of audio on 2 cores, quality saturates after ~30).
        input_mean: the input is ``(log_mel - input_mean) / input_scale``; undone before inversion.
        input_scale: see ``input_mean``.
        log_floor: the ``eps`` of ``log(mel + eps)``.
        num_samples: output length; the last partial hop is zero-padded.
    """

    @register_to_config
    def __init__(
        self,
        sampling_rate: int = 16000,
        model_in_dim: int = 64,
        n_fft: int = 1024,
        hop_length: int = 256,
        f_min: float = 0.0,
        f_max: float = 8000.0,
        mel_scale: str = "htk",
        n_iter: int = 32,
        input_mean: float = 0.0,
        input_scale: float = 1.0,
        log_floor: float = 1e-5,
        num_samples: int = 16000,
    ):
        super().__init__()
        # A zero-size buffer gives the module a device and dtype, and save_pretrained something to write.
        self.register_buffer("_anchor", torch.zeros(0), persistent=True)

    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = spectrogram.float()
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.shape[-1] != c.model_in_dim:
            raise ValueError(f"`spectrogram` must end with {c.model_in_dim} mel bins, got shape {tuple(spectrogram.shape)}")
        log_mel = x * c.input_scale + c.input_mean
        # The STFT of num_samples has num_samples // hop + 1 frames; drop the padding frames beyond it.
        frames = c.num_samples // c.hop_length + 1
        mel = (torch.exp(log_mel[:, :frames]) - c.log_floor).clamp_min(0.0).transpose(1, 2)  # (batch, mels, frames)
        inv, gl = inverse_mel_transforms(c.n_iter, c.n_fft, c.hop_length, c.model_in_dim, c.sampling_rate, c.f_min, c.f_max, c.mel_scale)
        wav = gl(inv(mel.cpu()))
        wav = torch.nn.functional.pad(wav, (0, max(0, c.num_samples - wav.shape[-1])))[..., : c.num_samples]
        return wav.to(spectrogram.device)
