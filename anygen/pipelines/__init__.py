"""Diffusers-style pipelines of AnyGen."""

from .pipeline_anygen import AnyGenPipeline, MediumRequest
from .pipeline_audio import AnyGenAudioPipeline
from .pipeline_output import AnyGenOutput, AudioGenerationOutput
from .vocoder import GriffinLimVocoder

__all__ = ["AnyGenAudioPipeline", "AnyGenOutput", "AnyGenPipeline", "AudioGenerationOutput", "GriffinLimVocoder", "MediumRequest"]
