"""Quality of the committed anygen-tiny generators, measured with the judges: the generators issue's table.

Each generator is loaded as a plain diffusers pipeline from ``weights/anygen-tiny`` and asked for media of
canonical captions it never saw in training (``val`` split; ``heldout`` = held-out (colour, shape) pairs);
the judges read the outputs back and a sample counts only if every requested attribute is right.

Usage:
    python benchmarks/generator_quality.py [--weights weights/anygen-tiny] [--n 128] [--n-video 64]
                                           [--steps 20] [--guidance 1.5] [--threads 2] [--seed 0]
                                           [--only image,video,audio]

Prints a markdown table and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# `python benchmarks/<this>.py` puts benchmarks/ first on sys.path, where benchmarks/anygen.py would shadow the package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

BARS = {"image, one object": 0.95, "image, held-out pairs": 0.85, "image, two objects": 0.70, "video": 0.90, "audio": 0.95,
        "image VAE round trip": 0.99}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights/anygen-tiny")
    p.add_argument("--n", type=int, default=128, help="samples per image/audio row (default 128)")
    p.add_argument("--n-video", type=int, default=64, help="video samples (default 64)")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="image,video,audio", help="comma-separated generators to measure (default all)")
    args = p.parse_args()
    if args.n < 1 or args.n_video < 1:
        p.error("--n and --n-video must be >= 1")
    only = args.only.split(",")
    if not only or set(only) - {"image", "video", "audio"}:
        p.error(f"--only: expected names from image, video, audio, got {args.only!r}")
    torch.set_num_threads(args.threads)
    from diffusers import AnimateDiffPipeline, StableDiffusionPipeline

    from anygen.pipelines import AnyGenAudioPipeline
    from anygen.training.common import to_uint8
    from anygen.training.generators import (
        evaluate_audio_pipeline,
        evaluate_image_pipeline,
        evaluate_video_pipeline,
        judge_accuracy,
    )
    from anygen.world.datasets import ImageCaptionDataset

    root = Path(args.weights)
    cfg = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)
    rows = []

    def row(name, n, fn):
        t = time.perf_counter()
        acc = fn()
        rows.append((name, n, acc, time.perf_counter() - t))
        print(f"{name}: {acc}", file=sys.stderr)

    if "image" in only:
        image = StableDiffusionPipeline.from_pretrained(root / "image_generator")

        @torch.no_grad()
        def vae_round_trip():
            val = ImageCaptionDataset("val", size=args.n, seed=args.seed + 1)
            items = [val[i] for i in range(len(val))]
            x = torch.stack([it["pixel_values"] for it in items])
            y = image.vae.decode(image.vae.encode(x).latent_dist.mode()).sample
            return judge_accuracy("image", to_uint8(y), [it["scene"] for it in items])

        row("image VAE round trip", args.n, vae_round_trip)
        row("image, one object", args.n, lambda: evaluate_image_pipeline(image, args.n, args.seed, cfg, "val", 1))
        row("image, held-out pairs", args.n, lambda: evaluate_image_pipeline(image, args.n, args.seed, cfg, "heldout", 1))
        row("image, two objects", args.n, lambda: evaluate_image_pipeline(image, args.n, args.seed, cfg, "val", 2))
    if "video" in only:
        video = AnimateDiffPipeline.from_pretrained(root / "video_generator")
        row("video", args.n_video, lambda: evaluate_video_pipeline(video, args.n_video, args.seed, cfg))
    if "audio" in only:
        audio = AnyGenAudioPipeline.from_pretrained(root / "audio_generator")
        row("audio", args.n, lambda: evaluate_audio_pipeline(audio, args.n, args.seed, cfg))

    print(f"| generator | samples | all requested attributes | bar | ok | per attribute |")
    print("|---|---|---|---|---|---|")
    for name, n, acc, _ in rows:
        per = ", ".join(f"{k[4:]} {v:.0%}" for k, v in acc.items() if k != "acc_all")
        ok = "yes" if acc["acc_all"] >= BARS[name] else "NO"
        print(f"| {name} | {n} | {acc['acc_all']:.1%} | ≥ {BARS[name]:.0%} | {ok} | {per} |")
    print(f"\n{args.steps} steps, guidance {args.guidance}, seed {args.seed}. reproduce: python benchmarks/generator_quality.py "
          f"--weights {args.weights} --n {args.n} --n-video {args.n_video} --steps {args.steps} --guidance {args.guidance}"
          f"{'' if args.only == 'image,video,audio' else ' --only ' + args.only}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
