"""The trained anygen-tiny generators committed under weights/: each loads as a plain diffusers pipeline and
makes what its caption asks for, as measured by the judges (at the guidance scale the model card gives)."""

from __future__ import annotations

import random
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from anygen.eval.judges import judge_audio, judge_image, judge_video
from anygen.eval.metrics import judged_matches
from anygen.training.common import to_uint8
from anygen.world.datasets import to_pixels
from anygen.world.render import render_image
from anygen.world.scenes import sample_clip, sample_scene, sample_sound

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "anygen-tiny"
N = 4  # samples per generator: at most one miss is tolerated
GUIDANCE = 1.5  # the model card's setting (diffusers' StableDiffusionPipeline default, 7.5, over-saturates them)


def _load(name: str):
    pipe = DiffusionPipeline.from_pretrained(WEIGHTS / f"{name}_generator", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _judged_ok(judge, outputs, media) -> int:
    return sum(all(judged_matches(judge(o), m).values()) for o, m in zip(outputs, media))


def _draw_one_object_scenes(pipe, split: str, n: int = 32):
    """``n`` one-shape scenes of ``split`` (seeded) and the uint8 images ``pipe`` draws from their captions."""
    rng = random.Random(0)
    scenes = [sample_scene(rng, split, n_objects=1) for _ in range(n)]
    out = pipe([s.caption() for s in scenes], num_inference_steps=20, guidance_scale=GUIDANCE, height=64, width=64,
               output_type="np", generator=torch.Generator().manual_seed(0))
    return (out.images * 255).round().astype("uint8"), scenes


def test_image_generator_draws_its_captions():
    pipe = _load("image")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    images, scenes = _draw_one_object_scenes(pipe, "val")
    assert images.shape == (32, 64, 64, 3)
    # all 32 (97.7 % of 128 one-object captions in benchmarks/generator_quality.py); the previous generator drew 30
    # (96.1 % of 128)
    assert _judged_ok(judge_image, images, scenes) >= 29


def test_image_generator_draws_held_out_pairs():
    # (colour, shape) pairs that no training caption of the generator held.
    images, scenes = _draw_one_object_scenes(_load("image"), "heldout")
    # 29 of these 32 (89.8 % of 128 in benchmarks/generator_quality.py); the previous generator, whose UNet trained
    # 10000 steps over two restarted schedules, drew 21 (71.9 % of 128)
    assert _judged_ok(judge_image, images, scenes) >= 27


@torch.no_grad()
def test_image_vae_round_trip_keeps_every_attribute():
    vae = _load("image").vae
    rng = random.Random(1)
    scenes = [sample_scene(rng, "val") for _ in range(32)]
    x = torch.stack([to_pixels(render_image(s)) for s in scenes])
    y = vae.decode(vae.encode(x).latent_dist.mode()).sample
    images = to_uint8(y)
    # 100 % of 128 in generator_quality.py; the decoder before the background hinge left tints on ~5 % (~2 of 32)
    assert _judged_ok(judge_image, images, scenes) >= 31


def test_video_generator_loads_and_animates():
    # It loads as AnimateDiff over the image generator's VAE and tokenizer (its caption encoder is its own, fine-tuned
    # on clips so that it tells the directions apart), is seeded, and its clips show the caption's object moving the
    # caption's way (colour, shape, size and motion judged right).
    pipe = _load("video")
    assert type(pipe).__name__ == "AnimateDiffPipeline" and type(pipe.unet).__name__ == "UNetMotionModel"
    assert (WEIGHTS / "video_generator" / "vae").resolve() == (WEIGHTS / "image_generator" / "vae").resolve()
    rng = random.Random(0)
    clips = [sample_clip(rng, "val") for _ in range(16)]
    kw = dict(num_frames=8, guidance_scale=GUIDANCE, height=64, width=64, output_type="np")
    a, b = (pipe(clips[0].caption(), num_inference_steps=4, generator=torch.Generator().manual_seed(0), **kw).frames
            for _ in range(2))
    assert (a == b).all()
    out = pipe([c.caption() for c in clips], num_inference_steps=20, generator=torch.Generator().manual_seed(0), **kw).frames
    assert out.shape == (16, 8, 64, 64, 3)
    frames = (out * 255).round().astype("uint8")
    seen = [judged_matches(judge_video(f), c) for f, c in zip(frames, clips)]
    # 100 % of 64 clips in benchmarks/generator_quality.py, 15 of these 16; with the image generator's caption
    # encoder (directions conditioned alike) 21.9 %, which would give ~4.
    assert sum(all(m.values()) for m in seen) >= 13


def test_audio_generator_plays_its_captions():
    pipe = _load("audio")
    assert type(pipe).__name__ == "AnyGenAudioPipeline"
    rng = random.Random(0)
    sounds = [sample_sound(rng, "val") for _ in range(N)]
    out = pipe([s.caption() for s in sounds], num_inference_steps=20, guidance_scale=GUIDANCE,
               generator=torch.Generator().manual_seed(0))
    assert out.sample_rate == 16000 and out.audios.shape == (N, 16000)
    assert _judged_ok(judge_audio, out.audios, sounds) >= N - 1


def test_generator_weights_fit_the_budget():
    # The video folder links the image generator's VAE, caption encoder and tokenizer instead of copying them.
    files = {f.resolve() for name in ("image", "video", "audio") for f in (WEIGHTS / f"{name}_generator").rglob("*")}
    size = sum(f.stat().st_size for f in files if f.is_file())
    assert size <= 25e6, f"generator weights total {size / 1e6:.1f} MB"


def test_all_committed_weights_fit_the_budget():
    files = {f.resolve() for f in WEIGHTS.rglob("*") if f.is_file()}
    size = sum(f.stat().st_size for f in files)
    assert size <= 40e6, f"weights/anygen-tiny totals {size / 1e6:.1f} MB"


def test_drafts_keep_the_greedy_reply_and_its_media():
    # anygen-tiny's replies copy the request and repeat stock phrases, so drafts from the request and from earlier
    # replies are accepted here; neither the replies nor the media may change (the projector reads one pass over
    # the reply, however it was decoded).
    import numpy as np

    from anygen import AnyGenPipeline

    pipe = AnyGenPipeline.from_pretrained()
    requests = [
        "Please draw a small red circle at the top-left on a black background.",
        "Make a sound: a steady pure low tone, and a picture of a large blue square at the center on a white background.",
        "hello there",
        "Please draw a small red circle at the top-left on a black background.",  # its reply is remembered now
    ]
    fast = [pipe(r, num_inference_steps=2, seed=0) for r in requests]
    pipe.prompt_lookup_num_tokens, pipe.lookup_memory = 0, 0
    plain = [pipe(r, num_inference_steps=2, seed=0) for r in requests]
    assert [o.text for o in fast] == [o.text for o in plain]
    assert "[IMG]" in fast[0].text and "[AUD]" in fast[1].text
    for a, b in zip(fast, plain):
        assert len(a.images) == len(b.images) and len(a.audios) == len(b.audios)
        for x, y in zip(a.images, b.images):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(a.audios, b.audios):
            np.testing.assert_array_equal(x, y)


def test_committed_system_describes_attached_media():
    # The input side end to end: attached image, video and sound -> a reply naming every attribute (val phrasings).
    from anygen import AnyGenPipeline
    from anygen.eval.evaluation import evaluate

    result = evaluate(AnyGenPipeline.from_pretrained(), n=20, tasks=["i2t", "v2t", "a2t"], progress=False)
    m = result["metrics"]
    assert m["routing"] >= 0.95, [it["reply"] for it in result["items"] if not it["routing"]]  # 60 replies
    assert m["i2t"] >= 0.8 and m["v2t"] >= 0.85 and m["a2t"] >= 0.95, m
