"""Loader shim: `DiffusionPipeline.from_pretrained(this_folder, trust_remote_code=True)` finds AnyGen's audio
pipeline here. It runs no code of its own; the class comes from the installed `anygen` package."""

from anygen.pipelines.pipeline_audio import AnyGenAudioPipeline

__all__ = ["AnyGenAudioPipeline"]
