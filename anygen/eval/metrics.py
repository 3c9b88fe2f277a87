"""Match helpers: does a judged output, or a text reply, agree with the medium it should show?

``medium`` is always a world description from :mod:`anygen.world.scenes`
(``Scene``, ``Clip`` or ``Sound``); judged outputs are the dicts returned by
:mod:`anygen.eval.judges` (``None`` for an unrecognisable output).
"""

from __future__ import annotations

from itertools import permutations

from ..world.scenes import Clip, Scene, Sound
from .parse import parse_reply

SCENE_OBJECT_ATTRS = ("color", "shape", "size", "pos")
CLIP_ATTRS = ("color", "shape", "size", "motion")
SOUND_ATTRS = ("pitch", "timbre", "pattern")


def _check_medium(medium):
    if not isinstance(medium, (Scene, Clip, Sound)):
        raise TypeError(f"`medium` must be a Scene, Clip or Sound, got {type(medium).__name__}")


def attribute_names(medium: Scene | Clip | Sound) -> tuple[str, ...]:
    """Keys of :func:`judged_matches` for this kind of medium.

    Returns:
        ``("bg", "count", "color", "shape", "size", "pos")`` for a scene,
        ``("color", "shape", "size", "motion")`` for a clip,
        ``("pitch", "timbre", "pattern")`` for a sound.
    """
    _check_medium(medium)
    if isinstance(medium, Scene):
        return ("bg", "count", *SCENE_OBJECT_ATTRS)
    return CLIP_ATTRS if isinstance(medium, Clip) else SOUND_ATTRS


def judged_matches(judged: dict | None, medium: Scene | Clip | Sound) -> dict[str, bool]:
    """Per-attribute agreement of a judge's reading with the intended medium.

    Args:
        judged: output of ``judge_image`` / ``judge_video`` / ``judge_audio`` /
            ``judge_mel``, or ``None``.
        medium: the ``Scene``, ``Clip`` or ``Sound`` the output should show.

    Returns:
        ``{attribute: bool}`` with the keys of :func:`attribute_names`. For a scene,
        ``count`` is whether the number of shapes agrees, and an object attribute is
        correct when it is right for every shape (objects paired in the order that
        agrees best, so one misplaced shape costs its position, not its colour).
        ``judged=None`` makes every attribute wrong.
    """
    keys = attribute_names(medium)
    if judged is None:
        return {k: False for k in keys}
    want = medium.attributes()
    if isinstance(medium, Scene):
        got_objs, want_objs = judged.get("objects", []), want["objects"]
        out = {"bg": judged.get("bg") == want["bg"], "count": len(got_objs) == len(want_objs)}
        if not out["count"]:
            return {**out, **{k: False for k in SCENE_OBJECT_ATTRS}}
        best = max(
            (
                {k: all(g.get(k) == w[k] for g, w in zip(perm, want_objs)) for k in SCENE_OBJECT_ATTRS}
                for perm in permutations(got_objs)
            ),
            key=lambda m: sum(m.values()),
        )
        return {**out, **best}
    return {k: judged.get(k) == want[k] for k in keys}


def all_correct(judged: dict | None, medium: Scene | Clip | Sound) -> bool:
    """Whether the judge read every attribute of ``medium`` from the output.

    Args:
        judged: a judge's output or ``None``.
        medium: the intended ``Scene``, ``Clip`` or ``Sound``.

    Returns:
        ``all(judged_matches(judged, medium).values())``.
    """
    return all(judged_matches(judged, medium).values())


def reply_names_medium(reply_text: str, medium: Scene | Clip | Sound) -> bool:
    """Whether a text reply names every attribute of ``medium`` and contradicts none.

    Args:
        reply_text: the model's reply, e.g. ``"a small red circle moving left"``.
        medium: the ``Scene``, ``Clip`` or ``Sound`` the reply should describe.

    Returns:
        True when, parsed with :func:`anygen.eval.parse.parse_reply` for the
        medium's modality, each attribute the world carries for that medium
        (WORLD.md, "Requests and replies") is named with exactly the right value:
        size, colour, shape and position of every shape plus the background for an
        image (the reply's object phrases matched to the shapes in any order, and
        no extra object); size, colour, shape and motion for a video; pattern,
        timbre and pitch for a sound. Naming a second value for an attribute is a
        contradiction.
    """
    _check_medium(medium)
    parsed = parse_reply(reply_text, medium.modality)
    want = medium.attributes()
    if isinstance(medium, Sound):
        return all(getattr(parsed, k) == [want[k]] for k in SOUND_ATTRS)
    if isinstance(medium, Clip):
        return len(parsed.objects) == 1 and all(parsed.objects[0].get(k) == [want[k]] for k in CLIP_ATTRS)
    if parsed.bg != [want["bg"]] or len(parsed.objects) != len(want["objects"]):
        return False
    return any(
        all(got.get(k) == [w[k]] for got, w in zip(perm, want["objects"]) for k in SCENE_OBJECT_ATTRS)
        for perm in permutations(parsed.objects)
    )
