"""Measurement-based judges of the Shapes World: what does an image, video or sound hold?

No learned model: each judge measures its medium against the numbers of
``WORLD.md`` (``anygen.world.spec``). They are meant for the outputs of small
generators, so they tolerate slightly-off colours, soft edges and a few stray
pixels or a vocoded spectrogram, and answer ``None`` when the input is not a
recognisable Shapes-World medium (noise, a blob, two colours in one shape).

* :func:`judge_image` — background, then connected components of the
  foreground; colour from the saturated core, size from the bounding box,
  position from the box centre, shape by IoU with the four templates.
* :func:`judge_video` — the image measurement per frame (one shape on black),
  then the motion from a straight-line fit of the box centres.
* :func:`judge_mel` / :func:`judge_audio` — per-frame spectral peak on the
  exact HTK mel scale: pitch, 3rd-harmonic level (timbre), sounding segments
  and log-frequency slope (pattern).
"""

from __future__ import annotations

import functools
from collections import Counter

import numpy as np
import torch

from ..world import spec
from ..world.scenes import Scene, Shape

# ----------------------------------------------------------------------------- thresholds

BG_RADIUS = 40.0  # RGB distance within which a pixel counts as background; every colour is >= 118 from every bg
MIN_BG_FRACTION = 0.55  # a large shape covers 19 % of the image, two small ones ~9 %
SPECK_AREA = 24  # components smaller than this (a 5x5 blob) are stray pixels and ignored...
MAX_STRAY = 64  # ...as long as they add up to at most this many pixels
COLOR_RADIUS = 60.0  # max RGB distance of a shape's core colour to its palette colour (closest pair: 81)
MIN_COLOR_AGREEMENT = 0.6  # share of a shape's core pixels that must be near its palette colour
MIN_IOU = 0.7  # IoU with the best template; a disc fills pi/4 = 0.785 of its square
MIN_ASPECT = 0.7  # bounding-box short/long side
SIZE_SPLIT = (spec.SIZES["small"] + spec.SIZES["large"]) / 2  # 21 px
SIZE_RANGE = (8, 36)  # a box side outside this is no shape of the world
GRID = np.array(sorted({x for x, _ in spec.POSITIONS.values()}), dtype=np.float64)  # 16, 32, 48
GRID_TOLERANCE = 8.0  # px from the nearest grid centre, per axis

MIN_VALID_FRAMES = 6  # of 8: frames that must show exactly one recognised shape
MOTION_DISTANCE = 32.0  # px travelled along the motion axis over the clip
MOTION_TOLERANCE = 10.0  # |travel - 32| allowed along the motion axis
MAX_CROSS_TRAVEL = 6.0  # px allowed across it
MAX_TRACK_RESIDUAL = 3.0  # px RMS from a constant-speed straight line

_BG_NAMES = tuple(spec.BACKGROUNDS)
_BG_RGB = np.array([spec.BACKGROUNDS[k] for k in _BG_NAMES], dtype=np.float32)  # (3 backgrounds, RGB)
_COLOR_NAMES = tuple(spec.COLORS)
_COLOR_RGB = np.array([spec.COLORS[k] for k in _COLOR_NAMES], dtype=np.float32)  # (8 colours, RGB)
_POS_BY_XY = {xy: name for name, xy in spec.POSITIONS.items()}


# ----------------------------------------------------------------------------- input conversion


def _as_image_array(img, name: str) -> np.ndarray:
    """PIL image or uint8 array → float32 (64, 64, 3)."""
    if hasattr(img, "convert"):  # PIL.Image
        img = np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    n = spec.IMAGE_SIZE
    if arr.shape != (n, n, 3):
        raise ValueError(f"`{name}` must be a ({n}, {n}, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8 (0..255), got {arr.dtype}; convert with (x * 255).round().astype(np.uint8)")
    return arr.astype(np.float32)


# ----------------------------------------------------------------------------- connected components


def _label(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a boolean (N, H, W) mask, all N images at once.

    Returns int64 labels of the same shape: 0 off the mask, otherwise 1 + the flat
    index of the component's last pixel (unique across the batch). Max-propagation
    over 3x3 neighbourhoods plus pointer jumping: converges in a handful of rounds.
    """
    lab = np.where(mask, np.arange(1, mask.size + 1).reshape(mask.shape), 0)
    while True:
        p = np.pad(lab, ((0, 0), (1, 1), (1, 1)))
        row = np.maximum(np.maximum(p[:, :, :-2], p[:, :, 1:-1]), p[:, :, 2:])  # 3-wide max along x
        nb = np.maximum(np.maximum(row[:, :-2], row[:, 1:-1]), row[:, 2:])  # then along y: 3x3 max
        nb = np.where(mask, nb, 0)
        # Every label is (1 + index of) a pixel of the same component; jump to that pixel's label.
        flat = nb.ravel()
        nb = np.where(mask, flat[np.maximum(flat - 1, 0)].reshape(nb.shape), 0)
        if np.array_equal(nb, lab):
            return lab
        lab = nb


# ----------------------------------------------------------------------------- shape templates


@functools.lru_cache(maxsize=4096)
def _templates(h: int, w: int) -> np.ndarray:
    """Boolean (4 shapes, h, w) masks of the spec shapes stretched to an h x w box (pixel-centre rule)."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    u, v = u / w, v / h  # normalised box coordinates in (0, 1)
    s = (h + w) / 2
    bar = round(s / 3) / s / 2  # half the cross bar thickness, in box units
    masks = {
        "circle": (u - 0.5) ** 2 + (v - 0.5) ** 2 < 0.25,
        "square": np.ones((h, w), dtype=bool),
        "triangle": np.abs(u - 0.5) < v / 2,  # apex at top centre, base along the bottom
        "cross": (np.abs(u - 0.5) < bar) | (np.abs(v - 0.5) < bar),
    }
    return np.stack([masks[k] for k in spec.SHAPES])


# ----------------------------------------------------------------------------- image measurement


def _background(img: np.ndarray) -> tuple[int, np.ndarray] | None:
    """Index of the background colour and the (H, W) distance of every pixel to it, or None."""
    d = np.linalg.norm(img[None] - _BG_RGB[:, None, None], axis=-1)  # (3 backgrounds, H, W)
    frac = (d <= BG_RADIUS).mean(axis=(1, 2))
    k = int(frac.argmax())
    if frac[k] < MIN_BG_FRACTION:
        return None
    return k, d[k]


def _measure_objects(img: np.ndarray, bg_rgb: np.ndarray, dist_bg: np.ndarray, labels: np.ndarray) -> list[dict] | None:
    """Recognise every foreground component of one image.

    Args:
        img: float32 (H, W, 3).
        bg_rgb: (3,) background colour.
        dist_bg: (H, W) RGB distance of each pixel to the background.
        labels: (H, W) component labels of the foreground (0 = background).

    Returns:
        One dict per shape (color, shape, size, cx, cy; unsorted), or None when a
        component is not a shape of the world or the stray pixels are too many.
    """
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    if areas[areas < SPECK_AREA].sum() > MAX_STRAY:
        return None
    objects = []
    for lab in ids[areas >= SPECK_AREA]:
        ys, xs = np.nonzero(labels == lab)
        pix, dist = img[ys, xs], dist_bg[ys, xs]
        # Colour of the saturated core (the half farthest from the background): soft edges blend into bg.
        core = pix[dist >= np.median(dist)]
        rgb = np.median(core, axis=0)
        dc = np.linalg.norm(_COLOR_RGB - rgb, axis=1)
        ci = int(dc.argmin())
        if dc[ci] > COLOR_RADIUS:
            return None
        if (np.linalg.norm(core - _COLOR_RGB[ci], axis=1) <= COLOR_RADIUS).mean() < MIN_COLOR_AGREEMENT:
            return None
        # The shape proper: pixels nearer its own colour than the background (coverage > 1/2 on soft edges).
        inside = np.linalg.norm(pix - rgb, axis=1) < np.linalg.norm(pix - bg_rgb, axis=1)
        ys, xs = ys[inside], xs[inside]
        if len(ys) < SPECK_AREA:
            return None
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        h, w = int(y1 - y0), int(x1 - x0)
        if min(h, w) / max(h, w) < MIN_ASPECT or not SIZE_RANGE[0] <= max(h, w) <= SIZE_RANGE[1]:
            return None
        mask = np.zeros((h, w), dtype=bool)
        mask[ys - y0, xs - x0] = True
        t = _templates(h, w)
        iou = (t & mask).sum(axis=(1, 2)) / (t | mask).sum(axis=(1, 2))
        si = int(iou.argmax())
        if iou[si] < MIN_IOU:
            return None
        objects.append(
            dict(
                color=_COLOR_NAMES[ci],
                shape=spec.SHAPES[si],
                size="small" if max(h, w) < SIZE_SPLIT else "large",
                cx=(x0 + x1) / 2,
                cy=(y0 + y1) / 2,
            )
        )
    return objects


def _grid_pos(cx: float, cy: float) -> str | None:
    gx, gy = GRID[np.abs(GRID - cx).argmin()], GRID[np.abs(GRID - cy).argmin()]
    if abs(gx - cx) > GRID_TOLERANCE or abs(gy - cy) > GRID_TOLERANCE:
        return None
    return _POS_BY_XY[(int(gx), int(gy))]


def judge_image(img) -> dict | None:
    """Measure what a Shapes-World image shows.

    Args:
        img: ``np.uint8`` array (64, 64, 3) or a ``PIL.Image``.

    Returns:
        ``{"bg": str, "objects": [{"color", "shape", "size", "pos"}, ...]}`` with the
        objects in reading order, or ``None`` when the image is not a valid scene
        of the world (no dominant background, an unrecognised blob, too many stray
        pixels, or a layout ``anygen.world.scenes.Scene`` rejects).

    Raises:
        ValueError: ``img`` is not a 64x64 RGB uint8 image.
    """
    x = _as_image_array(img, "img")
    found = _background(x)
    if found is None:
        return None
    k, dist_bg = found
    labels = _label((dist_bg > BG_RADIUS)[None])[0]
    objects = _measure_objects(x, _BG_RGB[k], dist_bg, labels)
    if not objects or len(objects) > 2:
        return None
    shapes = []
    for o in objects:
        pos = _grid_pos(o["cx"], o["cy"])
        if pos is None:
            return None
        shapes.append(Shape(o["color"], o["shape"], o["size"], pos))
    shapes.sort(key=lambda s: spec.POSITIONS[s.pos][::-1])  # reading order: top to bottom, then left to right
    try:
        scene = Scene(_BG_NAMES[k], tuple(shapes))
    except ValueError:  # two shapes breaking the two-shape rules (same cell, same colour, large, far apart)
        return None
    return scene.attributes()


# ----------------------------------------------------------------------------- video


def _as_video_array(frames) -> np.ndarray:
    """List of PIL frames or uint8 array → float32 (T, 64, 64, 3)."""
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f.convert("RGB")) if hasattr(f, "convert") else np.asarray(f) for f in frames])
    arr = np.asarray(frames)
    n = spec.IMAGE_SIZE
    if arr.ndim != 4 or arr.shape[1:] != (n, n, 3) or arr.shape[0] < 2:
        raise ValueError(f"`frames` must be (T >= 2, {n}, {n}, 3) RGB frames, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"`frames` must be uint8 (0..255), got {arr.dtype}; convert with (x * 255).round().astype(np.uint8)")
    return arr.astype(np.float32)


def _majority(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]


def judge_video(frames) -> dict | None:
    """Measure what a Shapes-World clip shows.

    Args:
        frames: ``np.uint8`` array (T, 64, 64, 3) (T = 8 in the world) or a list of PIL frames.

    Returns:
        ``{"color", "shape", "size", "motion"}`` or ``None`` when the clip is not one
        shape on black moving ~32 px in a straight line at constant speed along x or y.
        Colour, shape and size are the majority over frames; at most
        ``T - MIN_VALID_FRAMES * T / 8`` frames may fail to show exactly one shape.

    Raises:
        ValueError: ``frames`` is not a stack of 64x64 RGB frames.
    """
    x = _as_video_array(frames)  # (T, H, W, 3)
    n_frames = x.shape[0]
    black = _BG_RGB[_BG_NAMES.index("black")]
    dist_bg = np.linalg.norm(x - black, axis=-1)  # (T, H, W)
    fg = dist_bg > BG_RADIUS
    labels = _label(fg)
    seen = []  # (frame index, measured object)
    for t in range(n_frames):
        if 1 - fg[t].mean() < MIN_BG_FRACTION:
            continue
        objects = _measure_objects(x[t], black, dist_bg[t], labels[t])
        if objects is not None and len(objects) == 1:
            seen.append((t, objects[0]))
    if len(seen) < np.ceil(MIN_VALID_FRAMES * n_frames / spec.NUM_FRAMES):
        return None
    attrs = {k: _majority([o[k] for _, o in seen]) for k in ("color", "shape", "size")}
    # Constant-speed straight line: fit centre = a + b * t per axis; travel over the clip = b * (T - 1).
    t = np.array([i for i, _ in seen], dtype=np.float64)
    xy = np.array([[o["cx"], o["cy"]] for _, o in seen])  # (valid frames, 2)
    design = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)  # (2 params, 2 axes)
    travel = coef[1] * (n_frames - 1)
    axis = int(np.abs(travel).argmax())  # 0: x, 1: y
    residual = np.sqrt(np.mean((design @ coef - xy)[:, axis] ** 2))
    if abs(abs(travel[axis]) - MOTION_DISTANCE) > MOTION_TOLERANCE or abs(travel[1 - axis]) > MAX_CROSS_TRAVEL:
        return None
    if residual > MAX_TRACK_RESIDUAL:
        return None
    attrs["motion"] = [["left", "right"], ["up", "down"]][axis][int(travel[axis] > 0)]
    return attrs


# ----------------------------------------------------------------------------- audio

SOUNDING_DB = 4.0  # natural-log units: a frame sounds when its peak is within e^4 (~17 dB) of the loudest
MIN_PEAK_LOG = 0.0  # the loudest mel cell must exceed log(1): world tones reach ~10
MAX_GAP_FRAMES = 2  # silent runs this short inside a tone are bridged (beep gaps are >= 4 frames)
MIN_TONE_FRAMES = 0.75  # a continuous tone covers this share of the frames
BEEP_RUN_FRAMES = (4, 14)  # a 125 ms beep spans ~9 frames (64 ms window, 16 ms hop)
BEEP_PERIOD_FRAMES = spec.BEEP_STARTS_S[1] * spec.SAMPLE_RATE / spec.MEL["hop_length"]  # 15.6 frames between onsets
MIN_TONALITY = 0.3  # share of a sounding frame's energy at the peak +-1 bin (a square wave keeps ~0.8)
MAX_PITCH_RESIDUAL = 0.15  # octaves RMS of the pitch track around its straight-line fit
GLIDE_SLOPE = 0.5  # octaves per second: a spec glide spans one octave in one second
BUZZY_RATIO = -4.5  # log(P(3 f0) / P(f0)): a square wave has log(1/9) = -2.2, a sine nothing
MAX_PITCH_ERROR = 0.5  # octaves to the nearest spec f0 (they are an octave apart)

_PITCH_NAMES = tuple(spec.PITCHES)
_LOG2_F0 = np.log2([spec.PITCHES[k] for k in _PITCH_NAMES])


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_bin_hz(n_mels: int = spec.MEL["n_mels"]) -> np.ndarray:
    """Centre frequency (Hz) of each mel bin of the world's spectrogram.

    HTK mel, ``n_mels`` triangles between ``f_min`` and ``f_max`` exactly as
    ``torchaudio.functional.melscale_fbanks(..., norm=None, mel_scale="htk")``:
    bin ``m`` peaks at ``mel_to_hz(mel_min + (m + 1) * (mel_max - mel_min) / (n_mels + 1))``
    and its triangle is linear in Hz down to the neighbouring centres, so a
    sinusoid between two centres splits its power between them in proportion
    to its distance (the basis of :func:`bin_to_hz`).

    Returns:
        float64 array (n_mels,).
    """
    m = np.linspace(_hz_to_mel(spec.MEL["f_min"]), _hz_to_mel(spec.MEL["f_max"]), n_mels + 2)
    return _mel_to_hz(m[1:-1])


_CENTRES = mel_bin_hz()


def hz_to_bin(f) -> np.ndarray:
    """Fractional mel-bin index of frequency ``f`` (Hz), linear in Hz between bin centres."""
    return np.interp(f, _CENTRES, np.arange(len(_CENTRES), dtype=np.float64))


def bin_to_hz(b) -> np.ndarray:
    """Frequency (Hz) of fractional mel-bin index ``b``; the inverse of :func:`hz_to_bin`."""
    return np.interp(b, np.arange(len(_CENTRES), dtype=np.float64), _CENTRES)


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of every run of True."""
    d = np.diff(np.concatenate([[0], active.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def _window_sum(power: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Per frame, the power summed over bins centre-1..centre+1 (those that exist). power: (M, T); centre: (T,) int."""
    padded = np.pad(power, ((1, 1), (0, 0)))  # (M + 2, T): zero bins beyond both ends
    idx = centre[None] + np.arange(3)[:, None]  # (3, T) rows of the padded array
    return np.take_along_axis(padded, idx, axis=0).sum(axis=0)


def judge_mel(logmel) -> dict | None:
    """Measure what a world tone's log-mel spectrogram holds.

    Args:
        logmel: (64 mels, T frames) log(mel + 1e-5) as made by
            :func:`anygen.world.mel.log_mel` (``torch.Tensor`` or array); the
            audio generator's output is read as is.

    Returns:
        ``{"pitch", "timbre", "pattern"}`` or ``None`` when it is not one tone of
        the world: too quiet, not tonal, a wandering pitch track, or a sounding
        pattern that is neither one continuous tone nor four beeps.

    Raises:
        ValueError: ``logmel`` does not have 64 mel bins.
    """
    lm = logmel.detach().cpu().double().numpy() if isinstance(logmel, torch.Tensor) else np.asarray(logmel, np.float64)
    n_mels = spec.MEL["n_mels"]
    if lm.ndim != 2 or lm.shape[0] != n_mels or lm.shape[1] < 8:
        raise ValueError(f"`logmel` must be ({n_mels} mels, frames >= 8), got shape {lm.shape}")
    if not np.isfinite(lm).all():
        return None
    power = np.maximum(np.exp(lm) - spec.MEL_FLOOR, 0.0)  # (M, T) linear mel power
    peak = lm.argmax(axis=0)  # (T,)
    level = lm.max(axis=0)
    if level.max() < MIN_PEAK_LOG:
        return None
    sounding = level >= level.max() - SOUNDING_DB
    # Bridge short dropouts, then read the pattern from the sounding runs.
    for a, b in _runs(~sounding):
        if 0 < a and b < len(sounding) and b - a <= MAX_GAP_FRAMES:
            sounding[a:b] = True
    runs = _runs(sounding)
    n_frames = spec.MEL_FRAMES - 1  # the 64th frame is padding
    if len(runs) == 4:
        lengths = np.array([b - a for a, b in runs])
        period = np.diff([a for a, _ in runs])
        if lengths.min() < BEEP_RUN_FRAMES[0] or lengths.max() > BEEP_RUN_FRAMES[1]:
            return None
        if np.abs(period - BEEP_PERIOD_FRAMES).max() > 3:
            return None
        beeping = True
    elif len(runs) == 1 and runs[0][1] - runs[0][0] >= MIN_TONE_FRAMES * n_frames:
        beeping = False
    else:
        return None

    frames = np.flatnonzero(sounding)
    p, pw = peak[frames], power[:, frames]
    fund = _window_sum(pw, p)  # power of the fundamental, (sounding frames,)
    if np.median(fund / pw.sum(axis=0)) < MIN_TONALITY:
        return None
    # Peak frequency: power-weighted centroid of the bin centres around the peak (triangles are linear in Hz).
    idx = p[None] + np.arange(-1, 2)[:, None]  # (3, sounding frames)
    inside = (idx >= 0) & (idx < n_mels)
    idx = idx.clip(0, n_mels - 1)
    w = np.take_along_axis(pw, idx, axis=0) * inside
    f = (w * _CENTRES[idx]).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)
    logf = np.log2(np.maximum(f, 1.0))
    # Pitch track: straight line in log-frequency over time.
    tsec = frames * spec.MEL["hop_length"] / spec.SAMPLE_RATE
    slope, icpt = np.polyfit(tsec, logf, 1)
    if np.sqrt(np.mean((logf - (slope * tsec + icpt)) ** 2)) > MAX_PITCH_RESIDUAL:
        return None
    centre = logf.mean()  # a log-linear glide's mean log-frequency is its geometric centre
    pi = int(np.abs(_LOG2_F0 - centre).argmin())
    if abs(_LOG2_F0[pi] - centre) > MAX_PITCH_ERROR:
        return None
    # Timbre: power at the 3rd harmonic relative to the fundamental.
    third = np.rint(hz_to_bin(np.minimum(3 * f, spec.MEL["f_max"]))).astype(np.int64)
    ratio = np.log(_window_sum(pw, third) + 1e-12) - np.log(fund + 1e-12)
    timbre = "buzzy" if np.median(ratio) > BUZZY_RATIO else "pure"
    if beeping:
        pattern = "beeping"
    elif abs(slope) < GLIDE_SLOPE:
        pattern = "steady"
    else:
        pattern = "rising" if slope > 0 else "falling"
    return {"pitch": _PITCH_NAMES[pi], "timbre": timbre, "pattern": pattern}


def judge_audio(wave) -> dict | None:
    """Measure what a world tone holds, from its waveform.

    Args:
        wave: float32 mono waveform at 16 kHz (``np.ndarray`` or ``torch.Tensor``), ~1 s.

    Returns:
        ``{"pitch", "timbre", "pattern"}`` or ``None``; see :func:`judge_mel`, which it
        calls on :func:`anygen.world.mel.log_mel` of the first second.

    Raises:
        ValueError: ``wave`` is not a 1-D waveform.
    """
    from ..world.mel import log_mel

    w = wave.detach().cpu().float() if isinstance(wave, torch.Tensor) else torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if w.ndim != 1 or w.numel() < spec.MEL["n_fft"]:
        raise ValueError(f"`wave` must be a 1-D waveform of at least {spec.MEL['n_fft']} samples at 16 kHz, got shape {tuple(w.shape)}")
    return judge_mel(log_mel(w[: spec.NUM_SAMPLES]))
