"""Diffusers-style pipelines of AnyGen."""

from .pipeline_audio import AnyGenAudioPipeline
from .pipeline_output import AudioGenerationOutput
from .vocoder import GriffinLimVocoder

__all__ = ["AnyGenAudioPipeline", "AudioGenerationOutput", "GriffinLimVocoder"]
