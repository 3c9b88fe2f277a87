"""AnyGen: open any-to-any generation.

An LLM backbone reads text plus attached images, audio and video and answers
with text and signal tokens; output projectors turn those into conditioning for
diffusers generators of images, video and audio.
"""

from .errors import AnyGenInputError

__version__ = "0.1.0"

__all__ = ["AnyGenInputError", "__version__"]
