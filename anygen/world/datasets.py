"""PyTorch datasets of the Shapes World, generated on the fly.

Item ``i`` of a dataset is a pure function of ``(split, seed, i)``: its random
source is seeded from a SHA-256 of those three values, so items are identical
across processes, workers and runs, and no data is ever stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from . import spec
from .dialogue import HELDOUT_TASKS, TASKS, Dialogue, make_dialogue
from .mel import log_mel
from .render import render_audio, render_image, render_video
from .scenes import SPLITS, check_mix_prob, sample_clip, sample_scene, sample_sound

DEFAULT_TASK_WEIGHTS: dict[str, float] = {
    "t2i": 2.0,
    "t2v": 1.0,
    "t2a": 1.0,
    "i2t": 1.5,
    "v2t": 1.0,
    "a2t": 1.0,
    "edit": 1.5,
    "i2v": 1.0,
    "multi": 1.0,
    "chat": 0.5,
    "multiturn": 1.5,
}
"""Task mixture of :class:`DialogueDataset` when no weights are given."""


def item_rng(split: str, seed: int, index: int, salt: str = "") -> random.Random:
    """The random source of one item: the same ``(split, seed, index, salt)`` gives the same stream.

    Args:
        split: dataset split.
        seed: dataset seed.
        index: item index.
        salt: distinguishes datasets that should not share streams (e.g. the dataset class).

    Returns:
        A seeded ``random.Random``.
    """
    digest = hashlib.sha256(f"{salt}/{split}/{seed}/{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def to_pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) → float32 (..., 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)
    return x.movedim(-1, -3)


class _WorldDataset(Dataset):
    def __init__(self, split: str, size: int, seed: int = 0):
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
        if size < 0:
            raise ValueError(f"`size` must be >= 0, got {size}")
        self.split, self.size, self.seed = split, int(size), int(seed)

    def __len__(self) -> int:
        return self.size

    def _rng(self, index: int) -> random.Random:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for a dataset of size {self.size}")
        return item_rng(self.split, self.seed, index % self.size, type(self).__name__)


class DialogueDataset(_WorldDataset):
    """Dialogues of a task mixture (no rendering; render media where they are consumed).

    Args:
        split: ``"train"``, ``"val"`` or ``"heldout"``.
        size: number of items.
        seed: dataset seed.
        tasks: tasks to draw from (default: every task, or :data:`HELDOUT_TASKS` for ``"heldout"``).
        task_weights: relative weights, a mapping task → weight or a sequence aligned with
            ``tasks`` (default :data:`DEFAULT_TASK_WEIGHTS`).
        two_object_prob: share of two-shape scenes in text → image and image → text dialogues
            (default ``None``: the world's 0.3; see :func:`~anygen.world.make_dialogue`).
        relative_edit_prob: share of multi-turn sound / clip edits that step the pitch or reverse the motion
            (default ``None``: the world's mix; see :func:`~anygen.world.make_dialogue`).
        multiturn_audio_prob: share of multi-turn dialogues about a sound (default ``None``: the world's one in
            three; see :func:`~anygen.world.make_dialogue`).
    """

    def __init__(
        self,
        split: str,
        size: int,
        seed: int = 0,
        tasks: Sequence[str] | None = None,
        task_weights: Mapping[str, float] | Sequence[float] | None = None,
        two_object_prob: float | None = None,
        relative_edit_prob: float | None = None,
        multiturn_audio_prob: float | None = None,
    ):
        super().__init__(split, size, seed)
        check_mix_prob("two_object_prob", two_object_prob)
        check_mix_prob("relative_edit_prob", relative_edit_prob)
        check_mix_prob("multiturn_audio_prob", multiturn_audio_prob)
        self.two_object_prob, self.relative_edit_prob = two_object_prob, relative_edit_prob
        self.multiturn_audio_prob = multiturn_audio_prob
        tasks = tuple(tasks) if tasks is not None else (HELDOUT_TASKS if split == "heldout" else TASKS)
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise ValueError(f"`tasks` must be a non-empty subset of {TASKS}, got {tasks}")
        if split == "heldout" and (bad := [t for t in tasks if t not in HELDOUT_TASKS]):
            raise ValueError(f"Tasks {bad} have no held-out dialogues; use tasks from {HELDOUT_TASKS}")
        if task_weights is None:
            weights = [DEFAULT_TASK_WEIGHTS[t] for t in tasks]
        elif isinstance(task_weights, Mapping):
            weights = [float(task_weights.get(t, 0.0)) for t in tasks]
        else:
            weights = [float(w) for w in task_weights]
            if len(weights) != len(tasks):
                raise ValueError(f"`task_weights` has {len(weights)} entries for {len(tasks)} tasks")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"`task_weights` must be non-negative with a positive sum, got {weights}")
        self.tasks, self.task_weights = tasks, weights

    def __getitem__(self, index: int) -> Dialogue:
        rng = self._rng(index)
        task = rng.choices(self.tasks, weights=self.task_weights)[0]
        return make_dialogue(task, rng, self.split, self.two_object_prob, self.relative_edit_prob,
                             self.multiturn_audio_prob)


class ImageCaptionDataset(_WorldDataset):
    """Rendered scenes with canonical captions.

    Items: ``dict(pixel_values=float32 (3, 64, 64) in [-1, 1], caption=str, scene=Scene)``.

    Args:
        split: ``"train"``, ``"val"`` or ``"heldout"``.
        size: number of items.
        seed: dataset seed.
        two_object_prob: probability of a two-shape scene.
    """

    def __init__(self, split: str, size: int, seed: int = 0, two_object_prob: float = 0.3):
        super().__init__(split, size, seed)
        if not 0.0 <= two_object_prob <= 1.0:
            raise ValueError(f"`two_object_prob` must be in [0, 1], got {two_object_prob}")
        self.two_object_prob = two_object_prob

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        scene = sample_scene(rng, self.split, n_objects=2 if rng.random() < self.two_object_prob else 1)
        return dict(pixel_values=to_pixels(render_image(scene)), caption=scene.caption(), scene=scene)


class VideoCaptionDataset(_WorldDataset):
    """Rendered clips with canonical captions.

    Items: ``dict(pixel_values=float32 (8, 3, 64, 64) in [-1, 1], caption=str, clip=Clip)``.

    Args:
        split: ``"train"``, ``"val"`` or ``"heldout"``.
        size: number of items.
        seed: dataset seed.
        lanes: draw each clip's lane from these instead of all of ``spec.LANES``. Captions never name
            the lane, so a generator trained on one lane draws every clip there: its sampler does not have
            to agree on a lane across frames that it denoises from independent noise.
    """

    def __init__(self, split: str, size: int, seed: int = 0, lanes: Sequence[int] | None = None):
        super().__init__(split, size, seed)
        if lanes is not None and (not isinstance(lanes, Sequence) or not lanes or set(lanes) - set(spec.LANES)):
            raise ValueError(f"`lanes` must be a non-empty subset of {spec.LANES}, got {lanes}")
        self.lanes = tuple(lanes) if lanes is not None else None

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        clip = sample_clip(rng, self.split)
        if self.lanes is not None:
            clip = dataclasses.replace(clip, lane=rng.choice(self.lanes))
        return dict(pixel_values=to_pixels(render_video(clip)), caption=clip.caption(), clip=clip)


class AudioCaptionDataset(_WorldDataset):
    """Rendered tones with their log-mel spectrograms and canonical captions.

    Items: ``dict(mel=float32 (1, 64, 64), audio=float32 (16000,), caption=str, sound=Sound)``.
    """

    def __getitem__(self, index: int) -> dict[str, Any]:
        sound = sample_sound(self._rng(index), self.split)
        audio = torch.from_numpy(render_audio(sound))
        return dict(mel=log_mel(audio).unsqueeze(0), audio=audio, caption=sound.caption(), sound=sound)


def collate(batch: list) -> Any:
    """Batch dataset items: tensors are stacked, everything else (captions, scenes, dialogues) kept as lists.

    Args:
        batch: items of one of the datasets above.

    Returns:
        A dict of stacked tensors and lists, or the list itself for :class:`Dialogue` items.
    """
    if not batch or not isinstance(batch[0], Mapping):
        return list(batch)
    out = {}
    for key in batch[0]:
        values = [item[key] for item in batch]
        out[key] = torch.stack(values) if isinstance(values[0], torch.Tensor) else values
    return out
