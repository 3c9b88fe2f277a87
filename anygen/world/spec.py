"""Normative constants of the Shapes World (``shared/WORLD.md``, spec v1).

Every renderer, caption, judge and held-out split reads its numbers from here,
so a change to the world is a change to this one file (and to the spec).
"""

from __future__ import annotations

IMAGE_SIZE = 64
NUM_FRAMES = 8
FPS = 8
SAMPLE_RATE = 16_000
AUDIO_SECONDS = 1.0
NUM_SAMPLES = int(SAMPLE_RATE * AUDIO_SECONDS)
MAX_JITTER = 2  # px, constant over a clip

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (120, 120, 120),
}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (240, 220, 30),
    "green": (30, 190, 50),
    "cyan": (30, 210, 220),
    "blue": (40, 70, 230),
    "purple": (150, 50, 210),
    "pink": (250, 120, 190),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

SIZES: dict[str, int] = {"small": 14, "large": 28}

POSITIONS: dict[str, tuple[int, int]] = {
    "top-left": (16, 16),
    "top": (32, 16),
    "top-right": (48, 16),
    "left": (16, 32),
    "center": (32, 32),
    "right": (48, 32),
    "bottom-left": (16, 48),
    "bottom": (32, 48),
    "bottom-right": (48, 48),
}

MOTIONS: tuple[str, ...] = ("right", "left", "down", "up")
LANES: tuple[int, ...] = (16, 32, 48)

PITCHES: dict[str, float] = {
    "very low": 110.0,
    "low": 220.0,
    "medium": 440.0,
    "high": 880.0,
    "very high": 1760.0,
}
TIMBRES: tuple[str, ...] = ("pure", "buzzy")
PATTERNS: tuple[str, ...] = ("steady", "beeping", "rising", "falling")

BEEP_STARTS_S: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)
BEEP_SECONDS = 0.125
FADE_SECONDS = 0.010
PEAK_AMPLITUDE = 0.5
HARMONIC_LIMIT_HZ = 8000.0

# Log-mel spectrogram of the audio generator.
MEL = dict(
    sample_rate=SAMPLE_RATE,
    n_fft=1024,
    hop_length=256,
    power=2.0,
    n_mels=64,
    f_min=0.0,
    f_max=8000.0,
    mel_scale="htk",
    norm=None,
    center=True,
)
MEL_FLOOR = 1e-5
MEL_FRAMES = 64

# (colour, shape) pairs that never appear in training, in any role.
HELDOUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    {("purple", "triangle"), ("cyan", "cross"), ("orange", "square"), ("green", "circle")}
)
