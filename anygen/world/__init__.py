"""The Shapes World (``shared/WORLD.md``): scenes, renderers, captions, dialogues and datasets."""

from . import spec
from .datasets import (
    DEFAULT_TASK_WEIGHTS,
    AudioCaptionDataset,
    DialogueDataset,
    ImageCaptionDataset,
    VideoCaptionDataset,
    collate,
)
from .dialogue import HELDOUT_TASKS, TASKS, Dialogue, Message, make_dialogue
from .mel import log_mel, mel_to_audio
from .render import render, render_audio, render_image, render_video
from .scenes import (
    SPLITS,
    Clip,
    Scene,
    Shape,
    Sound,
    is_heldout,
    relative_step,
    sample_clip,
    sample_scene,
    sample_shape,
    sample_sound,
)
from .text import MARKERS, PLACEHOLDERS, TEMPLATE_SPLITS, frames, request_frames

__all__ = [
    "spec",
    "SPLITS",
    "Shape",
    "Scene",
    "Clip",
    "Sound",
    "is_heldout",
    "relative_step",
    "sample_shape",
    "sample_scene",
    "sample_clip",
    "sample_sound",
    "render",
    "render_image",
    "render_video",
    "render_audio",
    "log_mel",
    "mel_to_audio",
    "TASKS",
    "HELDOUT_TASKS",
    "Message",
    "Dialogue",
    "make_dialogue",
    "MARKERS",
    "PLACEHOLDERS",
    "TEMPLATE_SPLITS",
    "frames",
    "request_frames",
    "DEFAULT_TASK_WEIGHTS",
    "DialogueDataset",
    "ImageCaptionDataset",
    "VideoCaptionDataset",
    "AudioCaptionDataset",
    "collate",
]
