"""Renderers of the Shapes World: images, videos and sounds, exactly per WORLD.md.

All renderers are pure functions of their scene: the same scene (jitter
included) gives bit-identical arrays.
"""

from __future__ import annotations

import math

import numpy as np

from . import spec
from .scenes import Clip, Scene, Sound

_N = spec.IMAGE_SIZE
# Pixel (x, y) is inside a shape when its centre (x + 1/2, y + 1/2) is.
_PY, _PX = np.mgrid[0:_N, 0:_N].astype(np.float64) + 0.5


def shape_mask(shape: str, cx: float, cy: float, s: float) -> np.ndarray:
    """Boolean (64, 64) mask of ``shape`` in a box of side ``s`` centred on (cx, cy).

    Intervals are half-open, [c - w/2, c + w/2).
    """
    h = s / 2
    in_x = (_PX >= cx - h) & (_PX < cx + h)
    in_y = (_PY >= cy - h) & (_PY < cy + h)
    if shape == "square":
        return in_x & in_y
    if shape == "circle":
        return (_PX - cx) ** 2 + (_PY - cy) ** 2 < h * h
    if shape == "triangle":
        # Apex at (cx, cy - h), base along y = cy + h: half-width grows linearly from 0 to h.
        half_width = (_PY - (cy - h)) / 2
        return in_y & (np.abs(_PX - cx) < half_width)
    if shape == "cross":
        t = round(s / 3) / 2
        bar_x = in_x & (_PY >= cy - t) & (_PY < cy + t)
        bar_y = in_y & (_PX >= cx - t) & (_PX < cx + t)
        return bar_x | bar_y
    raise ValueError(f"`shape` must be one of {spec.SHAPES}, got {shape!r}")


def render_image(scene: Scene) -> np.ndarray:
    """Render a still scene.

    Args:
        scene: the :class:`Scene` to draw.

    Returns:
        ``np.uint8`` array of shape (64, 64, 3).
    """
    img = np.empty((_N, _N, 3), dtype=np.uint8)
    img[:] = spec.BACKGROUNDS[scene.bg]
    for obj in scene.objects:
        cx, cy = spec.POSITIONS[obj.pos]
        mask = shape_mask(obj.shape, cx + obj.jitter[0], cy + obj.jitter[1], spec.SIZES[obj.size])
        img[mask] = spec.COLORS[obj.color]
    return img


def render_video(clip: Clip) -> np.ndarray:
    """Render a clip.

    Returns:
        ``np.uint8`` array of shape (8, 64, 64, 3): frames at 8 fps on black.
    """
    frames = np.zeros((spec.NUM_FRAMES, _N, _N, 3), dtype=np.uint8)
    for i, (cx, cy) in enumerate(clip.centres()):
        frames[i][shape_mask(clip.shape, cx, cy, spec.SIZES[clip.size])] = spec.COLORS[clip.color]
    return frames


def _segments(pattern: str) -> list[tuple[float, float]]:
    if pattern == "beeping":
        return [(s, s + spec.BEEP_SECONDS) for s in spec.BEEP_STARTS_S]
    return [(0.0, spec.AUDIO_SECONDS)]


def render_audio(sound: Sound) -> np.ndarray:
    """Render a tone.

    Returns:
        ``np.float32`` array of shape (16000,), mono at 16 kHz, peak 0.5.
    """
    sr, f0 = spec.SAMPLE_RATE, spec.PITCHES[sound.pitch]
    out = np.zeros(spec.NUM_SAMPLES, dtype=np.float64)
    f_lo, f_hi = {"rising": (f0 / math.sqrt(2), f0 * math.sqrt(2)), "falling": (f0 * math.sqrt(2), f0 / math.sqrt(2))}.get(
        sound.pattern, (f0, f0)
    )
    # Band-limit against the highest frequency the segment reaches, so k*f < 8 kHz throughout.
    f_max = max(f_lo, f_hi)
    harmonics = [1] if sound.timbre == "pure" else [k for k in range(1, 200, 2) if k * f_max < spec.HARMONIC_LIMIT_HZ]
    fade = int(round(spec.FADE_SECONDS * sr))
    for start, end in _segments(sound.pattern):
        a, b = int(round(start * sr)), int(round(end * sr))
        t = np.arange(b - a) / sr
        dur = (b - a) / sr
        if f_lo == f_hi:
            phase = 2 * math.pi * f0 * t
        else:  # log-linear glide f(t) = f_lo * r**(t/dur); phase is its integral
            r = f_hi / f_lo
            phase = 2 * math.pi * f_lo * dur / math.log(r) * (r ** (t / dur) - 1)
        seg = sum(np.sin(k * phase) / k for k in harmonics)
        seg *= spec.PEAK_AMPLITUDE / np.max(np.abs(seg))
        ramp = np.linspace(0.0, 1.0, fade, endpoint=False)
        seg[:fade] *= ramp
        seg[-fade:] *= ramp[::-1]
        out[a:b] = seg
    return out.astype(np.float32)


def render(medium: Scene | Clip | Sound) -> np.ndarray:
    """Render any medium by type."""
    if isinstance(medium, Scene):
        return render_image(medium)
    if isinstance(medium, Clip):
        return render_video(medium)
    if isinstance(medium, Sound):
        return render_audio(medium)
    raise TypeError(f"Cannot render {type(medium).__name__}")
