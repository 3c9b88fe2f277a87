"""Read the attribute words of the Shapes World out of a free-text reply.

The model's replies name what an image, video or sound holds with the words of
``WORLD.md``; people (and models) phrase them loosely: "big" for large, "on
white" for the background, "top right" for top-left's neighbour, "sliding to
the left" for a motion, "high-pitched" for a pitch. :func:`parse_reply` turns
such text into attribute values, one group per object phrase, keeping every
value that was named so a caller can tell "not named" from "contradicted".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..world import spec

MODALITIES = ("image", "video", "audio")
OBJECT_ATTRS = ("size", "color", "shape", "pos", "motion")
_PRENOMINAL = ("size", "color")  # words said before the shape noun ("a small red circle")


@dataclass
class ParsedReply:
    """Attribute values found in a reply.

    Every field lists the distinct values named, in order of first mention: an
    empty list means "not named", two values mean a contradiction.

    Attributes:
        objects: one dict per object phrase, in order, mapping ``size``, ``color``,
            ``shape``, ``pos`` and ``motion`` to the values named for that object.
        bg: background values.
        pitch, timbre, pattern: sound values.
    """

    objects: list[dict[str, list[str]]] = field(default_factory=list)
    bg: list[str] = field(default_factory=list)
    pitch: list[str] = field(default_factory=list)
    timbre: list[str] = field(default_factory=list)
    pattern: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- vocabulary
# (attribute, regex, value or None to take the normalised match). Within a group, earlier
# patterns win: "very low" before "low", "top left" before "top".

_MOTION = [
    (r"\bfrom\s+(?:the\s+)?left\s+to\s+(?:the\s+)?right\b", "right"),
    (r"\bfrom\s+(?:the\s+)?right\s+to\s+(?:the\s+)?left\b", "left"),
    (r"\bfrom\s+(?:the\s+)?(?:top|up)\s+to\s+(?:the\s+)?(?:bottom|down)\b", "down"),
    (r"\bfrom\s+(?:the\s+)?(?:bottom|down)\s+to\s+(?:the\s+)?(?:top|up)\b", "up"),
    (
        r"\b(?:mov(?:e|es|ed|ing)|go(?:es|ing)?|went|slid(?:e|es|ing)|head(?:s|ed|ing)?|travel(?:s|ed|led|ing|ling)?"
        r"|drift(?:s|ed|ing)?|glid(?:e|es|ed|ing)|float(?:s|ed|ing)?|shift(?:s|ed|ing)?|fl(?:y|ies|ying|ew)|scroll(?:s|ed|ing)?)"
        r"(?:\s+(?:slowly|steadily|quickly|smoothly|straight|across|over))*"
        r"\s+(?:to\s+the\s+|to(?:wards?)?\s+(?:the\s+)?|in\s+the\s+direction\s+of\s+(?:the\s+)?)?"
        r"(left|right|up|down)(?:wards?)?\b",
        None,
    ),
    (r"\b(left|right|up|down)wards?\b", None),
]
_POS = [
    (r"\b(?:top|upper)[\s-]*(left|right)\b", "top-{}"),
    (r"\b(?:bottom|lower)[\s-]*(left|right)\b", "bottom-{}"),
    (r"\b(left|right)[\s-]+(?:top|upper)\b", "top-{}"),
    (r"\b(left|right)[\s-]+(?:bottom|lower)\b", "bottom-{}"),
    (r"\b(?:top|upper)[\s-]+(?:center|middle)\b|\b(?:center|middle)[\s-]+(?:top|upper)\b", "top"),
    (r"\b(?:bottom|lower)[\s-]+(?:center|middle)\b|\b(?:center|middle)[\s-]+(?:bottom|lower)\b", "bottom"),
    (r"\b(?:center|middle)[\s-]+(left|right)\b|\b(left|right)[\s-]+(?:center|middle)\b", "{}"),
    (r"\b(?:center|centered|middle)\b", "center"),
    (r"\b(?:top|upper)\b", "top"),
    (r"\b(?:bottom|lower)\b", "bottom"),
    (r"\b(left|right)\b", "{}"),
]
_SIZE = [(r"\b(?:small|little|tiny|smaller)\b", "small"), (r"\b(?:large|big|huge|bigger|larger)\b", "large")]
_COLOR = [(r"\b(" + "|".join(spec.COLORS) + r")\b", None)]
_SHAPE = [
    (r"\b(circle|square|triangle|cross)(?:e?s)?\b", None),
    (r"\b(?:disc|disk)s?\b", "circle"),
    (r"\bplus(?:\s+sign)?\b", "cross"),
]
_BG = [(r"\b(black|white|gray)\b", None)]
_PITCH = [
    (r"\bvery[\s-]+(low|high)\b", "very {}"),
    (r"\b(?:mid|middle)[\s-]+pitch(?:ed)?\b", "medium"),
    (r"\b(low|medium|high)\b", None),
]
_TIMBRE = [
    (r"\bsquare[\s-]+wave\b", "buzzy"),
    (r"\b(?:buzzy|buzzing|buzz)\b", "buzzy"),
    (r"\b(?:pure|sine|sinusoidal)\b", "pure"),
]
_PATTERN = [
    (r"\b(?:beep(?:ing|s|ed)?|on\s+and\s+off|pulsing|pulses|intermittent)\b", "beeping"),
    (r"\b(?:steady|constant|continuous|sustained|flat)\b", "steady"),
    (r"\b(?:ris(?:e|es|ing)|ascending|climbing|going\s+up|sweeping\s+up|upward)\b", "rising"),
    (r"\b(?:fall(?:s|ing)?|descending|dropping|going\s+down|sweeping\s+down|downward)\b", "falling"),
]

# Order matters: multi-word phrases are consumed before their single words can match.
_GROUPS = {
    "audio": [("timbre", _TIMBRE), ("pattern", _PATTERN), ("pitch", _PITCH)],
    "video": [("motion", _MOTION), ("size", _SIZE), ("color", _COLOR), ("shape", _SHAPE)],
    "image": [("bg", _BG), ("pos", _POS), ("size", _SIZE), ("color", _COLOR), ("shape", _SHAPE)],
    None: [
        ("bg", _BG), ("timbre", _TIMBRE), ("motion", _MOTION), ("pattern", _PATTERN), ("pos", _POS),
        ("pitch", _PITCH), ("size", _SIZE), ("color", _COLOR), ("shape", _SHAPE),
    ],
}  # fmt: skip

_SEPARATORS = re.compile(r"[,;:!?]|\.(?:\s|$)|\b(?:and|then|while|plus|also|with)\b")
_SYNONYMS = [(r"\bgrey\b", "gray"), (r"\bcentre\b", "center"), (r"\bcentred\b", "centered"), (r"\bcolour", "color")]


def _normalise(text: str) -> str:
    t = text.lower()
    for pat, rep in _SYNONYMS:
        t = re.sub(pat, rep, t)
    return t


def _find(text: str, groups) -> list[tuple[int, int, str, str]]:
    """All (start, end, attribute, value) mentions, earlier patterns consuming text first."""
    chars = list(text)
    found = []
    for attr, patterns in groups:
        for pat, value in patterns:
            for m in re.finditer(pat, "".join(chars)):
                word = next((g for g in m.groups() if g), None) if m.groups() else None
                val = word if value is None else value.format(word)
                found.append((m.start(), m.end(), attr, val))
                chars[m.start() : m.end()] = " " * (m.end() - m.start())  # consumed: no other pattern sees it
    return sorted(found)


def parse_reply(text: str, modality: str | None = None) -> ParsedReply:
    """Extract the world's attribute words from free text.

    Args:
        text: a reply, e.g. ``"a small red circle at the top-left and a small blue
            square at the top on a black background"``.
        modality: ``"image"``, ``"video"`` or ``"audio"`` to look only for that
            medium's attributes (so "left" in "moving left" is a motion, "low" a
            pitch), or ``None`` for all of them.

    Returns:
        :class:`ParsedReply`. Object attributes are grouped per object phrase:
        the text is cut at ``,``/``;``/``and``/``then``/sentence ends; a piece
        with a shape noun is an object, a piece without one (", large, at the
        top") belongs to the object before it (or after it, if it comes first).
        Two shape nouns in one piece split it: size and colour words between them
        go to the second shape, position and motion to the first.

    Raises:
        ValueError: unknown ``modality``.
    """
    if modality not in (None, *MODALITIES):
        raise ValueError(f"`modality` must be one of {MODALITIES} or None, got {modality!r}")
    t = _normalise(text)
    mentions = _find(t, _GROUPS[modality])
    out = ParsedReply()

    # Scene-level attributes.
    for _, _, attr, val in mentions:
        if attr in ("bg", "pitch", "timbre", "pattern") and val not in getattr(out, attr):
            getattr(out, attr).append(val)

    # Object attributes, grouped per piece of text.
    cuts = [0] + [m.start() for m in _SEPARATORS.finditer(t)] + [len(t) + 1]
    pieces = []  # list of lists of (attr, value) in text order
    for a, b in zip(cuts[:-1], cuts[1:]):
        pieces.append([(attr, val) for s, _, attr, val in mentions if a <= s < b and attr in OBJECT_ATTRS])
    objects: list[dict[str, list[str]]] = []
    pending: list[tuple[str, str]] = []  # shape-less pieces before the first object
    for piece in pieces:
        n_shapes = sum(attr == "shape" for attr, _ in piece)
        if n_shapes == 0:
            if objects:
                _add(objects[-1], piece)
            else:
                pending.extend(piece)
            continue
        first = len(objects)
        objects.extend({} for _ in range(n_shapes))
        k = first  # the shape this mention belongs to
        seen_shape = False
        for attr, val in piece:
            if attr == "shape":
                if seen_shape:
                    k += 1
                seen_shape = True
                _add(objects[k], [(attr, val)])
            elif seen_shape and attr in _PRENOMINAL and k + 1 < first + n_shapes:
                _add(objects[k + 1], [(attr, val)])
            else:
                _add(objects[k], [(attr, val)])
    if pending:
        if not objects:
            objects.append({})
        _add(objects[0], pending)
    out.objects = objects
    return out


def _add(obj: dict[str, list[str]], mentions: list[tuple[str, str]]):
    for attr, val in mentions:
        vals = obj.setdefault(attr, [])
        if val not in vals:
            vals.append(val)
