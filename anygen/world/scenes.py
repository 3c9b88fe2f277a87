"""Scene descriptions of the Shapes World and their seeded samplers.

A scene is a small frozen dataclass of attribute words; rendering and captions
are pure functions of it, so one ``(split, seed)`` always yields the same data.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field

from . import spec

SPLITS = ("train", "val", "heldout")


@dataclass(frozen=True)
class Shape:
    """One flat-coloured shape of an image.

    Args:
        color: key of ``spec.COLORS``.
        shape: one of ``spec.SHAPES``.
        size: ``"small"`` or ``"large"``.
        pos: key of ``spec.POSITIONS``.
        jitter: (dx, dy) offset of the centre in px, |d| <= 2. Not an attribute:
            it is ignored when scenes are compared.
    """

    color: str
    shape: str
    size: str
    pos: str
    jitter: tuple[int, int] = field(default=(0, 0), compare=False)

    def __post_init__(self):
        _check("color", self.color, spec.COLORS)
        _check("shape", self.shape, spec.SHAPES)
        _check("size", self.size, spec.SIZES)
        _check("pos", self.pos, spec.POSITIONS)
        if max(abs(self.jitter[0]), abs(self.jitter[1])) > spec.MAX_JITTER:
            raise ValueError(f"`jitter` must be within ±{spec.MAX_JITTER} px, got {self.jitter}")

    def phrase(self) -> str:
        return f"a {self.size} {self.color} {self.shape} at the {self.pos}"


@dataclass(frozen=True)
class Scene:
    """A still image: a background and one or two shapes in reading order."""

    bg: str
    objects: tuple[Shape, ...]

    def __post_init__(self):
        _check("bg", self.bg, spec.BACKGROUNDS)
        if len(self.objects) not in (1, 2):
            raise ValueError(f"A scene holds one or two shapes, got {len(self.objects)}")
        if len(self.objects) == 2:
            a, b = self.objects
            (ax, ay), (bx, by) = spec.POSITIONS[a.pos], spec.POSITIONS[b.pos]
            if a.size != "small" or b.size != "small":
                raise ValueError("Both shapes of a two-shape scene must be small")
            if a.color == b.color:
                raise ValueError("The two shapes of a scene must have different colours")
            if sorted((abs(ax - bx), abs(ay - by))) != [0, 32]:
                raise ValueError("Two shapes must sit on neighbouring grid cells (32 px apart in x or in y)")
            if (ay, ax) > (by, bx):
                raise ValueError("Objects must be listed in reading order (top to bottom, then left to right)")

    modality = "image"

    def caption(self) -> str:
        """Canonical caption of WORLD.md."""
        return " and ".join(o.phrase() for o in self.objects) + f" on a {self.bg} background"

    def attributes(self) -> dict:
        return {"bg": self.bg, "objects": [dict(color=o.color, shape=o.shape, size=o.size, pos=o.pos) for o in self.objects]}


@dataclass(frozen=True)
class Clip:
    """A video: one shape on black moving in a straight line (lane = fixed coordinate)."""

    color: str
    shape: str
    size: str
    motion: str
    lane: int = 32
    jitter: tuple[int, int] = field(default=(0, 0), compare=False)

    def __post_init__(self):
        _check("color", self.color, spec.COLORS)
        _check("shape", self.shape, spec.SHAPES)
        _check("size", self.size, spec.SIZES)
        _check("motion", self.motion, spec.MOTIONS)
        _check("lane", self.lane, spec.LANES)

    modality = "video"

    def caption(self) -> str:
        return f"a {self.size} {self.color} {self.shape} moving {self.motion}"

    def attributes(self) -> dict:
        return dict(color=self.color, shape=self.shape, size=self.size, motion=self.motion)

    def centres(self) -> list[tuple[float, float]]:
        """Centre (x, y) of each frame: start + (end - start) * i / 7, unrounded."""
        lo, hi = 16.0, 48.0
        start, end = {"right": (lo, hi), "left": (hi, lo), "down": (lo, hi), "up": (hi, lo)}[self.motion]
        out = []
        for i in range(spec.NUM_FRAMES):
            t = start + (end - start) * i / (spec.NUM_FRAMES - 1)
            x, y = (t, float(self.lane)) if self.motion in ("right", "left") else (float(self.lane), t)
            out.append((x + self.jitter[0], y + self.jitter[1]))
        return out


@dataclass(frozen=True)
class Sound:
    """A one-second tone."""

    pitch: str
    timbre: str
    pattern: str

    def __post_init__(self):
        _check("pitch", self.pitch, spec.PITCHES)
        _check("timbre", self.timbre, spec.TIMBRES)
        _check("pattern", self.pattern, spec.PATTERNS)

    modality = "audio"

    def caption(self) -> str:
        return f"a {self.pattern} {self.timbre} {self.pitch} tone"

    def attributes(self) -> dict:
        return dict(pitch=self.pitch, timbre=self.timbre, pattern=self.pattern)


OPPOSITE_MOTION: dict[str, str] = {"left": "right", "right": "left", "up": "down", "down": "up"}


def relative_step(before, after) -> str | None:
    """The step that turns medium ``before`` into ``after`` without naming the new value, if it is one.

    Returns ``"higher"`` / ``"lower"`` for a sound one pitch up / down, ``"reverse"`` for a clip moving the
    opposite way, every other attribute kept; None otherwise (another edit, an unrelated medium).
    """
    if isinstance(before, Sound) and isinstance(after, Sound) and dataclasses.replace(after, pitch=before.pitch) == before:
        order = list(spec.PITCHES)
        return {1: "higher", -1: "lower"}.get(order.index(after.pitch) - order.index(before.pitch))
    if isinstance(before, Clip) and isinstance(after, Clip) and dataclasses.replace(after, motion=before.motion) == before:
        return "reverse" if after.motion == OPPOSITE_MOTION[before.motion] else None
    return None


def _check(name, value, allowed):
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}")


# ----------------------------------------------------------------------------- sampling


def is_heldout(color: str, shape: str) -> bool:
    return (color, shape) in spec.HELDOUT_PAIRS


def _color_shape(rng: random.Random, split: str, exclude_color: str | None = None) -> tuple[str, str]:
    """Draw a (colour, shape) pair allowed in ``split``.

    ``train``/``val`` never draw a held-out pair; ``heldout`` draws only those.
    """
    if split == "heldout":
        pairs = sorted(p for p in spec.HELDOUT_PAIRS if p[0] != exclude_color)
    else:
        pairs = [
            (c, s) for c in spec.COLORS for s in spec.SHAPES if (c, s) not in spec.HELDOUT_PAIRS and c != exclude_color
        ]
    return rng.choice(pairs)


def _jitter(rng: random.Random) -> tuple[int, int]:
    return (rng.randint(-spec.MAX_JITTER, spec.MAX_JITTER), rng.randint(-spec.MAX_JITTER, spec.MAX_JITTER))


def _check_split(split: str):
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")


def sample_shape(rng: random.Random, split: str = "train", **fixed) -> Shape:
    """One shape; keyword arguments pin attributes (e.g. ``size="small"``)."""
    _check_split(split)
    color, shape = fixed.pop("color", None), fixed.pop("shape", None)
    if color is None or shape is None:
        for _ in range(1000):
            c, s = _color_shape(rng, split)
            if (color is None or c == color) and (shape is None or s == shape):
                color, shape = c, s
                break
        else:
            raise ValueError(f"No (colour, shape) pair of split {split!r} matches color={color}, shape={shape}")
    size = fixed.pop("size", None) or rng.choice(list(spec.SIZES))
    pos = fixed.pop("pos", None) or rng.choice(list(spec.POSITIONS))
    jitter = fixed.pop("jitter", None) or _jitter(rng)
    if fixed:
        raise ValueError(f"Unknown shape attributes: {sorted(fixed)}")
    return Shape(color, shape, size, pos, jitter)


TWO_OBJECT_PROB = 0.3  # WORLD.md: a scene has one shape with probability 0.7


def check_mix_prob(name: str, value: float | None) -> None:
    """A training-mix probability (``two_object_prob``, ``relative_edit_prob``, ...): in [0, 1], or None for the world's."""
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1] or None, got {value}")


def sample_scene(
    rng: random.Random, split: str = "train", n_objects: int | None = None, two_object_prob: float | None = None
) -> Scene:
    """A random scene of ``split``: ``n_objects`` shapes if given, else two with probability ``two_object_prob``
    (``None``: the world's :data:`TWO_OBJECT_PROB`; a training knob, see :func:`~anygen.world.make_dialogue`)."""
    _check_split(split)
    check_mix_prob("two_object_prob", two_object_prob)
    bg = rng.choice(list(spec.BACKGROUNDS))
    p = TWO_OBJECT_PROB if two_object_prob is None else two_object_prob
    n = n_objects or (1 if rng.random() < 1.0 - p else 2)
    if n == 1:
        return Scene(bg, (sample_shape(rng, split),))
    # Two small shapes on neighbouring cells; in the held-out split at least the first drawn is held out.
    names = list(spec.POSITIONS)
    while True:
        a, b = rng.sample(names, 2)
        (ax, ay), (bx, by) = spec.POSITIONS[a], spec.POSITIONS[b]
        if sorted((abs(ax - bx), abs(ay - by))) == [0, 32]:
            break
    c1, s1 = _color_shape(rng, split)
    c2, s2 = _color_shape(rng, "train" if split == "heldout" else split, exclude_color=c1)
    o1 = Shape(c1, s1, "small", a, _jitter(rng))
    o2 = Shape(c2, s2, "small", b, _jitter(rng))
    objs = sorted([o1, o2], key=lambda o: spec.POSITIONS[o.pos][::-1])
    return Scene(bg, tuple(objs))


def sample_clip(rng: random.Random, split: str = "train") -> Clip:
    _check_split(split)
    color, shape = _color_shape(rng, split)
    return Clip(color, shape, rng.choice(list(spec.SIZES)), rng.choice(spec.MOTIONS), rng.choice(spec.LANES), _jitter(rng))


def sample_sound(rng: random.Random, split: str = "train") -> Sound:
    """Sounds have no held-out pairs; every split draws from the full space."""
    _check_split(split)
    return Sound(rng.choice(list(spec.PITCHES)), rng.choice(spec.TIMBRES), rng.choice(spec.PATTERNS))
