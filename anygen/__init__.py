"""AnyGen: open any-to-any generation.

An LLM backbone reads text plus attached images, audio and video and answers
with text and signal tokens; output projectors turn those into conditioning for
diffusers generators of images, video and audio.
"""

from .errors import AnyGenInputError

__version__ = "0.1.0"

__all__ = ["AnyGenInputError", "AnyGenOutput", "AnyGenPipeline", "__version__"]

_LAZY = {
    "AnyGenPipeline": "anygen.pipelines.pipeline_anygen",
    "AnyGenOutput": "anygen.pipelines.pipeline_output",
}


def __getattr__(name: str):
    # `import anygen` stays light (no torch/diffusers) until the pipeline is asked for.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'anygen' has no attribute {name!r}")
