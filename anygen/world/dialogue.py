"""Dialogues of the Shapes World: the instruction data of every task.

A :class:`Dialogue` is a list of :class:`Message` objects. A user message holds
one ``<image>``/``<video>``/``<audio>`` placeholder per attached medium, in the
order of ``media``; an assistant message holds one ``[IMG]``/``[VID]``/``[AUD]``
marker per generated medium, each right after that medium's canonical caption
and ". " ("... on a black background. [IMG]"). The backbone training reads this
format as is.

``make_dialogue(task, rng, split)`` draws media with the seeded samplers of
``scenes.py`` for ``split`` and words the user turns with the train template
frames for ``split == "train"``, the eval frames otherwise (``text.py``).
Held-out (colour, shape) pairs never appear in a ``train`` or ``val`` dialogue,
in any role (edit results included); every ``heldout`` dialogue involves one.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field

from . import spec, text
from .scenes import (
    OPPOSITE_MOTION,
    SPLITS,
    Clip,
    Scene,
    Sound,
    check_mix_prob,
    is_heldout,
    sample_clip,
    sample_scene,
    sample_shape,
    sample_sound,
)
from .text import MARKERS, PLACEHOLDERS

TASKS: tuple[str, ...] = ("t2i", "t2v", "t2a", "i2t", "v2t", "a2t", "edit", "i2v", "multi", "chat", "multiturn")
"""Every dialogue task (see the module docstring of each generator below)."""

HELDOUT_TASKS: tuple[str, ...] = tuple(t for t in TASKS if t not in ("t2a", "a2t", "chat"))
"""Tasks that can involve a held-out (colour, shape) pair (sounds and chat cannot)."""

OMIT_PROB = 0.15
"""Probability that a train/val generation request leaves some optional attributes unsaid."""

Medium = Scene | Clip | Sound

_PLACEHOLDER_RE = re.compile("|".join(re.escape(p) for p in PLACEHOLDERS.values()))
_MARKER_RE = re.compile("|".join(re.escape(m) for m in MARKERS.values()))
_MODALITY_OF = {tok: mod for table in (PLACEHOLDERS, MARKERS) for mod, tok in table.items()}


@dataclass
class Message:
    """One turn.

    Args:
        role: ``"user"`` or ``"assistant"``.
        content: user: one ``<image>``/``<audio>``/``<video>`` placeholder per attached medium, in
            order; assistant: one ``[IMG]``/``[VID]``/``[AUD]`` marker per generated medium, in order.
        media: :class:`Scene` / :class:`Clip` / :class:`Sound` objects; user → attached inputs,
            assistant → generated outputs, aligned with the markers.
    """

    role: str
    content: str
    media: list = field(default_factory=list)


@dataclass
class Dialogue:
    """A task-tagged conversation."""

    task: str
    messages: list[Message]

    def to_chat(self) -> list[dict[str, str]]:
        """Messages as ``[{"role": ..., "content": ...}, ...]`` for a chat template."""
        return [{"role": m.role, "content": m.content} for m in self.messages]

    def inputs(self) -> list:
        """Every attached medium (user turns), in order."""
        return [x for m in self.messages if m.role == "user" for x in m.media]

    def outputs(self) -> list:
        """Every generated medium (assistant turns), in order."""
        return [x for m in self.messages if m.role == "assistant" for x in m.media]

    def media(self) -> list:
        """Inputs and outputs in conversation order."""
        return [x for m in self.messages for x in m.media]

    def involves_heldout(self) -> bool:
        """Whether any medium holds a held-out (colour, shape) pair."""
        return any(_has_heldout(x) for x in self.media())

    def validate(self) -> None:
        """Check the binding format; raise ``ValueError`` naming the first violation.

        Checks: roles alternate user/assistant starting with the user and ending with the
        assistant; placeholders match the attached media in number, type and order; markers
        match the generated media and each follows "<canonical caption>. "; describe tasks
        name the attached medium's canonical caption.
        """
        if not self.messages:
            raise ValueError("A dialogue needs at least one exchange")
        if len(self.messages) % 2:
            raise ValueError("A dialogue must end with an assistant message")
        for i, m in enumerate(self.messages):
            role = "user" if i % 2 == 0 else "assistant"
            if m.role != role:
                raise ValueError(f"Message {i} must have role {role!r}, got {m.role!r}")
            mods = [x.modality for x in m.media]
            if m.role == "user":
                found = [_MODALITY_OF[p] for p in _PLACEHOLDER_RE.findall(m.content)]
                if found != mods:
                    raise ValueError(f"Message {i}: placeholders {found} do not match attached media {mods}")
                if _MARKER_RE.search(m.content):
                    raise ValueError(f"Message {i}: a user message cannot hold an output marker")
            else:
                if _PLACEHOLDER_RE.search(m.content):
                    raise ValueError(f"Message {i}: an assistant message cannot hold an input placeholder")
                hits = list(_MARKER_RE.finditer(m.content))
                found = [_MODALITY_OF[h.group()] for h in hits]
                if found != mods:
                    raise ValueError(f"Message {i}: markers {found} do not match generated media {mods}")
                for hit, x in zip(hits, m.media):
                    if not m.content[: hit.end()].endswith(text.output_segment(x)):
                        raise ValueError(f"Message {i}: marker {hit.group()} must follow {x.caption()!r} + '. '")
        if self.task in ("i2t", "v2t", "a2t"):
            (x,) = self.messages[0].media
            if x.caption() not in self.messages[1].content:
                raise ValueError("A describe reply must carry the canonical caption of the attached medium")


def _has_heldout(x: Medium) -> bool:
    if isinstance(x, Scene):
        return any(is_heldout(o.color, o.shape) for o in x.objects)
    if isinstance(x, Clip):
        return is_heldout(x.color, x.shape)
    return False


# ----------------------------------------------------------------------------- context


@dataclass
class _Ctx:
    rng: random.Random
    split: str
    two_object_prob: float | None = None  # scenes drawn by t2i/i2t turns (sample_scene; None: the world's mix)
    relative_edit_prob: float | None = None  # follow-up edits of a sound / clip that step it (None: the world's mix)
    multiturn_audio_prob: float | None = None  # multi-turn dialogues about a sound (None: the world's mix)

    @property
    def tsplit(self) -> str:
        return "train" if self.split == "train" else "eval"

    @property
    def heldout(self) -> bool:
        return self.split == "heldout"

    def allowed(self, color: str, shape: str) -> bool:
        """Whether an edit may produce this pair (held-out pairs only in held-out dialogues)."""
        return self.heldout or not is_heldout(color, shape)

    def omit(self, options: tuple[str, ...]) -> tuple[str, ...]:
        """Attributes a request leaves unsaid (never in held-out dialogues, which are measured exactly)."""
        if self.heldout or not options or self.rng.random() >= OMIT_PROB:
            return ()
        return tuple(self.rng.sample(options, self.rng.randint(1, len(options))))

    def pick(self, family: str, **kw) -> text.Frame:
        return text.pick(family, self.rng, self.tsplit, **kw)

    def user(self, content: str, media: list | None = None) -> Message:
        content = text.surface(content, self.rng)
        media = list(media or [])
        if media:
            ph = " ".join(PLACEHOLDERS[x.modality] for x in media)
            r = self.rng.random()
            if r < 0.35:
                content = f"{ph}\n{content}"
            elif r < 0.6:
                content = f"{content}\n{ph}"
            elif r < 0.8:
                content = f"{ph} {content}"
            else:
                content = f"{content} {ph}"
        return Message("user", content, media)


def _sample(
    modality: str, rng: random.Random, split: str, n_objects: int | None = None, two_object_prob: float | None = None
) -> Medium:
    if modality == "image":
        return sample_scene(rng, split, n_objects, two_object_prob)
    if modality == "video":
        return sample_clip(rng, split)
    return sample_sound(rng, split)


def _omittable(x: Medium) -> tuple[str, ...]:
    if isinstance(x, Scene):
        return ("size", "pos", "bg") if len(x.objects) == 1 else ("size", "bg")
    if isinstance(x, Clip):
        return ("size",)
    return ("timbre", "pattern")


def _it(ctx: _Ctx, x: Medium, attached: bool = False) -> str:
    """How a follow-up refers to the medium: "it", "the circle", "the red circle", "this"."""
    if isinstance(x, Sound):
        return ctx.rng.choice(("it", "it", "the tone", "the sound", "this sound" if attached else "the noise"))
    o = x.objects[0] if isinstance(x, Scene) else x
    options = ["it", "it", "the shape", f"the {o.shape}", f"the {o.color} {o.shape}"]
    if attached:
        options += ["this", f"this {o.shape}"]
    return ctx.rng.choice(options)


# ----------------------------------------------------------------------------- single turns


def _generate(ctx: _Ctx, modality: str, medium: Medium | None = None) -> tuple[list[Message], Medium]:
    """Text → medium: a request and its "<caption>. <marker>" reply."""
    x = medium or _sample(modality, ctx.rng, ctx.split, two_object_prob=ctx.two_object_prob)
    req = text.request(x, ctx.rng, ctx.tsplit, omit=ctx.omit(_omittable(x)))
    return [ctx.user(req), Message("assistant", text.reply_outputs([x], ctx.rng), [x])], x


def _describe(ctx: _Ctx, modality: str, medium: Medium | None = None) -> tuple[list[Message], Medium]:
    """Medium → text: an attached medium, a question, a reply naming every attribute."""
    x = medium or _sample(modality, ctx.rng, ctx.split, two_object_prob=ctx.two_object_prob)
    exclude = ("single",) if isinstance(x, Scene) and len(x.objects) == 2 else ()
    frame = ctx.pick(f"describe_{modality}", exclude_kinds=exclude)
    q = text.fill(frame.text, m=ctx.rng.choice(text.MEDIA_NOUN[modality]))
    return [ctx.user(q, [x]), Message("assistant", text.reply_describe(x, ctx.rng))], x


def _edit_scene(
    ctx: _Ctx, scene: Scene, attr: str, value: str | None = None, attached: bool = False
) -> tuple[Scene, str]:
    """Change one attribute of a one-shape scene; returns the new scene and the command."""
    if len(scene.objects) != 1:
        raise ValueError("Only one-shape scenes can be edited")
    rng, (o,) = ctx.rng, scene.objects
    slots: dict = {"it": _it(ctx, scene, attached)}
    bg = scene.bg
    if attr == "color":
        value = value or rng.choice([c for c in spec.COLORS if c != o.color and ctx.allowed(c, o.shape)])
        o, family, slots["color"] = dataclasses.replace(o, color=value), "edit_color", value
    elif attr == "shape":
        value = value or rng.choice([s for s in spec.SHAPES if s != o.shape and ctx.allowed(o.color, s)])
        o, family, slots["shape"] = dataclasses.replace(o, shape=value), "edit_shape", value
    elif attr == "size":
        family = "edit_size_up" if o.size == "small" else "edit_size_down"
        o = dataclasses.replace(o, size="large" if o.size == "small" else "small")
    elif attr == "pos":
        value = value or rng.choice([p for p in spec.POSITIONS if p != o.pos])
        o, family = dataclasses.replace(o, pos=value), "edit_pos"
        slots.update(loc=rng.choice(text.POS_LOC[value]), dest=rng.choice(text.POS_DEST[value]))
    elif attr == "bg":
        bg = value or rng.choice([b for b in spec.BACKGROUNDS if b != scene.bg])
        family, slots["bg"] = "edit_bg", bg
    else:
        raise ValueError(f"Unknown image edit attribute {attr!r}")
    new = Scene(bg, (o,))
    if new == scene:
        raise ValueError(f"An edit must change the {attr}, got the same value {value!r}")
    return new, text.fill(ctx.pick(family).text, **slots)


def _edit_clip(ctx: _Ctx, clip: Clip, attr: str, relative: bool = False) -> tuple[Clip, str]:
    """Change colour, shape, size or motion of a clip; returns the new clip and the command.

    ``relative`` (motion only): reverse the motion, asked for without naming the new direction.
    """
    rng = ctx.rng
    slots: dict = {"it": _it(ctx, clip)}
    if attr == "color":
        value = rng.choice([c for c in spec.COLORS if c != clip.color and ctx.allowed(c, clip.shape)])
        new, family, slots["color"] = dataclasses.replace(clip, color=value), "edit_color", value
    elif attr == "shape":
        value = rng.choice([s for s in spec.SHAPES if s != clip.shape and ctx.allowed(clip.color, s)])
        new, family, slots["shape"] = dataclasses.replace(clip, shape=value), "edit_shape", value
    elif attr == "size":
        family = "edit_size_up" if clip.size == "small" else "edit_size_down"
        new = dataclasses.replace(clip, size="large" if clip.size == "small" else "small")
    elif attr == "motion":
        opposite = OPPOSITE_MOTION[clip.motion]
        value = opposite if relative else rng.choice([m for m in spec.MOTIONS if m != clip.motion])
        new, family = dataclasses.replace(clip, motion=value), "edit_motion"
        kinds = ("reverse",) if relative or (value == opposite and rng.random() < 0.4) else ("",)
        slots.update(adv=rng.choice(text.MOTION_ADV[value]), part=rng.choice(text.MOTION_PART[value]),
                     dir=rng.choice((value, value + "ward")))
        return new, text.fill(ctx.pick(family, kinds=kinds).text, **slots)
    else:
        raise ValueError(f"Unknown video edit attribute {attr!r}")
    return new, text.fill(ctx.pick(family).text, **slots)


def _edit_sound(ctx: _Ctx, sound: Sound, attr: str, relative: bool = False) -> tuple[Sound, str]:
    """Change pitch, timbre or pattern of a tone; returns the new sound and the command.

    ``relative`` (pitch only): one step up or down ("make it higher"), never to a named pitch.
    """
    rng = ctx.rng
    slots: dict = {"it": _it(ctx, sound)}
    if attr == "pitch":
        order = list(spec.PITCHES)
        i = order.index(sound.pitch)
        moves = [k for k, ok in (("higher", i + 1 < len(order)), ("lower", i > 0), ("to", not relative)) if ok]
        kind = rng.choice(moves)
        value = {"higher": order[min(i + 1, len(order) - 1)], "lower": order[max(i - 1, 0)]}.get(kind)
        value = value or rng.choice([p for p in order if p != sound.pitch])
        slots.update(pitch=value, pj=rng.choice(text.PITCH_ADJ[value]), pn=rng.choice(text.PITCH_NOUN[value]))
        new = dataclasses.replace(sound, pitch=value)
        return new, text.fill(ctx.pick("edit_pitch", kinds=(kind,)).text, **slots)
    if attr == "timbre":
        value = "buzzy" if sound.timbre == "pure" else "pure"
        slots["timbre"] = rng.choice(text.TIMBRE_WORDS[value])
        return dataclasses.replace(sound, timbre=value), text.fill(ctx.pick("edit_timbre").text, **slots)
    if attr == "pattern":
        value = rng.choice([p for p in spec.PATTERNS if p != sound.pattern])
        slots.update(pattern=value, pa=rng.choice(text.PATTERN_ADJ[value]), pv=rng.choice(text.PATTERN_VERB[value]),
                     pp=rng.choice(text.PATTERN_POST[value]))
        return dataclasses.replace(sound, pattern=value), text.fill(ctx.pick("edit_pattern").text, **slots)
    raise ValueError(f"Unknown audio edit attribute {attr!r}")


def _edit_any(ctx: _Ctx, x: Medium, attached: bool = False) -> tuple[Medium, str]:
    if isinstance(x, Scene):
        return _edit_scene(ctx, x, ctx.rng.choice(("color", "shape", "size", "pos", "bg")), attached=attached)
    # Only a training mix draws here: dialogues of the world's own mix (relative_edit_prob None) stay as they were.
    if ctx.relative_edit_prob is not None and ctx.rng.random() < ctx.relative_edit_prob:
        return _edit_clip(ctx, x, "motion", relative=True) if isinstance(x, Clip) else _edit_sound(
            ctx, x, "pitch", relative=True)
    if isinstance(x, Clip):
        return _edit_clip(ctx, x, ctx.rng.choice(("color", "shape", "size", "motion")))
    return _edit_sound(ctx, x, ctx.rng.choice(("pitch", "timbre", "pattern")))


def _animate(ctx: _Ctx, scene: Scene, attached: bool = False) -> tuple[Clip, str]:
    """Image → video: the same colour, shape and size moving in a random direction."""
    rng, (o,) = ctx.rng, scene.objects
    motion = rng.choice(spec.MOTIONS)
    cx, cy = spec.POSITIONS[o.pos]
    clip = Clip(o.color, o.shape, o.size, motion, cy if motion in ("left", "right") else cx, o.jitter)
    cmd = text.fill(
        ctx.pick("i2v").text,
        it=_it(ctx, scene, attached),
        adv=rng.choice(text.MOTION_ADV[motion]),
        part=rng.choice(text.MOTION_PART[motion]),
        fin=rng.choice(text.MOTION_FIN[motion]),
        mv=rng.choice(text.MEDIA_NP["video"]),
    )
    return clip, cmd


# ----------------------------------------------------------------------------- tasks


def _t2i(ctx: _Ctx) -> list[Message]:
    return _generate(ctx, "image")[0]


def _t2v(ctx: _Ctx) -> list[Message]:
    return _generate(ctx, "video")[0]


def _t2a(ctx: _Ctx) -> list[Message]:
    return _generate(ctx, "audio")[0]


def _i2t(ctx: _Ctx) -> list[Message]:
    return _describe(ctx, "image")[0]


def _v2t(ctx: _Ctx) -> list[Message]:
    return _describe(ctx, "video")[0]


def _a2t(ctx: _Ctx) -> list[Message]:
    return _describe(ctx, "audio")[0]


def _edit(ctx: _Ctx) -> list[Message]:
    """Attached one-shape image + a command changing exactly one attribute → new caption + [IMG]."""
    rng = ctx.rng
    if ctx.heldout and rng.random() < 0.5:
        # The edit itself creates the held-out pair: it names the held-out colour or shape.
        color, shape = rng.choice(sorted(spec.HELDOUT_PAIRS))
        attr = rng.choice(("color", "shape"))
        if attr == "color":
            src = sample_shape(rng, "train", color=rng.choice([c for c in spec.COLORS if c != color]), shape=shape)
        else:
            src = sample_shape(rng, "train", color=color, shape=rng.choice([s for s in spec.SHAPES if s != shape]))
        scene = Scene(rng.choice(list(spec.BACKGROUNDS)), (src,))
        new, cmd = _edit_scene(ctx, scene, attr, value=color if attr == "color" else shape, attached=True)
    else:
        scene = sample_scene(rng, ctx.split, n_objects=1)
        new, cmd = _edit_any(ctx, scene, attached=True)
    return [ctx.user(cmd, [scene]), Message("assistant", text.reply_outputs([new], rng, edit=True), [new])]


def _i2v(ctx: _Ctx) -> list[Message]:
    """Attached one-shape image + "make it move left" → video caption of the same shape + [VID]."""
    scene = sample_scene(ctx.rng, ctx.split, n_objects=1)
    clip, cmd = _animate(ctx, scene, attached=True)
    return [ctx.user(cmd, [scene]), Message("assistant", text.reply_outputs([clip], ctx.rng), [clip])]


_MULTI_COMBOS = (
    ("image", "audio"), ("audio", "image"), ("video", "audio"), ("audio", "video"),
    ("image", "video"), ("video", "image"), ("image", "image"), ("audio", "audio"),
)


def _multi(ctx: _Ctx) -> list[Message]:
    """Two outputs asked in one sentence ("draw A, then play B") → both, in the order asked."""
    rng = ctx.rng
    combos = [c for c in _MULTI_COMBOS if not ctx.heldout or set(c) - {"audio"}]
    mods = rng.choice(combos)
    held = rng.choice([i for i, m in enumerate(mods) if m != "audio"]) if ctx.heldout else None
    # In a held-out dialogue one visual output holds the held-out pair, the other is ordinary.
    splits = ["heldout" if i == held else ("val" if ctx.heldout else ctx.split) for i in range(len(mods))]
    media = [_sample(m, rng, s) for m, s in zip(mods, splits)]
    connector = ctx.pick("multi")
    kinds = ("imp",) if connector.kind == "imp" else ("imp", "np")
    clauses = [text.request(x, rng, ctx.tsplit, omit=ctx.omit(_omittable(x)), kinds=kinds) for x in media]
    req = text.fill(connector.text, c1=clauses[0], c2=clauses[1])
    return [ctx.user(req), Message("assistant", text.reply_outputs(media, rng), media)]


def _chat(ctx: _Ctx) -> list[Message]:
    """Plain-text questions about the world, answered from the spec constants."""
    frame = ctx.pick("chat")
    return [ctx.user(frame.text), Message("assistant", text.chat_answers()[frame.group])]


def _multiturn(ctx: _Ctx) -> list[Message]:
    """2–3 user turns; later turns refer back to the last medium ("now make it bigger")."""
    rng = ctx.rng
    firsts = ("t2i", "t2v", "i2t", "v2t") if ctx.heldout else ("t2i", "t2v", "t2a", "i2t", "v2t", "a2t")
    if ctx.multiturn_audio_prob is not None and not ctx.heldout:  # only a training mix draws here
        audio = rng.random() < ctx.multiturn_audio_prob
        firsts = tuple(f for f in firsts if (f in ("t2a", "a2t")) == audio)
    first = rng.choice(firsts)
    modality = {"i": "image", "v": "video", "a": "audio"}[first[-1] if first.startswith("t2") else first[0]]
    turn = _generate if first.startswith("t2") else _describe
    messages, cur = turn(ctx, modality)
    attached = turn is _describe
    for _ in range(rng.choice((1, 2))):
        one_shape = isinstance(cur, Scene) and len(cur.objects) == 1
        ops = ["add"] if isinstance(cur, Scene) and not one_shape else ["edit", "edit", "edit", "add"]
        if one_shape:
            ops.append("animate")
        op = rng.choice(ops)
        if op == "add":
            new = _sample(rng.choice(("image", "video", "audio")), rng, "val" if ctx.heldout else ctx.split)
            frame = ctx.pick("add_output")
            kinds = ("imp",) if frame.kind == "imp" else ("imp", "np")
            clause = text.request(new, rng, ctx.tsplit, omit=ctx.omit(_omittable(new)), kinds=kinds)
            cmd, edit = text.fill(frame.text, c=clause), False
        else:
            if op == "animate":
                new, e = _animate(ctx, cur, attached)
            else:
                new, e = _edit_any(ctx, cur, attached)
            cmd, edit = text.fill(ctx.pick("followup").text, e=e), True
        messages += [ctx.user(cmd), Message("assistant", text.reply_outputs([new], rng, edit=edit), [new])]
        cur, attached = new, False
    return messages


_GENERATORS = {
    "t2i": _t2i,
    "t2v": _t2v,
    "t2a": _t2a,
    "i2t": _i2t,
    "v2t": _v2t,
    "a2t": _a2t,
    "edit": _edit,
    "i2v": _i2v,
    "multi": _multi,
    "chat": _chat,
    "multiturn": _multiturn,
}


def make_dialogue(
    task: str, rng: random.Random, split: str, two_object_prob: float | None = None,
    relative_edit_prob: float | None = None, multiturn_audio_prob: float | None = None,
) -> Dialogue:
    """Generate one dialogue of ``task``.

    Args:
        task: one of :data:`TASKS`.
        rng: random source; the same seed gives the same dialogue.
        split: ``"train"``, ``"val"`` or ``"heldout"``. Media come from the samplers of that
            split; ``"train"`` uses the train template frames, the others the eval frames.
            ``"heldout"`` dialogues always involve a held-out (colour, shape) pair and exist
            only for :data:`HELDOUT_TASKS`.
        two_object_prob: probability that a scene the request draws or the user attaches (text → image,
            image → text) has two shapes; ``None`` keeps the world's mix (``TWO_OBJECT_PROB``, 0.3). A training
            knob: more two-shape scenes to read, the same dialogues otherwise. Edits always start from one shape.
        relative_edit_prob: probability that a multi-turn follow-up edit of a sound or a clip is a relative step
            (the pitch one step up or down, "make it higher"; the motion reversed, "make it go the other way")
            rather than the world's mix of edits; ``None`` keeps the world's mix and draws nothing for it. A
            training knob: a step needs the previous turn's value and the ladder, which a copy never shows.
        multiturn_audio_prob: probability that a multi-turn dialogue is about a sound (its first turn text → audio
            or audio → text) rather than an image or a clip; ``None`` keeps the world's mix (one first turn in
            three) and draws nothing for it. A training knob: sound follow-ups (pitch steps, "very" kept across
            turns) were half the multi-turn misses of the runs before it (README). Held-out dialogues have no
            sound turns and ignore it.

    Returns:
        A :class:`Dialogue` that passes :meth:`Dialogue.validate`.
    """
    if task not in _GENERATORS:
        raise ValueError(f"`task` must be one of {TASKS}, got {task!r}")
    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, got {split!r}")
    if split == "heldout" and task not in HELDOUT_TASKS:
        raise ValueError(
            f"Task {task!r} cannot involve a held-out (colour, shape) pair; use split 'train' or 'val', "
            f"or one of {HELDOUT_TASKS} for 'heldout'"
        )
    check_mix_prob("two_object_prob", two_object_prob)
    check_mix_prob("relative_edit_prob", relative_edit_prob)
    check_mix_prob("multiturn_audio_prob", multiturn_audio_prob)
    ctx = _Ctx(rng, split, two_object_prob, relative_edit_prob, multiturn_audio_prob)
    return Dialogue(task, _GENERATORS[task](ctx))
