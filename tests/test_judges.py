"""Tests of the Shapes World judges, the reply parser and the match metrics.

The accuracy figures come from one call of ``validate_judges`` (1000 media per
kind), shared by the tests through a module fixture.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from anygen.eval.judges import (
    bin_to_hz,
    hz_to_bin,
    judge_audio,
    judge_image,
    judge_mel,
    judge_video,
    mel_bin_hz,
    validate_judges,
)
from anygen.eval.metrics import all_correct, attribute_names, judged_matches, reply_names_medium
from anygen.eval.parse import parse_reply
from anygen.world import spec
from anygen.world.mel import log_mel
from anygen.world.render import render_audio, render_image, render_video, shape_mask
from anygen.world.scenes import Clip, Scene, Shape, Sound, sample_clip, sample_scene, sample_sound


@pytest.fixture(scope="module")
def validation():
    torch.set_num_threads(1)
    return validate_judges(n=1000, seed=0, n_degraded=300, n_noise=100)


# ----------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("kind", ["image", "video", "audio"])
def test_judges_recover_every_attribute_of_rendered_media(validation, kind):
    acc = validation[kind]
    assert set(acc) >= {"all"} and len(acc) > 2
    assert all(v >= 0.99 for v in acc.values()), acc


def test_audio_judge_survives_griffin_lim_round_trip(validation):
    acc = validation["audio_roundtrip"]
    assert all(v >= 0.95 for v in acc.values()), acc


@pytest.mark.parametrize("kind", ["image_degraded", "video_degraded"])
def test_judges_tolerate_generator_flaws(validation, kind):
    # Blur, a colour tint, pixel noise and stray pixels (judges.degrade).
    acc = validation[kind]
    assert all(v >= 0.98 for v in acc.values()), acc


def test_judges_reject_noise(validation):
    assert validation["noise"] == {"image": 0.0, "video": 0.0, "audio": 0.0, "mel": 0.0}


def test_noise_is_never_a_full_match():
    rng = np.random.default_rng(1)
    media = random.Random(1)
    for _ in range(20):
        assert not all_correct(judge_image(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), sample_scene(media))
        assert not all_correct(judge_video(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)), sample_clip(media))
        assert not all_correct(judge_audio(rng.normal(0, 0.3, 16000).astype(np.float32)), sample_sound(media))


# ----------------------------------------------------------------------------- image and video judges


def test_judge_image_two_shapes_reading_order_and_pil():
    scene = Scene(
        "gray", (Shape("red", "circle", "small", "top-left", (1, -2)), Shape("blue", "square", "small", "top-right", (-2, 2)))
    )
    img = render_image(scene)
    assert judge_image(img) == scene.attributes()
    assert judge_image(Image.fromarray(img)) == scene.attributes()


def _canvas(bg=(0, 0, 0)) -> np.ndarray:
    img = np.empty((64, 64, 3), dtype=np.uint8)
    img[:] = bg
    return img


def test_judge_image_rejects_what_is_not_a_scene():
    red, blue, green = spec.COLORS["red"], spec.COLORS["blue"], spec.COLORS["green"]
    assert judge_image(_canvas()) is None  # no shape
    rect = _canvas()
    rect[10:20, 10:40] = red
    assert judge_image(rect) is None  # no shape of the world
    upside_down = _canvas()
    upside_down[shape_mask("triangle", 32, 32, 28)[::-1]] = red
    assert judge_image(upside_down) is None
    two_colours = _canvas()
    sq = shape_mask("square", 32, 32, 28)
    two_colours[sq] = red
    two_colours[sq & (np.arange(64)[None, :] >= 32)] = blue
    assert judge_image(two_colours) is None
    three = render_image(Scene("white", (Shape("red", "circle", "small", "left"), Shape("blue", "cross", "small", "right"))))
    three[shape_mask("square", 32, 48, 14)] = green
    assert judge_image(three) is None  # a scene holds one or two shapes
    diagonal = _canvas()
    diagonal[shape_mask("circle", 16, 16, 14)] = red
    diagonal[shape_mask("circle", 48, 48, 14)] = blue
    assert judge_image(diagonal) is None  # two shapes must be grid neighbours


def test_judge_image_rejects_colours_off_the_palette():
    for bg, colour in [((0, 0, 0), (150, 75, 0)), ((120, 120, 120), (255, 255, 255)), ((255, 255, 255), (60, 60, 60))]:
        img = _canvas(bg)
        img[shape_mask("circle", 32, 32, 28)] = colour
        assert judge_image(img) is None, colour
    dim_red = _canvas()
    dim_red[shape_mask("square", 32, 32, 28)] = (115, 15, 15)  # half-way from black to red
    assert judge_image(dim_red) is None


def test_judge_image_tolerates_blur():
    from PIL import ImageFilter

    rng = random.Random(3)
    scenes = [sample_scene(rng) for _ in range(100)]
    for blur in (
        lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
        lambda im: im.resize((32, 32), Image.BILINEAR).resize((64, 64), Image.BILINEAR),
    ):
        ok = [judge_image(blur(Image.fromarray(render_image(s)))) == s.attributes() for s in scenes]
        assert np.mean(ok) >= 0.97


def test_judge_image_checks_its_input():
    with pytest.raises(ValueError, match="img"):
        judge_image(np.zeros((32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        judge_image(np.zeros((64, 64, 3), dtype=np.float32))


def test_judge_video_needs_straight_constant_motion():
    clip = Clip("pink", "triangle", "large", "down", lane=48, jitter=(-2, 1))
    frames = render_video(clip)
    assert judge_video(frames) == clip.attributes()
    assert judge_video([Image.fromarray(f) for f in frames]) == clip.attributes()
    assert judge_video(frames[::-1].copy())["motion"] == "up"
    assert judge_video(np.repeat(frames[:1], 8, axis=0)) is None  # not moving
    assert judge_video(frames[[0, 5, 2, 7, 1, 3, 6, 4]]) is None  # jumping around
    with pytest.raises(ValueError, match="frames"):
        judge_video(frames[0])


# ----------------------------------------------------------------------------- audio judge


def test_mel_bin_mapping_is_exact():
    import torchaudio

    fb = torchaudio.functional.melscale_fbanks(
        spec.MEL["n_fft"] // 2 + 1, spec.MEL["f_min"], spec.MEL["f_max"], spec.MEL["n_mels"], spec.SAMPLE_RATE, None, "htk"
    ).double()  # (513 FFT bins, 64 mels)
    fft_hz = np.linspace(0, spec.SAMPLE_RATE / 2, fb.shape[0])
    c = np.concatenate([[spec.MEL["f_min"]], mel_bin_hz(), [spec.MEL["f_max"]]])
    up = (fft_hz[:, None] - c[None, :-2]) / (c[1:-1] - c[:-2])
    down = (c[None, 2:] - fft_hz[:, None]) / (c[2:] - c[1:-1])
    rebuilt = np.clip(np.minimum(up, down), 0, None)  # triangles linear in Hz between neighbouring centres
    np.testing.assert_allclose(rebuilt, fb.numpy(), atol=1e-5)
    f = np.array([110.0, 440.0, 1760.0 * 2**0.5, 5280.0])
    np.testing.assert_allclose(bin_to_hz(hz_to_bin(f)), f, rtol=1e-9)


def test_judge_audio_reads_waveforms_and_mels():
    sound = Sound("very high", "buzzy", "falling")
    wave = render_audio(sound)
    assert judge_audio(wave) == sound.attributes()
    assert judge_audio(torch.from_numpy(wave)) == sound.attributes()
    assert judge_mel(log_mel(wave)) == sound.attributes()
    assert judge_mel(log_mel(wave).numpy()) == sound.attributes()
    assert judge_audio(np.zeros(16000, dtype=np.float32)) is None  # silence
    with pytest.raises(ValueError, match="wave"):
        judge_audio(np.zeros((2, 16000), dtype=np.float32))
    with pytest.raises(ValueError, match="logmel"):
        judge_mel(torch.zeros(80, 64))


def test_judge_mel_tolerates_a_noisy_generated_spectrogram():
    g = torch.Generator().manual_seed(0)
    for pitch in spec.PITCHES:
        for timbre in spec.TIMBRES:
            for pattern in spec.PATTERNS:
                sound = Sound(pitch, timbre, pattern)
                mel = log_mel(render_audio(sound))
                noisy = mel + 0.5 * torch.randn(mel.shape, generator=g)  # log-domain noise
                floor = torch.maximum(mel, mel.max() - 8 + torch.randn(mel.shape, generator=g))  # raised noise floor
                assert judge_mel(noisy) == sound.attributes()
                assert judge_mel(floor) == sound.attributes()


# ----------------------------------------------------------------------------- metrics


def test_judged_matches_per_attribute():
    scene = Scene("black", (Shape("red", "circle", "small", "left"), Shape("blue", "square", "small", "right")))
    judged = scene.attributes()
    assert judged_matches(judged, scene) == dict.fromkeys(attribute_names(scene), True)
    assert judged_matches(None, scene) == dict.fromkeys(attribute_names(scene), False)
    wrong = {"bg": "black", "objects": [dict(judged["objects"][1]), dict(judged["objects"][0], pos="center")]}
    m = judged_matches(wrong, scene)  # objects paired in the order that agrees best: only the position is wrong
    assert m == {"bg": True, "count": True, "color": True, "shape": True, "size": True, "pos": False}
    assert not judged_matches({"bg": "black", "objects": judged["objects"][:1]}, scene)["count"]
    clip = Clip("red", "circle", "small", "left")
    expected = {"color": True, "shape": True, "size": True, "motion": False}
    assert judged_matches(dict(clip.attributes(), motion="up"), clip) == expected
    sound = Sound("low", "pure", "steady")
    assert all_correct(sound.attributes(), sound) and not all_correct(dict(sound.attributes(), pitch="high"), sound)


# ----------------------------------------------------------------------------- reply parser


def test_parse_two_object_reply():
    r = parse_reply("a small red circle at the top-left and a small blue square at the top on a black background")
    assert r.objects == [
        {"size": ["small"], "color": ["red"], "shape": ["circle"], "pos": ["top-left"]},
        {"size": ["small"], "color": ["blue"], "shape": ["square"], "pos": ["top"]},
    ]
    assert r.bg == ["black"] and r.pitch == r.timbre == r.pattern == []


def test_canonical_captions_name_their_medium():
    rng = random.Random(0)
    media = [sample_scene(rng) for _ in range(150)] + [sample_scene(rng, n_objects=2) for _ in range(50)]
    media += [sample_clip(rng) for _ in range(100)] + [sample_sound(rng) for _ in range(100)]
    for m in media:
        assert reply_names_medium(m.caption(), m), m.caption()


def _one(bg: str, color: str, shape: str, size: str, pos: str) -> Scene:
    return Scene(bg, (Shape(color, shape, size, pos),))


PARAPHRASES = [
    ("A big green triangle in the middle, on white.", _one("white", "green", "triangle", "large", "center")),
    ("a circle, red, large, at the top, against a grey background", _one("gray", "red", "circle", "large", "top")),
    ("There is a tiny yellow cross in the top right corner on black.", _one("black", "yellow", "cross", "small", "top-right")),
    ("At the bottom left there is a little cyan square. The background is gray.", _one("gray", "cyan", "square", "small", "bottom-left")),  # noqa: E501
    ("a large orange plus sign placed at the left on a white background", _one("white", "orange", "cross", "large", "left")),
    ("a small pink disc in the centre on a black background", _one("black", "pink", "circle", "small", "center")),
    (
        "two shapes on black: a little pink cross at the top right and a tiny cyan circle at the bottom right",
        Scene("black", (Shape("pink", "cross", "small", "top-right"), Shape("cyan", "circle", "small", "bottom-right"))),
    ),
    (
        "At the left is a small purple square, and at the right is a small green triangle, all on white.",
        Scene("white", (Shape("purple", "square", "small", "left"), Shape("green", "triangle", "small", "right"))),
    ),
    ("A big blue square going downward.", Clip("blue", "square", "large", "down")),
    ("a tiny purple triangle sliding to the left", Clip("purple", "triangle", "small", "left")),
    ("It shows a large cyan cross heading right.", Clip("cyan", "cross", "large", "right")),
    ("a small green circle that moves up", Clip("green", "circle", "small", "up")),
    ("a red square, small, travelling from right to left", Clip("red", "square", "small", "left")),
    ("a pure, high-pitched tone that is rising in pitch", Sound("high", "pure", "rising")),
    ("I hear a buzzy tone at a high pitch, beeping on and off.", Sound("high", "buzzy", "beeping")),
    ("a steady sound, very high pitched and pure", Sound("very high", "pure", "steady")),
    ("It beeps: a very low, buzzy tone.", Sound("very low", "buzzy", "beeping")),
    ("a falling tone of medium pitch, buzzy", Sound("medium", "buzzy", "falling")),
    ("A low-pitched pure tone that stays constant.", Sound("low", "pure", "steady")),
]


@pytest.mark.parametrize("reply,medium", PARAPHRASES, ids=[p[0][:40] for p in PARAPHRASES])
def test_paraphrased_replies_name_their_medium(reply, medium):
    assert reply_names_medium(reply, medium)


@pytest.mark.parametrize(
    "reply,medium",
    [
        ("a small red circle at the top-left", Scene("black", (Shape("red", "circle", "small", "top-left"),))),  # no bg
        ("a small large red circle at the top-left on black", Scene("black", (Shape("red", "circle", "small", "top-left"),))),
        ("a small red circle at the top left on white", Scene("black", (Shape("red", "circle", "small", "top-left"),))),
        (
            "a small red circle at the top-left on black",
            Scene("black", (Shape("red", "circle", "small", "top-left"), Shape("blue", "square", "small", "top-right"))),
        ),
        ("a small red circle", Clip("red", "circle", "small", "left")),  # motion missing
        ("a small red circle moving right", Clip("red", "circle", "small", "left")),
        ("a small red circle moving left and a blue square", Clip("red", "circle", "small", "left")),
        ("a beeping buzzy low tone", Sound("very low", "buzzy", "beeping")),
        ("a beeping buzzy tone", Sound("very low", "buzzy", "beeping")),
        ("a steady rising pure high tone", Sound("high", "pure", "rising")),
    ],
)
def test_wrong_missing_or_contradicting_replies_fail(reply, medium):
    assert not reply_names_medium(reply, medium)


def test_parse_modalities():
    assert parse_reply("a small red circle moving left", "video").objects[0]["motion"] == ["left"]
    assert "pos" not in parse_reply("a small red circle moving left", "video").objects[0]
    assert parse_reply("a very low tone", "audio").pitch == ["very low"]
    assert parse_reply("a very low tone").pitch == ["very low"]
    with pytest.raises(ValueError, match="modality"):
        parse_reply("a tone", "smell")


def test_connected_components_match_scipy():
    from scipy import ndimage
    from anygen.eval.judges import _label

    rng = np.random.default_rng(0)
    masks = rng.random((6, 40, 52)) < np.array([0.2, 0.35, 0.45, 0.5, 0.6, 0.7])[:, None, None]
    labels = _label(masks)
    for m, lab in zip(masks, labels):
        ref, _ = ndimage.label(m, structure=np.ones((3, 3)))
        assert ((lab > 0) == m).all()
        # Same partition: a one-to-one map between our labels and scipy's.
        pairs = set(zip(lab[m].tolist(), ref[m].tolist()))
        assert len(pairs) == len(set(lab[m].tolist())) == len(set(ref[m].tolist()))
