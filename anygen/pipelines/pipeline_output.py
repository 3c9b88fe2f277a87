"""Output dataclasses of AnyGen's pipelines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.utils import BaseOutput


@dataclass
class AudioGenerationOutput(BaseOutput):
    """Output of :class:`~anygen.pipelines.pipeline_audio.AnyGenAudioPipeline`.

    Args:
        audios: float32 mono waveforms, (batch, samples) as ``np.ndarray`` or ``torch.Tensor``.
        sample_rate: their sample rate in Hz.
    """

    audios: np.ndarray | torch.Tensor
    sample_rate: int


@dataclass
class AnyGenOutput(BaseOutput):
    """Output of :class:`~anygen.pipelines.pipeline_anygen.AnyGenPipeline`.

    Args:
        text: the reply; each generated medium appears as its marker ``[IMG]``/``[VID]``/``[AUD]`` where the
            backbone emitted its signal group (the format of the dialogue data, so a reply can be fed back as
            an assistant message of a later turn).
        images: generated images, in reply order.
        videos: generated videos, each a list of PIL frames.
        audios: generated sounds, float32 mono waveforms.
        sample_rate: sample rate of ``audios`` in Hz.
    """

    text: str
    images: list
    videos: list
    audios: list
    sample_rate: int
