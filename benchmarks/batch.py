"""Throughput of `anygen batch`: items per second at batch size 1, 4 and 16.

Every item asks for one image; the run goes through the same path as
``anygen batch`` (``run_batch``: files, manifest and all) into a temporary folder.

Usage:
    python benchmarks/batch.py [--model weights/anygen-tiny] [--items 32] [--steps 20] [--threads 2]

Without ``--model`` (and until the trained anygen-tiny exists) it runs the tiny
random pipeline of ``anygen.testing``, whose replies are scripted to ask for
one image each (a random backbone would not emit a signal group itself).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/<this>.py` puts benchmarks/ first on sys.path, where benchmarks/anygen.py would shadow the package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="pipeline folder (default: the tiny random pipeline)")
    p.add_argument("--items", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-sizes", default="1,4,16")
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from anygen.apps.batch import RunSettings, run_batch
    from anygen.apps.loading import load_pipeline

    if args.model:
        pipe, processors = load_pipeline(args.model), None
    else:
        from anygen.testing import ScriptedReply, build_tiny_random_pipeline

        pipe = build_tiny_random_pipeline(seed=0)

        def processors(prompt):
            return [ScriptedReply(pipe.tokenizer, "Here is the picture. [IMG]")]

    sizes = [int(s) for s in args.batch_sizes.split(",")]
    prompts = [f"draw a small red circle at the {pos} on a black background"
               for pos in ("top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.txt"
        prompt_file.write_text("\n".join(prompts[i % len(prompts)] for i in range(args.items)) + "\n")
        for k, size in enumerate([sizes[0], *sizes]):  # the first run warms up
            settings = RunSettings(num_inference_steps=args.steps, batch_size=size, logits_processor=processors)
            t0 = time.perf_counter()
            code = run_batch(prompt_file, Path(tmp) / f"out{k}", pipe=pipe, settings=settings, progress=False)
            seconds = time.perf_counter() - t0
            if code != 0:
                print(f"batch size {size}: some items failed", file=sys.stderr)
                return 1
            if k:
                rows.append((size, args.items / seconds))
    base = rows[0][1]
    print(f"| batch size | items/s ({args.items} image items, {args.steps} steps, {args.threads} threads) | vs batch {rows[0][0]} |")
    print("|---|---|---|")
    for size, rate in rows:
        print(f"| {size} | {rate:.2f} | {rate / base:.2f}x |")
    model = f" --model {args.model}" if args.model else ""
    print(f"\nreproduce: python benchmarks/batch.py{model} --items {args.items} --steps {args.steps} --threads {args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
