"""Modality encoders: the generators' frozen VAE encoders, read as token grids.

``anygen-tiny`` encodes what it is shown with the encoders of what it draws (``type = "generator_vae"``):

* image: the image generator's ``AutoencoderKL`` on the picture resized to the VAE's ``sample_size``;
* video: the same VAE frame by frame (the input projector keeps the frames' order);
* audio: the audio generator's ``AutoencoderKL`` on the world's log-mel (``anygen.world.mel.log_mel`` →
  ``mel_to_vae_input``), the very input it was trained to reconstruct.

Every encoder returns tokens ``(batch, frames, positions, channels)``: the latent means (``mode()``, so
encoding is deterministic) with the spatial grid flattened.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import AutoencoderKL
from PIL import Image

ENCODER_TYPES = ("generator_vae",)


def check_encoder_type(type: str) -> str:
    """Validate a recipe's ``[encoders] type``."""
    if type not in ENCODER_TYPES:
        raise ValueError(f"Unknown encoder type: {type!r}; expected one of {ENCODER_TYPES}")
    return type


def vae_grid(vae: AutoencoderKL, sample_size: int | None = None) -> int:
    """Number of latent positions (h × w) the VAE gives for a square input of ``sample_size``."""
    size = sample_size or vae.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    side = size // 2 ** (len(vae.config.block_out_channels) - 1)
    return side * side


def _latent_tokens(vae: AutoencoderKL, x: torch.Tensor) -> torch.Tensor:
    z = vae.encode(x.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()  # (n, C, h, w)
    return z.flatten(2).transpose(1, 2)  # (n, h × w, C)


def pil_to_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images → (n, 3, size, size) in [-1, 1], resized with bicubic resampling (diffusers' VaeImageProcessor)."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(do_resize=True, do_normalize=True, do_convert_rgb=True)
    return processor.preprocess([im.convert("RGB") for im in images], height=size, width=size)


@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: list[Image.Image]) -> torch.Tensor:
    """PIL images → tokens (n, 1, positions, channels)."""
    size = vae.config.sample_size
    size = size[0] if isinstance(size, (list, tuple)) else size
    return _latent_tokens(vae, pil_to_pixels(images, size)).unsqueeze(1)


@torch.no_grad()
def encode_video(vae: AutoencoderKL, frames: list[Image.Image]) -> torch.Tensor:
    """One clip (list of PIL frames) → tokens (1, frames, positions, channels)."""
    return encode_images(vae, frames).transpose(0, 1)


@torch.no_grad()
def encode_audio(vae: AutoencoderKL, audio: np.ndarray) -> torch.Tensor:
    """One 16 kHz float32 waveform (≤ 1 s) → tokens (1, 1, positions, channels) of its log-mel."""
    return encode_audios(vae, [audio])


@torch.no_grad()
def encode_audios(vae: AutoencoderKL, audios: list[np.ndarray]) -> torch.Tensor:
    """16 kHz float32 waveforms (≤ 1 s each) → tokens (n, 1, positions, channels) of their log-mels, one VAE call."""
    from ..training.generators import mel_to_vae_input
    from ..world.mel import log_mel

    x = torch.stack([mel_to_vae_input(log_mel(a)) for a in audios])  # (n, 1, frames, mels)
    return _latent_tokens(vae, x).unsqueeze(1)
