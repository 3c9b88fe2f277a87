"""Tests of the Shapes World text side: templates, dialogues, datasets, media files."""

from __future__ import annotations

import dataclasses
import random
import re

import numpy as np
import pytest
import torch

from anygen.world import (
    HELDOUT_TASKS,
    MARKERS,
    PLACEHOLDERS,
    TASKS,
    AudioCaptionDataset,
    Clip,
    Dialogue,
    DialogueDataset,
    ImageCaptionDataset,
    Scene,
    Sound,
    VideoCaptionDataset,
    collate,
    make_dialogue,
    relative_step,
    render_audio,
    render_image,
    render_video,
    request_frames,
    sample_clip,
    sample_scene,
    sample_sound,
    spec,
    text,
)

torch.set_num_threads(1)

# Openings of WORLD.md ("Requests and replies") that every modality's train frames must cover.
OPENINGS = {
    "image": ["draw", "paint", "show me", "make", "create", "generate", "render", "I want", "could you", "please",
              "give me", "can I see", "produce"],
    "video": ["make", "create", "generate", "render", "I want", "could you", "please", "give me", "can I see",
              "produce", "show me", "draw", "animate", "a video of", "a clip of", "a short animation of"],
    "audio": ["make", "create", "generate", "render", "I want", "could you", "please", "give me", "produce",
              "play", "let me hear", "a sound of", "compose", "synthesize"],
}

# (input modalities, output modalities) of the single-turn tasks.
SHAPES_OF_TASK = {
    "t2i": ([], ["image"]),
    "t2v": ([], ["video"]),
    "t2a": ([], ["audio"]),
    "i2t": (["image"], []),
    "v2t": (["video"], []),
    "a2t": (["audio"], []),
    "edit": (["image"], ["image"]),
    "i2v": (["image"], ["video"]),
    "chat": ([], []),
}


def _pairs(x) -> list[tuple[str, str]]:
    if isinstance(x, Scene):
        return [(o.color, o.shape) for o in x.objects]
    if isinstance(x, Clip):
        return [(x.color, x.shape)]
    return []


def _split_tasks(split: str) -> tuple[str, ...]:
    return HELDOUT_TASKS if split == "heldout" else TASKS


# ----------------------------------------------------------------------------- templates


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_request_frames_variety_and_disjoint_split(modality):
    train, evals = request_frames(modality, "train"), request_frames(modality, "eval")
    assert len(set(train)) >= 40
    assert len(set(evals)) >= 10
    assert not set(train) & set(evals)
    assert 0.15 <= len(evals) / (len(train) + len(evals)) <= 0.3
    for opening in OPENINGS[modality]:
        assert any(opening.lower() in f.lower() for f in train), f"no train frame of {modality} opens with {opening!r}"


def test_every_family_split_is_disjoint_nonempty_and_stable():
    for family in text.FAMILIES:
        train, evals = text.frames(family, "train"), text.frames(family, "eval")
        assert train and evals, family
        assert not set(train) & set(evals), family
        groups = {f.group for f in text.family_frames(family, "train")}
        assert groups >= {f.group for f in text.family_frames(family, "eval")}, family
    # The split hash is not Python's salted hash(): a fixed string has a fixed value.
    assert text.stable_unit_hash("draw {x}") == pytest.approx(0.13406418238794005)
    with pytest.raises(ValueError, match="template_split"):
        request_frames("image", "val")


def test_i2t_trains_on_size_questions_the_eval_one_held_out():
    train, evals = text.frames("describe_image", "train"), text.frames("describe_image", "eval")
    assert "how big is the shape?" in evals and "how big is the shape?" not in train
    size_questions = {"how large is it?", "is the shape big or small?", "what size is the shape in this {m}?"}
    assert size_questions <= set(train)
    rng, asked = random.Random(0), []
    for _ in range(600):
        d = make_dialogue("i2t", rng, "train")
        request = d.messages[0].content.lower()
        if any(q.split(" {m}")[0].rstrip("?") in request for q in size_questions):
            asked.append(d)
    assert len(asked) >= 15  # ~6 % of single-shape i2t requests
    # answered with the caption, which names the shape's own size, whatever word the question used
    assert {d.messages[0].media[0].objects[0].size for d in asked} == {"small", "large"}
    for d in asked:
        assert len(d.messages[0].media[0].objects) == 1
        assert f" {d.messages[0].media[0].objects[0].size} " in d.messages[1].content


def test_fill_drops_omitted_chunks_and_fixes_articles():
    assert text.fill("a[ {S}] {C} {H}[ {P}]", S=None, C="orange", H="circle", P="at the top") == (
        "an orange circle at the top"
    )
    assert text.fill("a {H}, {C}[, {S}][, {P}]", H="cross", C="red", S="big", P=None) == "a cross, red, big"


# ----------------------------------------------------------------------------- dialogues


@pytest.mark.parametrize("split", ["train", "val", "heldout"])
def test_every_task_makes_valid_dialogues(split):
    rng = random.Random(0)
    for task in _split_tasks(split):
        for _ in range(60):
            d = make_dialogue(task, rng, split)
            assert isinstance(d, Dialogue) and d.task == task
            d.validate()
            chat = d.to_chat()
            assert [m["role"] for m in chat] == ["user", "assistant"] * (len(chat) // 2)
            for m in d.messages:
                n_ph = sum(m.content.count(p) for p in PLACEHOLDERS.values())
                n_mk = sum(m.content.count(k) for k in MARKERS.values())
                assert (n_ph, n_mk) == ((len(m.media), 0) if m.role == "user" else (0, len(m.media)))
                if m.role == "assistant":
                    for x in m.media:
                        assert f"{x.caption()}. {MARKERS[x.modality]}" in m.content
            if task in SHAPES_OF_TASK:
                ins, outs = SHAPES_OF_TASK[task]
                assert [x.modality for x in d.inputs()] == ins
                assert [x.modality for x in d.outputs()] == outs
            if task == "multi":
                assert len(d.outputs()) == 2 and not d.inputs()
            if task == "multiturn":
                assert len(d.messages) in (4, 6)
                assert all(not m.media for m in d.messages[2::2])  # later turns refer back, attach nothing
            if split == "heldout":
                assert d.involves_heldout(), d
            else:
                assert not d.involves_heldout(), d


@pytest.mark.parametrize("task", ["t2a", "a2t", "chat"])
def test_heldout_split_rejects_tasks_without_pairs(task):
    with pytest.raises(ValueError, match="held-out"):
        make_dialogue(task, random.Random(0), "heldout")
    with pytest.raises(ValueError, match="task"):
        make_dialogue("nope", random.Random(0), "train")


def test_heldout_pairs_never_in_train_dialogues():
    heldout_words = [re.compile(rf"\b{c}[ -]{s}\b", re.I) for c, s in spec.HELDOUT_PAIRS]
    rng = random.Random(1234)
    for task in TASKS:
        for _ in range(2000):
            d = make_dialogue(task, rng, "train")
            for x in d.inputs() + d.outputs():
                assert not set(_pairs(x)) & spec.HELDOUT_PAIRS, (task, d)
            for m in d.messages:
                assert not any(p.search(m.content) for p in heldout_words), (task, m.content)


def test_train_and_eval_dialogues_use_their_own_frames():
    def norm(s: str) -> str:
        return s.lower().rstrip(".!?").replace("colour", "color").replace("grey", "gray")

    for split, tsplit in (("train", "train"), ("val", "eval")):
        rng = random.Random(5)
        allowed = {norm(f) for f in text.frames("chat", tsplit)}
        for _ in range(200):
            d = make_dialogue("chat", rng, split)
            assert norm(d.messages[0].content) in allowed


def _changed(a, b) -> set[str]:
    fa, fb = dataclasses.asdict(a), dataclasses.asdict(b)
    if isinstance(a, Scene):
        fa = dict(bg=a.bg, **{k: v for k, v in fa["objects"][0].items() if k != "jitter"})
        fb = dict(bg=b.bg, **{k: v for k, v in fb["objects"][0].items() if k != "jitter"})
    return {k for k in fa if k not in ("jitter", "lane") and fa[k] != fb[k]}


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_edits_change_exactly_the_named_attribute(split):
    rng = random.Random(7)
    for _ in range(300):
        d = make_dialogue("edit", rng, split)
        (src,), (dst,) = d.inputs(), d.outputs()
        assert len(src.objects) == 1 and len(dst.objects) == 1
        changed = _changed(src, dst)
        assert len(changed) == 1, (d, changed)
        command = d.messages[0].content.lower()
        if changed == {"size"} and re.search(r"bigger|larger|enlarge|grow", command):
            assert src.objects[0].size == "small"
        if changed == {"size"} and re.search(r"smaller|shrink|tiny", command):
            assert src.objects[0].size == "large"
        if changed == {"color"}:
            assert dst.objects[0].color in command
        if changed == {"bg"}:
            assert dst.bg in command.replace("grey", "gray")
        d = make_dialogue("i2v", rng, split)
        (src,), (clip,) = d.inputs(), d.outputs()
        o = src.objects[0]
        assert (clip.color, clip.shape, clip.size) == (o.color, o.shape, o.size)


def test_multiturn_follow_ups_edit_one_attribute():
    edit_leads = tuple(lead.split("{c}")[0] for lead in text.REPLY_EDIT_LEADS)
    assert not set(edit_leads) & {lead.split("{c}")[0] for lead in text.REPLY_LEADS}
    rng = random.Random(11)
    n_edits = 0
    for _ in range(300):
        d = make_dialogue("multiturn", rng, "train")
        media = [m.media[0] for m in d.messages if m.media]
        replies = [m for m in d.messages if m.role == "assistant" and m.media]
        for prev, cur, reply in zip(media, media[1:], replies[1:] if d.inputs() == [] else replies):
            if not reply.content.startswith(edit_leads):
                continue  # a further medium ("and now play ... too")
            n_edits += 1
            if isinstance(prev, Scene) and isinstance(cur, Clip):  # "now make it move left"
                o = prev.objects[0]
                assert (cur.color, cur.shape, cur.size) == (o.color, o.shape, o.size)
            else:
                assert type(prev) is type(cur) and len(_changed(prev, cur)) == 1, (d, prev, cur)
    assert n_edits > 100


# ----------------------------------------------------------------------------- datasets


def test_dialogue_dataset_is_deterministic_and_mixes_tasks():
    a, b = DialogueDataset("train", 64, seed=3), DialogueDataset("train", 64, seed=3)
    assert [a[i].to_chat() for i in range(64)] == [b[i].to_chat() for i in range(64)]
    assert a[5].to_chat() != DialogueDataset("train", 64, seed=4)[5].to_chat()
    assert len({a[i].task for i in range(64)}) >= 6
    only = DialogueDataset("val", 10, tasks=["edit", "i2v"], task_weights=[1, 0])
    assert {only[i].task for i in range(10)} == {"edit"}
    assert all(d.involves_heldout() for d in DialogueDataset("heldout", 20))
    with pytest.raises(ValueError, match="held-out"):
        DialogueDataset("heldout", 10, tasks=["chat"])
    with pytest.raises(IndexError):
        a[64]
    assert len(collate([a[0], a[1]])) == 2


def test_dialogue_dataset_two_object_prob_sets_the_share_of_two_shape_scenes():
    def shapes(ds):
        return [len(m.objects) for i in range(len(ds)) for msg in ds[i].messages for m in msg.media if m.modality == "image"]

    default = DialogueDataset("train", 200, seed=1, tasks=["i2t", "t2i"])
    assert 0.15 < shapes(default).count(2) / 200 < 0.45  # the world's 0.3
    assert [d.to_chat() for d in default] == [d.to_chat() for d in DialogueDataset("train", 200, seed=1, tasks=["i2t", "t2i"],
                                                                                     two_object_prob=None)]
    assert set(shapes(DialogueDataset("train", 100, seed=1, tasks=["i2t", "t2i"], two_object_prob=1.0))) == {2}
    assert set(shapes(DialogueDataset("train", 100, seed=1, tasks=["i2t", "t2i"], two_object_prob=0.0))) == {1}
    edits = DialogueDataset("train", 50, seed=1, tasks=["edit"], two_object_prob=1.0)
    assert set(shapes(edits)) == {1}  # edits start from one shape whatever the knob says
    with pytest.raises(ValueError, match="two_object_prob"):
        DialogueDataset("train", 10, two_object_prob=1.5)


def test_relative_step_names_pitch_steps_and_reversals_only():
    tone = Sound("high", "pure", "steady")
    assert relative_step(tone, dataclasses.replace(tone, pitch="very high")) == "higher"
    assert relative_step(tone, dataclasses.replace(tone, pitch="medium")) == "lower"
    assert relative_step(tone, dataclasses.replace(tone, pitch="low")) is None  # two steps: a named pitch
    assert relative_step(tone, dataclasses.replace(tone, pitch="very high", timbre="buzzy")) is None
    clip = Clip("red", "circle", "small", "up")
    assert relative_step(clip, dataclasses.replace(clip, motion="down")) == "reverse"
    assert relative_step(clip, dataclasses.replace(clip, motion="left")) is None
    assert relative_step(clip, tone) is None


def test_dialogue_dataset_relative_edit_prob_turns_sound_and_clip_edits_into_steps():
    def step_shares(p):
        """Of consecutive same-kind media in multi-turn dialogues: the share one pitch step / one reversal apart."""
        steps, pairs = {"audio": 0, "video": 0}, {"audio": 0, "video": 0}
        for d in DialogueDataset("train", 300, seed=3, tasks=["multiturn"], relative_edit_prob=p):
            media = [m for msg in d.messages for m in msg.media]
            for a, b in zip(media, media[1:]):
                if a.modality == b.modality != "image":
                    pairs[a.modality] += 1
                    steps[a.modality] += relative_step(a, b) is not None
        return {k: steps[k] / pairs[k] for k in steps}

    world, forced = step_shares(None), step_shares(1.0)
    assert world["audio"] < 0.4 and world["video"] < 0.2  # the world's mix: a step is one edit among many
    assert forced["audio"] > 0.8 and forced["video"] > 0.8  # every edit a step; new media from "add" turns are not
    default = DialogueDataset("train", 50, seed=3, tasks=["multiturn"])  # the world's mix, nothing drawn for it
    assert [d.to_chat() for d in default] == [d.to_chat() for d in DialogueDataset(
        "train", 50, seed=3, tasks=["multiturn"], relative_edit_prob=None)]
    with pytest.raises(ValueError, match="relative_edit_prob"):
        DialogueDataset("train", 10, relative_edit_prob=-0.1)


def test_dialogue_dataset_multiturn_audio_prob_sets_the_share_of_sound_dialogues():
    def sound_share(p):
        ds = DialogueDataset("train", 200, seed=4, tasks=["multiturn"], multiturn_audio_prob=p)
        return sum(next(m for msg in d.messages for m in msg.media).modality == "audio" for d in ds) / len(ds)

    assert sound_share(1.0) == 1.0 and sound_share(0.0) == 0.0
    assert 0.2 < sound_share(None) < 0.45  # the world's mix: one first turn in three
    default = DialogueDataset("train", 50, seed=4, tasks=["multiturn"])  # nothing drawn for the world's mix
    assert [d.to_chat() for d in default] == [d.to_chat() for d in DialogueDataset(
        "train", 50, seed=4, tasks=["multiturn"], multiturn_audio_prob=None)]
    heldout = DialogueDataset("heldout", 30, seed=4, tasks=["multiturn"], multiturn_audio_prob=1.0)
    assert all(m.modality != "audio" for d in heldout for m in d.messages[0].media + d.messages[1].media)
    with pytest.raises(ValueError, match="multiturn_audio_prob"):
        DialogueDataset("train", 10, multiturn_audio_prob=2.0)


def test_caption_datasets_shapes_ranges_and_determinism():
    img = ImageCaptionDataset("train", 16, seed=1)
    item = img[3]
    assert item["pixel_values"].shape == (3, 64, 64) and item["pixel_values"].dtype == torch.float32
    assert item["pixel_values"].min() >= -1 and item["pixel_values"].max() <= 1
    assert item["caption"] == item["scene"].caption()
    assert torch.equal(item["pixel_values"], ImageCaptionDataset("train", 16, seed=1)[3]["pixel_values"])
    assert any(len(img[i]["scene"].objects) == 2 for i in range(16))
    assert all(len(s["scene"].objects) == 1 for s in ImageCaptionDataset("val", 8, two_object_prob=0.0))
    assert all(set(_pairs(s["scene"])) & spec.HELDOUT_PAIRS for s in ImageCaptionDataset("heldout", 8))

    vid = VideoCaptionDataset("val", 8, seed=2)
    item = vid[1]
    assert item["pixel_values"].shape == (8, 3, 64, 64) and -1 <= item["pixel_values"].min()
    assert item["caption"] == item["clip"].caption()
    assert torch.equal(item["pixel_values"], VideoCaptionDataset("val", 8, seed=2)[1]["pixel_values"])

    aud = AudioCaptionDataset("train", 8, seed=0)
    item = aud[2]
    assert item["mel"].shape == (1, 64, 64) and item["mel"].dtype == torch.float32
    assert item["audio"].shape == (16000,) and item["audio"].dtype == torch.float32
    assert item["audio"].abs().max() <= 0.5 + 1e-6
    assert item["caption"] == item["sound"].caption()
    assert torch.equal(item["mel"], AudioCaptionDataset("train", 8, seed=0)[2]["mel"])

    batch = collate([img[0], img[1], img[2]])
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert isinstance(batch["caption"], list) and isinstance(batch["scene"][0], Scene)
    batch = collate([aud[0], aud[1]])
    assert batch["mel"].shape == (2, 1, 64, 64) and isinstance(batch["sound"][1], Sound)


# ----------------------------------------------------------------------------- media files


def test_media_files_round_trip(tmp_path):
    import imageio.v3 as iio
    import soundfile as sf
    from PIL import Image

    rng = random.Random(0)
    image = render_image(sample_scene(rng, n_objects=2))
    Image.fromarray(image).save(tmp_path / "image.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "image.png").convert("RGB")), image)

    video = render_video(sample_clip(rng))
    iio.imwrite(tmp_path / "video.gif", video, duration=1000 // spec.FPS, loop=0)
    back = iio.imread(tmp_path / "video.gif", index=None)
    assert back.shape == (spec.NUM_FRAMES, 64, 64, 3)
    assert np.array_equal(back[..., :3], video)  # few flat colours: the GIF palette is exact

    audio = render_audio(sample_sound(rng))
    sf.write(tmp_path / "audio.wav", audio, spec.SAMPLE_RATE, subtype="FLOAT")
    back, sr = sf.read(tmp_path / "audio.wav", dtype="float32")
    assert sr == spec.SAMPLE_RATE and np.array_equal(back, audio)
    sf.write(tmp_path / "audio16.wav", audio, spec.SAMPLE_RATE, subtype="PCM_16")
    back, _ = sf.read(tmp_path / "audio16.wav", dtype="float32")
    assert np.abs(back - audio).max() < 1e-4
