"""How often the backbone's reply names what a generation request asks for, before any generator runs.

For ``anygen eval``'s validation items of the given tasks (the same dialogues, ``--seeds`` drawn), decodes the
reply with the pipeline's own steps 1–4 (its greedy decoding; no medium generated) and checks,
with the parser ``anygen eval`` uses for image → text (``reply_names_medium``), that it names every attribute of
every medium the reference reply makes and contradicts none. Where this is right, the generated image is judged
right about as often as from the caption fed directly, so the text → image gap of ``anygen eval`` is mostly the
wrong replies this counts. ``--show`` prints them. Tasks whose reply makes one medium only: the parser reads a
reply as the description of one medium, so two outputs in one request ("multi") would contradict each other.

Usage:
    python benchmarks/reply_text.py [--model weights/anygen-tiny] [--tasks t2i] [--seeds 0,1] [--n 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ONE_OUTPUT = ("t2i", "t2v", "t2a", "edit", "i2v", "multiturn")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="weights/anygen-tiny", help="a folder saved with AnyGenPipeline.save_pretrained")
    p.add_argument("--tasks", default="t2i", help=f"comma-separated, of {', '.join(ONE_OUTPUT)}")
    p.add_argument("--seeds", default="0,1", help="comma-separated eval seeds")
    p.add_argument("--n", type=int, default=100, help="items per task and seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--show", action="store_true", help="print every wrong reply with its request")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    from anygen.apps.loading import load_pipeline
    from anygen.eval.evaluation import eval_dialogue, pipeline_inputs
    from anygen.eval.metrics import reply_names_medium

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ONE_OUTPUT]
    if bad or not tasks:
        print(f"--tasks: {bad or 'none'} not allowed; choose from {list(ONE_OUTPUT)}", file=sys.stderr)
        return 1
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"--seeds must be comma-separated ints, got {args.seeds!r}", file=sys.stderr)
        return 1
    try:
        pipe = load_pipeline(args.model)
    except (OSError, ValueError) as e:
        print(f"--model {args.model}: {e}", file=sys.stderr)
        return 1
    print("| task | replies naming every requested attribute | n |\n|---|---|---|")
    for task in tasks:
        right, n = 0, 0
        for seed in seeds:
            for i in tqdm(range(args.n), desc=f"{task} seed {seed}", leave=False):
                d = eval_dialogue(task, "val", seed, i)
                history, media, _ = pipeline_inputs(d)
                wanted = d.messages[len(history)].media
                text, _ = pipe._write_reply(pipe._check_call(history, **media))  # steps 1-4 of a call, no media
                ok = bool(wanted) and all(reply_names_medium(text, x) for x in wanted)
                right += ok
                n += 1
                if args.show and not ok:
                    print(f"seed {seed} item {i}: {history[-1]['content']!r} -> {text!r}", file=sys.stderr)
        print(f"| {task} | {right / n:.1%} ({right}) | {n} |")
    print(f"\nreproduce: python benchmarks/reply_text.py --model {args.model} --tasks {args.tasks} --seeds {args.seeds} "
          f"--n {args.n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
