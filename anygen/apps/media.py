"""Reading attached media from files and writing generated media to files, for the apps.

Inputs follow the pipeline's contract: images as RGB ``PIL.Image``, audio as
float32 mono at 16 kHz, videos as lists of RGB frames. Every file is written
to a temporary name in its destination folder and renamed, so an interrupted
run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import AnyGenInputError
from ..world import spec

SAMPLE_RATE = spec.SAMPLE_RATE
VIDEO_FPS = 8
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}
VIDEO_SUFFIXES = {".mp4", ".webm", ".mov", ".avi", ".mkv"}


def media_kind(path: str | Path) -> str | None:
    """``"image"``, ``"audio"``, ``"video"`` or ``None``, from the file name's suffix."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in (("image", IMAGE_SUFFIXES), ("audio", AUDIO_SUFFIXES), ("video", VIDEO_SUFFIXES)):
        if suffix in suffixes:
            return kind
    return None


def _check_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise AnyGenInputError(f"{what}: no such file {str(path)!r}; give the path of an existing file")
    return path


def load_image(path: str | Path) -> Image.Image:
    """An RGB image from a file (PNG, JPEG, WebP, ...)."""
    path = _check_file(path, "image")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except OSError as e:
        raise AnyGenInputError(f"image: cannot read {str(path)!r} as an image ({e})") from None


def _read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A sound file as a float32 mono waveform (stereo averaged) at its own sample rate."""
    import soundfile as sf

    path = _check_file(path, "audio")
    try:
        wave, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AnyGenInputError(f"audio: cannot read {str(path)!r} as a sound file ({e})") from None
    if wave.shape[0] == 0:
        raise AnyGenInputError(f"audio: {str(path)!r} holds no samples")
    return wave.mean(axis=1), rate


def _resample(wave: np.ndarray, rate: int) -> np.ndarray:
    if rate != SAMPLE_RATE:
        import torch
        import torchaudio

        wave = torchaudio.functional.resample(torch.from_numpy(wave), rate, SAMPLE_RATE).numpy()
        wave = np.clip(wave, -1.0, 1.0)  # the filter may overshoot a full-scale input slightly
    return np.ascontiguousarray(wave, dtype=np.float32)


def load_audio(path: str | Path) -> np.ndarray:
    """A float32 mono waveform at 16 kHz from a sound file (stereo is averaged, other rates resampled)."""
    return _resample(*_read_audio(path))


def load_audio_clip(path: str | Path, seconds: float = spec.NUM_SAMPLES / spec.SAMPLE_RATE) -> tuple[np.ndarray, str | None]:
    """A sound file as the model hears it: mono, resampled to 16 kHz, its first ``seconds`` kept.

    Args:
        path: the sound file (a recording or an upload).
        seconds: the most the model hears.

    Returns:
        ``(waveform, note)``: float32 samples at 16 kHz, and a sentence saying what was changed (``None`` when
        the file was already a 16 kHz clip of at most ``seconds``).

    Raises:
        AnyGenInputError: the file is missing or unreadable.
    """
    wave, rate = _read_audio(path)
    changes = []
    if rate != SAMPLE_RATE:
        changes.append(f"resampled from {rate} Hz to {SAMPLE_RATE} Hz")
    duration = wave.shape[0] / rate
    if wave.shape[0] > round(seconds * rate):
        changes.append(f"cut to its first {seconds:g} s (it lasts {duration:.1f} s)")
        wave = wave[: round(seconds * rate)]
    wave = _resample(wave, rate)[: round(seconds * SAMPLE_RATE)]
    note = f"{Path(path).name} was {' and '.join(changes)}." if changes else None
    return wave, note


def load_video(path: str | Path) -> list[Image.Image]:
    """Every frame of a video file (mp4, webm, gif, ...) as RGB images."""
    import imageio.v3 as iio

    path = _check_file(path, "video")
    try:
        frames = iio.imread(path)
    except Exception as e:  # imageio raises plugin-specific errors
        raise AnyGenInputError(f"video: cannot read {str(path)!r} as a video ({e})") from None
    if frames.ndim == 3:  # a single frame: (H, W, C)
        frames = frames[None]
    return [Image.fromarray(f).convert("RGB") for f in frames]


def load_any(path: str | Path) -> tuple[str, Any]:
    """``(kind, value)`` of an attached file, its kind told by its suffix."""
    kind = media_kind(path)
    if kind is None:
        raise AnyGenInputError(
            f"attachment {Path(path).name!r}: unknown file type; attach an image "
            f"({', '.join(sorted(IMAGE_SUFFIXES))}), a sound ({', '.join(sorted(AUDIO_SUFFIXES))}) "
            f"or a video ({', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    return kind, {"image": load_image, "audio": load_audio, "video": load_video}[kind](path)


def _atomic(path: Path, write) -> None:
    """Call ``write(tmp_path)``, then rename ``tmp_path`` to ``path`` (same folder, so the rename is atomic)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2) + "\n")


def write_image(path: str | Path, image: Image.Image) -> None:
    """Write an image (format from the suffix) atomically."""
    path = Path(path)
    _atomic(path, lambda tmp: image.save(tmp, format=Image.registered_extensions()[path.suffix.lower()]))


def write_audio(path: str | Path, wave: np.ndarray, sample_rate: int) -> None:
    """Write a float32 mono waveform as 16-bit PCM .wav atomically."""
    import soundfile as sf

    _atomic(Path(path), lambda tmp: sf.write(tmp, np.asarray(wave, dtype=np.float32), sample_rate, subtype="PCM_16", format="WAV"))


def write_video(path: str | Path, frames: list[Image.Image], fps: int = VIDEO_FPS) -> None:
    """Write frames as .mp4 (H.264, yuv420p, plays in browsers) or .gif, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    array = np.stack([np.asarray(f.convert("RGB")) for f in frames])  # (frames, H, W, 3)
    if path.suffix.lower() == ".gif":
        _atomic(path, lambda tmp: iio.imwrite(tmp, array, extension=".gif", duration=1000 / fps, loop=0))
    else:
        _atomic(path, lambda tmp: iio.imwrite(tmp, array, extension=path.suffix, fps=fps, codec="libx264", macro_block_size=1))


def write_output(out, directory: str | Path, gif: bool = True) -> list[str]:
    """Write an ``AnyGenOutput`` into ``directory``: ``reply.txt``, ``image_{i}.png``,
    ``video_{i}.mp4`` (and ``video_{i}.gif``), ``audio_{i}.wav``.

    Args:
        out: the pipeline's output (``text``, ``images``, ``videos``, ``audios``, ``sample_rate``).
        directory: an existing folder.
        gif: also write each video as a GIF.

    Returns:
        The written file names, relative to ``directory``, in the order above.
    """
    directory = Path(directory)
    write_text(directory / "reply.txt", out.text)
    names = ["reply.txt"]
    for i, image in enumerate(out.images):
        write_image(directory / f"image_{i}.png", image)
        names.append(f"image_{i}.png")
    for i, frames in enumerate(out.videos):
        write_video(directory / f"video_{i}.mp4", frames)
        names.append(f"video_{i}.mp4")
        if gif:
            write_video(directory / f"video_{i}.gif", frames)
            names.append(f"video_{i}.gif")
    for i, wave in enumerate(out.audios):
        write_audio(directory / f"audio_{i}.wav", wave, out.sample_rate)
        names.append(f"audio_{i}.wav")
    return names
