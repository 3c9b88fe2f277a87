"""The log-mel spectrogram of WORLD.md and its Griffin-Lim inverse (torchaudio)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from . import spec

LOG_FLOOR = float(np.log(spec.MEL_FLOOR))


@functools.lru_cache(maxsize=None)
def _mel_transform():
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(**spec.MEL)


@functools.lru_cache(maxsize=None)
def inverse_mel_transforms(
    n_iter: int = 32,
    n_fft: int = spec.MEL["n_fft"],
    hop_length: int = spec.MEL["hop_length"],
    n_mels: int = spec.MEL["n_mels"],
    sample_rate: int = spec.SAMPLE_RATE,
    f_min: float = spec.MEL["f_min"],
    f_max: float = spec.MEL["f_max"],
    mel_scale: str = spec.MEL["mel_scale"],
):
    """torchaudio ``InverseMelScale`` and ``GriffinLim`` (zero initial phase: deterministic) for a mel layout."""
    import torchaudio

    inv = torchaudio.transforms.InverseMelScale(
        n_stft=n_fft // 2 + 1, n_mels=n_mels, sample_rate=sample_rate, f_min=f_min, f_max=f_max, norm=None, mel_scale=mel_scale
    )
    gl = torchaudio.transforms.GriffinLim(n_fft=n_fft, hop_length=hop_length, power=2.0, n_iter=n_iter, rand_init=False)
    return inv, gl


def log_mel(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Log-mel spectrogram of 16 kHz audio.

    Args:
        audio: float waveform of shape (samples,) or (batch, samples); one second is 16000 samples.

    Returns:
        float32 tensor (..., 64 mels, 64 frames): log(mel + 1e-5), the 63 frames
        of one second padded at the end with log(1e-5).
    """
    x = torch.as_tensor(np.asarray(audio) if not isinstance(audio, torch.Tensor) else audio, dtype=torch.float32)
    mel = torch.log(_mel_transform()(x) + spec.MEL_FLOOR)
    frames = mel.shape[-1]
    if frames < spec.MEL_FRAMES:
        mel = torch.nn.functional.pad(mel, (0, spec.MEL_FRAMES - frames), value=LOG_FLOOR)
    return mel[..., : spec.MEL_FRAMES]


def mel_to_audio(logmel: torch.Tensor, n_iter: int = 32, num_samples: int = spec.NUM_SAMPLES) -> torch.Tensor:
    """Invert :func:`log_mel` with InverseMelScale + GriffinLim.

    Args:
        logmel: (..., 64, 64) log-mel spectrogram.
        n_iter: Griffin-Lim iterations.
        num_samples: length of the returned waveform.

    Returns:
        float32 waveform (..., num_samples).
    """
    inv, gl = inverse_mel_transforms(n_iter)
    mel = torch.exp(logmel.float()[..., : spec.MEL_FRAMES - 1]) - spec.MEL_FLOOR
    spec_power = inv(mel.clamp_min(0.0))
    wav = gl(spec_power)
    if wav.shape[-1] < num_samples:
        wav = torch.nn.functional.pad(wav, (0, num_samples - wav.shape[-1]))
    return wav[..., :num_samples]
