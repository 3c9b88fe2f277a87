"""The trained anygen-tiny generators committed under weights/: each loads as a plain diffusers pipeline and
makes what its caption asks for, as measured by the judges. (The image and video generators join when their
weights reach the bars of the generators issue.)"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from diffusers import DiffusionPipeline

from anygen.eval.judges import judge_audio
from anygen.eval.metrics import judged_matches
from anygen.world.scenes import sample_sound

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "anygen-tiny"
N = 4  # samples per generator; the bars are >= 90-95 %, so at most one miss is tolerated


def _load(name: str):
    pipe = DiffusionPipeline.from_pretrained(WEIGHTS / f"{name}_generator", trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _judged_ok(judge, outputs, media) -> int:
    return sum(all(judged_matches(judge(o), m).values()) for o, m in zip(outputs, media))


def test_audio_generator_plays_its_captions():
    pipe = _load("audio")
    assert type(pipe).__name__ == "AnyGenAudioPipeline"
    rng = random.Random(0)
    sounds = [sample_sound(rng, "val") for _ in range(N)]
    out = pipe([s.caption() for s in sounds], num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert out.sample_rate == 16000 and out.audios.shape == (N, 16000)
    assert _judged_ok(judge_audio, out.audios, sounds) >= N - 1


def test_generator_weights_fit_the_budget():
    # The video folder links the image generator's unet, vae and text encoder instead of copying them.
    files = {f.resolve() for name in ("image", "video", "audio") for f in (WEIGHTS / f"{name}_generator").rglob("*")}
    size = sum(f.stat().st_size for f in files if f.is_file())
    assert size <= 25e6, f"generator weights total {size / 1e6:.1f} MB"
