"""Measurement-based judges of the Shapes World: what does an image, video or sound hold?

No learned model: each judge measures its medium against the numbers of
``WORLD.md`` (``anygen.world.spec``). They are meant for the outputs of small
generators, so they tolerate slightly-off colours, soft edges and a few stray
pixels or a vocoded spectrogram, and answer ``None`` when the input is not a
recognisable Shapes-World medium (noise, a blob, two colours in one shape).

* :func:`judge_image` — the background (the palette background most pixels
  are near, as drawn), connected components of the foreground, each one's
  colour from its saturated core, and its shape, size and centre by fitting
  the four spec shapes (drawn with ``anygen.world.render.shape_mask``) to the
  component's area and centroid: moments barely move when an edge is soft or
  a stray pixel sticks to the shape, a bounding box does.
* :func:`judge_video` — the same measurement per frame (one shape on black),
  then the motion from a constant-speed straight-line fit of the centres.
* :func:`judge_mel` / :func:`judge_audio` — per-frame spectral peak on the
  exact HTK mel scale (:func:`mel_bin_hz`): pitch, 3rd-harmonic level
  (timbre), sounding segments and log-frequency slope (pattern).

``python -m anygen.eval.judges`` prints :func:`validate_judges`.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..world import spec
from ..world.scenes import Scene, Shape

if TYPE_CHECKING:
    from PIL.Image import Image

# ----------------------------------------------------------------------------- thresholds

# Distances are Euclidean in RGB (0..255). Every shape colour is >= 118 from every background,
# and the closest pair of shape colours (orange, yellow) is 81 apart.
BG_SEARCH_RADIUS = 60.0  # pixels this close to a palette background vote for it
MIN_BG_FRACTION = 0.55  # a large shape covers 19 % of the image, two small ones ~9 %
FG_THRESHOLD = (30.0, 55.0)  # foreground: farther than this from the measured background (clamped range)
FG_NOISE_SIGMAS = 4.5  # ...and farther than this many noise sigmas of the background pixels
SPECK_AREA = 24  # components smaller than this (a 5x5 blob) are stray pixels and ignored...
MAX_STRAY = 64  # ...as long as they add up to at most this many pixels
COLOR_LINE_RADIUS = 50.0  # median distance of a shape's pixels from its background-to-colour segment...
COLOR_RADIUS = 60.0  # ...and of its most saturated pixels (TOP_SHARE of them) from the colour itself
TOP_SHARE = 0.2
MAX_ALPHA = 1.3  # blend factors along the segment are clipped here when measuring distances
MIN_IOU = 0.7  # IoU of the shape with its best template (a rendered shape scores > 0.9)
SIDE_RANGE = (8.0, 36.0)  # fitted box side outside this is no shape of the world
SIZE_SPLIT = (spec.SIZES["small"] + spec.SIZES["large"]) / 2  # 21 px
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
# Per shape: area / side**2, and how far the centroid lies below the box centre, per unit side.
_AREA_PER_SIDE2 = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "cross": 5 / 9}
_CENTROID_DY = {"circle": 0.0, "square": 0.0, "triangle": 1 / 6, "cross": 0.0}


# ----------------------------------------------------------------------------- input conversion


def _as_image_array(img) -> np.ndarray:
    """PIL image or uint8 array → float32 (64, 64, 3)."""
    if hasattr(img, "convert"):  # PIL.Image
        img = np.asarray(img.convert("RGB"))
    arr = np.asarray(img)
    n = spec.IMAGE_SIZE
    if arr.shape != (n, n, 3):
        raise ValueError(f"`img` must be a ({n}, {n}, 3) RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"`img` must be uint8 (0..255), got {arr.dtype}; convert with (x * 255).round().astype(np.uint8)")
    return arr.astype(np.float32)


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


# ----------------------------------------------------------------------------- connected components


def _label(mask: np.ndarray) -> np.ndarray:
    """8-connected components of a boolean (N, H, W) mask, all N images at once.

    Returns int32 labels of the same shape: 0 off the mask, otherwise 1 + the flat
    index of one pixel of the component (unique across the batch). Max-propagation
    over 3x3 neighbourhoods plus pointer jumping: converges in a handful of rounds.
    """
    out = np.zeros(mask.shape, dtype=np.int32)
    rows, cols = np.flatnonzero(mask.any(axis=(0, 2))), np.flatnonzero(mask.any(axis=(0, 1)))
    if len(rows) == 0:
        return out
    crop = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    m = mask[crop].astype(np.int32)  # (N, h, w): work on the foreground's bounding box only
    lab = np.arange(1, m.size + 1, dtype=np.int32).reshape(m.shape) * m
    pad = np.zeros((m.shape[0], m.shape[1] + 2, m.shape[2] + 2), dtype=np.int32)
    while True:
        pad[:, 1:-1, 1:-1] = lab
        row = np.maximum(np.maximum(pad[:, :, :-2], pad[:, :, 1:-1]), pad[:, :, 2:])  # 3-wide max along x
        nb = np.maximum(np.maximum(row[:, :-2], row[:, 1:-1]), row[:, 2:]) * m  # then along y: 3x3 max
        # Every label is (1 + index of) a pixel of the same component; jump to that pixel's label.
        nb = nb.ravel()[nb - 1] * m  # index -1 (off the mask) is zeroed by m
        if np.array_equal(nb, lab):
            out[crop] = lab
            return out
        lab = nb


# ----------------------------------------------------------------------------- image measurement


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared RGB distance along the last axis."""
    d = a - b
    return (d * d).sum(-1)


def _backgrounds(x: np.ndarray, candidates: tuple[int, ...] = (0, 1, 2)) -> tuple[np.ndarray, ...]:
    """Find the background of N images at once.

    Args:
        x: float32 (N, H, W, 3).
        candidates: indices into the palette backgrounds to consider.

    Returns:
        ok (N,) bool: a candidate background covers MIN_BG_FRACTION of the image;
        k (N,) its palette index; bg_rgb (N, 3) the background as drawn (a generator
        may tint it): the mean of the pixels that voted for it; fg (N, H, W) the
        foreground mask: farther from bg_rgb than the background's own noise allows.
    """
    n = x.shape[0]
    r, g, b = np.moveaxis(x.reshape(n, -1, 3), -1, 0).copy()  # channel planes, (N, P) each: 5x faster than (N, P, 3)
    d2 = np.stack([(r - c[0]) ** 2 + (g - c[1]) ** 2 + (b - c[2]) ** 2 for c in _BG_RGB[list(candidates)]], 1)  # (N, K, P)
    near = d2 <= BG_SEARCH_RADIUS**2
    frac = near.mean(axis=2)  # (N, K)
    best = frac.argmax(axis=1)
    ok = frac[np.arange(n), best] >= MIN_BG_FRACTION
    voters = near[np.arange(n), best]  # (N, P)
    count = np.maximum(voters.sum(1), 1)
    bg_rgb = np.stack([np.where(voters, ch, 0).sum(1) / count for ch in (r, g, b)], 1).astype(np.float32)  # (N, 3)
    d2 = (r - bg_rgb[:, :1]) ** 2 + (g - bg_rgb[:, 1:2]) ** 2 + (b - bg_rgb[:, 2:]) ** 2  # (N, P)
    # Noise of the background: E|noise|^2 = 3 sigma^2 for Gaussian pixel noise.
    sigma = np.sqrt(np.where(voters, d2, 0).sum(1) / count / 3)
    thr = np.clip(FG_NOISE_SIGMAS * sigma, *FG_THRESHOLD)
    fg = (d2 > thr[:, None] ** 2).reshape(x.shape[:3])
    return ok, np.asarray(candidates)[best], bg_rgb, fg


def _fit_shape(mask: np.ndarray) -> tuple[int, float, float, float, float]:
    """Best spec shape for a boolean (H, W) mask.

    For each of the four shapes, the box side follows from the mask's area and the
    box centre from its centroid; the shape is drawn there with the world's own
    renderer and compared by IoU. Moments, unlike a bounding box, hardly move when
    an edge is soft or a stray pixel sticks to the shape.

    Returns:
        (shape index, IoU, side, box centre x, box centre y) of the best fit.
    """
    from ..world.render import shape_mask

    ys, xs = np.nonzero(mask)
    area, xc, yc = len(ys), xs.mean() + 0.5, ys.mean() + 0.5  # pixel centres
    best = (0, -1.0, 0.0, 0.0, 0.0)
    for i, name in enumerate(spec.SHAPES):
        side = float(np.sqrt(area / _AREA_PER_SIDE2[name]))
        cy = yc - _CENTROID_DY[name] * side
        t = shape_mask(name, xc, cy, side)
        iou = np.count_nonzero(t & mask) / np.count_nonzero(t | mask)
        if iou > best[1]:
            best = (i, iou, side, xc, cy)
    return best


def _measure_objects(img: np.ndarray, bg_rgb: np.ndarray, labels: np.ndarray) -> list[dict] | None:
    """Recognise every foreground component of one image.

    Args:
        img: float32 (H, W, 3).
        bg_rgb: (3,) measured background colour.
        labels: (H, W) component labels of the foreground (0 = background).

    Returns:
        One dict per shape (color, shape, size, cx, cy; unsorted), or None when a
        component is not a shape of the world or the stray pixels are too many.
    """
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    if areas[areas < SPECK_AREA].sum() > MAX_STRAY:
        return None
    objects = []
    dirs = _COLOR_RGB - bg_rgb  # (8 colours, 3): segment from the background to each colour
    dirs2 = (dirs * dirs).sum(1)
    for lab in ids[areas >= SPECK_AREA]:
        ys, xs = np.nonzero(labels == lab)
        # Colour: soft edges and blur blend a shape into the background, so its pixels lie on the
        # segment from the background to its colour. Take the palette colour whose segment passes
        # closest to the saturated half of the pixels (distance from the line, alpha clipped).
        d = img[ys, xs] - bg_rgb  # (n, 3)
        alpha = d @ dirs.T / dirs2  # (n, 8 colours): blend factor along each colour's segment
        far = (d * d).sum(1)
        core = far >= np.partition(far, len(far) // 2)[len(far) // 2]
        a = alpha[core].clip(0.0, MAX_ALPHA)
        res2 = far[core, None] - 2 * a * (d[core] @ dirs.T) + a * a * dirs2  # squared distance to each segment
        med = np.partition(res2, len(res2) // 2, axis=0)[len(res2) // 2]  # (8,) median over the core
        ci = int(med.argmin())
        if med[ci] > COLOR_LINE_RADIUS**2:
            return None
        # ...and it must reach (about) the palette colour, not stop at a darker or paler shade:
        # the most saturated pixels along that segment are the shape's own colour.
        k = int((1 - TOP_SHARE) * (len(alpha) - 1))
        top = alpha[:, ci] >= np.partition(alpha[:, ci], k)[k]
        if _sqdist(np.median(d[top], axis=0), dirs[ci]) > COLOR_RADIUS**2:
            return None
        # The shape proper: pixels more than half-way from the background to the colour (coverage > 1/2).
        inside = alpha[:, ci] > 0.5
        if np.count_nonzero(inside) < SPECK_AREA:
            return None
        mask = np.zeros(labels.shape, dtype=bool)
        mask[ys[inside], xs[inside]] = True
        si, iou, side, cx, cy = _fit_shape(mask)
        if iou < MIN_IOU or not SIDE_RANGE[0] <= side <= SIDE_RANGE[1]:
            return None
        size = "small" if side < SIZE_SPLIT else "large"
        objects.append(dict(color=_COLOR_NAMES[ci], shape=spec.SHAPES[si], size=size, cx=cx, cy=cy))
    return objects


def _grid_pos(cx: float, cy: float) -> str | None:
    gx, gy = GRID[np.abs(GRID - cx).argmin()], GRID[np.abs(GRID - cy).argmin()]
    if abs(gx - cx) > GRID_TOLERANCE or abs(gy - cy) > GRID_TOLERANCE:
        return None
    return _POS_BY_XY[(int(gx), int(gy))]


def judge_image(img: np.ndarray | Image) -> dict | None:
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
    x = _as_image_array(img)
    ok, k, bg_rgb, fg = _backgrounds(x[None])
    if not ok[0]:
        return None
    k, bg_rgb = int(k[0]), bg_rgb[0]
    labels = _label(fg)[0]
    objects = _measure_objects(x, bg_rgb, labels)
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


def _majority(values: list[str]) -> str:
    return Counter(values).most_common(1)[0][0]


def judge_video(frames: np.ndarray | list[Image]) -> dict | None:
    """Measure what a Shapes-World clip shows.

    Args:
        frames: ``np.uint8`` array (T, 64, 64, 3) (T = 8 in the world) or a list of PIL frames.

    Returns:
        ``{"color", "shape", "size", "motion"}`` or ``None`` when the clip is not one
        shape on black moving ~32 px in a straight line at constant speed along x or y.
        Colour, shape and size are the majority over the frames; up to a quarter
        of the frames may fail to show exactly one recognised shape.

    Raises:
        ValueError: ``frames`` is not a stack of 64x64 RGB uint8 frames.
    """
    x = _as_video_array(frames)  # (T, H, W, 3)
    n_frames = x.shape[0]
    ok, _, bg_rgb, fg = _backgrounds(x, candidates=(_BG_NAMES.index("black"),))
    labels = _label(fg & ok[:, None, None])  # (T, H, W), all frames at once
    seen = []  # (frame index, measured object)
    for t in np.flatnonzero(ok):
        objects = _measure_objects(x[t], bg_rgb[t], labels[t])
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

# Levels are natural-log mel power (the spectrogram's own unit); 1 nat = 4.3 dB.
SOUNDING_NATS = 3.0  # a frame sounds when its peak is within 3 nats (13 dB) of the loud frames (90th percentile)
MIN_PEAK_LOG = 0.0  # the loud frames must exceed log(1): world tones reach ~10, silence is log(1e-5) = -11.5
MAX_GAP_FRAMES = 2  # silent runs this short inside a tone are bridged (beep gaps are >= 4 frames)
MIN_TONE_FRAMES = 0.75  # a continuous tone covers this share of the frames
BEEP_RUN_FRAMES = (4, 14)  # a 125 ms beep spans ~9 frames (64 ms window, 16 ms hop)
BEEP_PERIOD_FRAMES = spec.BEEP_STARTS_S[1] * spec.SAMPLE_RATE / spec.MEL["hop_length"]  # 15.6 frames between onsets
BEEP_PERIOD_TOLERANCE = 3  # frames
MIN_TONALITY = 0.3  # share of a sounding frame's energy at the peak +-1 bin (a square wave keeps ~0.8)
PITCH_OUTLIER = 0.25  # octaves off the pitch line: a frame whose peak jumped (e.g. to a harmonic)
MIN_PITCH_INLIERS = 0.75  # share of sounding frames that must follow the line
MAX_PITCH_RESIDUAL = 0.15  # octaves RMS of the following frames around the line
GLIDE_SLOPE = 0.5  # octaves per second: a spec glide spans one octave in one second
BUZZY_RATIO = -4.5  # log(P(3 f0) / P(f0)): a square wave reads log(1/9) = -2.2, a sine < -12 (< -7 after Griffin-Lim)
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


def hz_to_bin(f: float | np.ndarray) -> np.ndarray:
    """Fractional mel-bin index of frequency ``f`` (Hz), linear in Hz between bin centres."""
    return np.interp(f, _CENTRES, np.arange(len(_CENTRES), dtype=np.float64))


def bin_to_hz(b: float | np.ndarray) -> np.ndarray:
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


def _line_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares slope and intercept of y = slope * x + intercept."""
    xm, ym = x.mean(), y.mean()
    var = ((x - xm) ** 2).sum()
    slope = ((x - xm) * (y - ym)).sum() / var if var > 0 else 0.0
    return slope, ym - slope * xm


def judge_mel(logmel: torch.Tensor | np.ndarray) -> dict | None:
    """Measure what a world tone's log-mel spectrogram holds.

    Args:
        logmel: (64 mels, T frames) log(mel + 1e-5) as made by
            :func:`anygen.world.mel.log_mel` (``torch.Tensor`` or array); the
            audio generator's output is read as is.

    Returns:
        ``{"pitch", "timbre", "pattern"}`` or ``None`` when it is not one tone of
        the world: too quiet, not tonal, a wandering pitch track, or a sounding
        pattern that is neither one continuous tone nor four evenly spaced beeps.

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
    peak, level = lm.argmax(axis=0), lm.max(axis=0)  # (T,) each
    loud = np.percentile(level, 90)
    if loud < MIN_PEAK_LOG:
        return None

    # 1. Pattern: runs of sounding frames, short dropouts bridged.
    sounding = level >= loud - SOUNDING_NATS
    for a, b in _runs(~sounding):
        if 0 < a and b < len(sounding) and b - a <= MAX_GAP_FRAMES:
            sounding[a:b] = True
    runs = _runs(sounding)
    if len(runs) == 4:
        lengths = np.array([b - a for a, b in runs])
        period = np.diff([a for a, _ in runs])
        if lengths.min() < BEEP_RUN_FRAMES[0] or lengths.max() > BEEP_RUN_FRAMES[1]:
            return None
        if np.abs(period - BEEP_PERIOD_FRAMES).max() > BEEP_PERIOD_TOLERANCE:
            return None
        beeping = True
    elif len(runs) == 1 and runs[0][1] - runs[0][0] >= MIN_TONE_FRAMES * (lm.shape[1] - 1):  # the last frame is padding
        beeping = False
    else:
        return None

    # 2. Tonality: the energy of a sounding frame sits at its peak.
    frames = np.flatnonzero(sounding)
    p, pw = peak[frames], power[:, frames]
    fund = _window_sum(pw, p)  # power of the fundamental, (sounding frames,)
    if np.median(fund / pw.sum(axis=0)) < MIN_TONALITY:
        return None

    # 3. Pitch track: power-weighted centroid of the bin centres around the peak (triangles are
    #    linear in Hz, so this is the sinusoid's frequency), then a robust straight line in log2(Hz).
    idx = p[None] + np.arange(-1, 2)[:, None]  # (3, sounding frames)
    inside = (idx >= 0) & (idx < n_mels)
    idx = idx.clip(0, n_mels - 1)
    w = np.take_along_axis(pw, idx, axis=0) * inside
    f = (w * _CENTRES[idx]).sum(axis=0) / np.maximum(w.sum(axis=0), 1e-12)
    logf = np.log2(np.maximum(f, 1.0))
    tsec = frames * spec.MEL["hop_length"] / spec.SAMPLE_RATE
    follow = np.ones(len(frames), dtype=bool)
    for _ in range(3):  # refit without the frames whose peak jumped off the line
        slope, icpt = _line_fit(tsec[follow], logf[follow])
        follow = np.abs(logf - (slope * tsec + icpt)) <= PITCH_OUTLIER
        if follow.sum() < 2:
            return None
    dev = logf[follow] - (slope * tsec[follow] + icpt)
    if follow.mean() < MIN_PITCH_INLIERS or np.sqrt(np.mean(dev**2)) > MAX_PITCH_RESIDUAL:
        return None
    centre = logf[follow].mean()  # a log-linear glide's mean log-frequency is its geometric centre
    pi = int(np.abs(_LOG2_F0 - centre).argmin())
    if abs(_LOG2_F0[pi] - centre) > MAX_PITCH_ERROR:
        return None

    # 4. Timbre: power at the 3rd harmonic relative to the fundamental.
    third = np.rint(hz_to_bin(np.minimum(3 * f[follow], spec.MEL["f_max"]))).astype(np.int64)
    ratio = np.log(_window_sum(pw[:, follow], third) + 1e-12) - np.log(fund[follow] + 1e-12)
    timbre = "buzzy" if np.median(ratio) > BUZZY_RATIO else "pure"

    if beeping:
        pattern = "beeping"
    elif abs(slope) < GLIDE_SLOPE:
        pattern = "steady"
    else:
        pattern = "rising" if slope > 0 else "falling"
    return {"pitch": _PITCH_NAMES[pi], "timbre": timbre, "pattern": pattern}


def judge_audio(wave: np.ndarray | torch.Tensor) -> dict | None:
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
        raise ValueError(
            f"`wave` must be a 1-D waveform of at least {spec.MEL['n_fft']} samples at 16 kHz, got shape {tuple(w.shape)}"
        )
    return judge_mel(log_mel(w[: spec.NUM_SAMPLES]))


# ----------------------------------------------------------------------------- validation


def degrade(x: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Imitate a small generator's flaws on rendered images or frames.

    A 3x3 binomial blur (soft edges), a colour tint of up to +-15 per channel,
    Gaussian pixel noise of sigma 6 (both scaled by ``strength``) and 6 stray pixels
    of random colour per image.

    Args:
        x: uint8 (..., 64, 64, 3).
        rng: numpy random generator.
        strength: scale of the tint and the noise.

    Returns:
        uint8 array of the same shape.
    """
    y = x.astype(np.float32)
    for axis in (-3, -2):  # separable [1, 2, 1] / 4 blur, edges replicated
        p = np.concatenate([y.take([0], axis), y, y.take([-1], axis)], axis)
        n = y.shape[axis]
        y = 0.25 * p.take(range(0, n), axis) + 0.5 * p.take(range(1, n + 1), axis) + 0.25 * p.take(range(2, n + 2), axis)
    y = y + rng.uniform(-15, 15, size=3).astype(np.float32) * strength
    y = y + rng.normal(0, 6 * strength, size=y.shape).astype(np.float32)
    flat = y.reshape(-1, y.shape[-3] * y.shape[-2], 3)  # (images, pixels, RGB)
    for img in flat:
        img[rng.integers(0, img.shape[0], 6)] = rng.uniform(0, 255, (6, 3))
    return np.clip(np.rint(flat.reshape(y.shape)), 0, 255).astype(np.uint8)


def _accuracy(judged: list, media: list) -> dict[str, float]:
    from .metrics import judged_matches

    per_attr: dict[str, list[bool]] = {}
    for j, m in zip(judged, media):
        for k, v in judged_matches(j, m).items():
            per_attr.setdefault(k, []).append(v)
    acc = {k: float(np.mean(v)) for k, v in per_attr.items()}
    acc["all"] = float(np.mean(np.all(list(per_attr.values()), axis=0)))
    return {k: round(v, 4) for k, v in acc.items()}


def validate_judges(n: int = 1000, seed: int = 0, n_degraded: int | None = None, n_noise: int | None = None) -> dict:
    """Accuracy of the judges on rendered media of the world, and their false alarms on noise.

    Scenes (one and two shapes, all backgrounds, jitter; 1 in 10 from the held-out
    pairs), clips and sounds are drawn with ``anygen.world.scenes`` samplers.

    Args:
        n: media per kind.
        seed: sampling seed.
        n_degraded: images and clips re-judged after :func:`degrade` (default ``n // 2``).
        n_noise: noise inputs per kind (default ``max(20, n // 10)``).

    Returns:
        ``{"image", "image_degraded", "video", "video_degraded", "audio",
        "audio_roundtrip": {attribute: accuracy, ..., "all": accuracy},
        "noise": {"image", "video", "audio", "mel": share judged as a valid medium}}``.
        ``audio`` judges the rendered waveform; ``audio_roundtrip`` its log-mel after
        ``mel_to_audio`` (InverseMelScale + 32 Griffin-Lim iterations) and ``log_mel``
        again. Sounds take 40 distinct values, so each distinct sound is rendered
        and vocoded and judged once.
    """
    import random

    from ..world.mel import log_mel, mel_to_audio
    from ..world.render import render_audio, render_image, render_video
    from ..world.scenes import sample_clip, sample_scene, sample_sound

    n_degraded = n // 2 if n_degraded is None else n_degraded
    n_noise = max(20, n // 10) if n_noise is None else n_noise
    rng, nrng = random.Random(seed), np.random.default_rng(seed)
    split = lambda i: "heldout" if i % 10 == 9 else "train"  # noqa: E731
    out = {}

    scenes = [sample_scene(rng, split(i)) for i in range(n)]
    images = [render_image(s) for s in scenes]
    out["image"] = _accuracy([judge_image(x) for x in images], scenes)
    out["image_degraded"] = _accuracy([judge_image(degrade(x, nrng)) for x in images[:n_degraded]], scenes[:n_degraded])

    clips = [sample_clip(rng, split(i)) for i in range(n)]
    videos = [render_video(c) for c in clips]
    out["video"] = _accuracy([judge_video(v) for v in videos], clips)
    out["video_degraded"] = _accuracy([judge_video(degrade(v, nrng)) for v in videos[:n_degraded]], clips[:n_degraded])

    sounds = [sample_sound(rng, split(i)) for i in range(n)]
    distinct = sorted(set(sounds), key=lambda s: (s.pitch, s.timbre, s.pattern))
    waves = torch.from_numpy(np.stack([render_audio(s) for s in distinct]))  # (distinct sounds, samples)
    judged = {s: judge_audio(w) for s, w in zip(distinct, waves)}  # the judges are deterministic: once per distinct sound
    out["audio"] = _accuracy([judged[s] for s in sounds], sounds)
    roundtrip = log_mel(mel_to_audio(log_mel(waves)))  # one batched Griffin-Lim for all distinct sounds
    judged = {s: judge_mel(m) for s, m in zip(distinct, roundtrip)}
    out["audio_roundtrip"] = _accuracy([judged[s] for s in sounds], sounds)

    half = n_noise // 2
    size = (spec.IMAGE_SIZE, spec.IMAGE_SIZE, 3)

    def noise_images(shape_prefix):
        uniform = [nrng.integers(0, 256, (*shape_prefix, *size), dtype=np.uint8) for _ in range(half)]
        gauss = [
            np.clip(nrng.normal(nrng.uniform(0, 255), nrng.uniform(5, 80), (*shape_prefix, *size)), 0, 255).astype(np.uint8)
            for _ in range(n_noise - half)
        ]
        return uniform + gauss

    waves_noise = [nrng.normal(0, nrng.uniform(0.01, 0.5), spec.NUM_SAMPLES).astype(np.float32) for _ in range(n_noise)]
    mel_shape = (spec.MEL["n_mels"], spec.MEL_FRAMES)
    mels_noise = [nrng.uniform(np.log(spec.MEL_FLOOR), nrng.uniform(0, 12), mel_shape) for _ in range(half)]
    mels_noise += [nrng.normal(nrng.uniform(-8, 4), nrng.uniform(0.5, 4), mel_shape) for _ in range(n_noise - half)]
    out["noise"] = {
        "image": float(np.mean([judge_image(x) is not None for x in noise_images(())])),
        "video": float(np.mean([judge_video(x) is not None for x in noise_images((spec.NUM_FRAMES,))])),
        "audio": float(np.mean([judge_audio(w) is not None for w in waves_noise])),
        "mel": float(np.mean([judge_mel(m) is not None for m in mels_noise])),
    }
    return out


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import time

    p = argparse.ArgumentParser(description="Validate the Shapes World judges on rendered media and noise.")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    res = validate_judges(args.n, args.seed)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    for kind, accs in res.items():
        label = "share judged valid" if kind == "noise" else "accuracy"
        print(f"{kind:16s} ({label}) " + "  ".join(f"{k} {v:.4f}" for k, v in accs.items()))
    print(f"\n{time.perf_counter() - t0:.1f} s; reproduce: python -m anygen.eval.judges --n {args.n} --seed {args.seed}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
