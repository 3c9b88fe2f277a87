"""Latency of the committed anygen-tiny generators: warm, one sample, 20 steps.

Usage:
    python benchmarks/generators.py [--weights weights/anygen-tiny] [--threads 2] [--repeats 5] [--guidance 1.5]
                                    [--compile]

Prints a table of median seconds per sample next to the issue's bars. ``--compile`` compiles each denoiser in
place first (``unet.compile(fullgraph=True)``, torch.compile's inductor backend: C++ on CPU, so a compiler must be
installed); the table then also gives the one-off compile time, paid on the first call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

BARS = {"image": 0.3, "audio": 0.5, "video": 2.0}


def _time(fn, repeats: int) -> tuple[float, float]:
    """Median seconds per call after one warm-up call, and the warm-up call's seconds (compilation, if any)."""
    t = time.perf_counter()
    fn()  # warm-up
    first = time.perf_counter() - t
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), first


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="weights/anygen-tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.5, help="guidance scale (default 1.5, the model card's)")
    p.add_argument("--compile", action="store_true", help="torch.compile each denoiser (inductor) before timing")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers import AnimateDiffPipeline, StableDiffusionPipeline

    from anygen.pipelines import AnyGenAudioPipeline

    root = Path(args.weights)
    rows = []

    def ready(pipe):
        pipe.set_progress_bar_config(disable=True)
        if args.compile:
            pipe.unet.compile(fullgraph=True)
        return pipe

    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)
    if (root / "image_generator").exists():
        pipe = ready(StableDiffusionPipeline.from_pretrained(root / "image_generator"))
        cap = "a small red circle at the top-left on a black background"
        rows.append(("image", _time(lambda: pipe(cap, height=64, width=64, generator=torch.manual_seed(0), **kw), args.repeats)))
    if (root / "audio_generator").exists():
        pipe = ready(AnyGenAudioPipeline.from_pretrained(root / "audio_generator"))
        rows.append(("audio", _time(lambda: pipe("a beeping buzzy very low tone", generator=torch.manual_seed(0), **kw), args.repeats)))
    if (root / "video_generator").exists():
        pipe = ready(AnimateDiffPipeline.from_pretrained(root / "video_generator"))
        cap = "a small red circle moving left"
        rows.append(("video", _time(lambda: pipe(cap, num_frames=8, height=64, width=64, generator=torch.manual_seed(0), **kw), args.repeats)))
    if not rows:
        print(f"No generators under {root}", file=sys.stderr)
        return 1
    mode = "compiled" if args.compile else "eager"
    extra = " | first call s (compiles)" if args.compile else ""
    print(f"| generator | median s / sample ({args.steps} steps, {args.threads} threads, {mode}) | bar | ok{extra} |")
    print("|---|---|---|---|" + ("---|" if args.compile else ""))
    for name, (sec, first) in rows:
        tail = f" | {first:.1f} |" if args.compile else " |"
        print(f"| {name} | {sec:.3f} | < {BARS[name]} | {'yes' if sec < BARS[name] else 'NO'}{tail}")
    print(f"\nreproduce: python benchmarks/generators.py --weights {args.weights} --threads {args.threads} --steps {args.steps}"
          f"{' --compile' if args.compile else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
