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
