"""Multi-turn relative edits: does the reply step the previous turn's value, or copy it?

A relative edit names no value: "make it higher" after a high tone asks for a very high one, "make it go the other
way" after a clip moving up asks for one moving down. For ``anygen eval``'s validation multi-turn items (the same
dialogues, ``--seeds`` drawn) whose last turn is such a step (a pitch one step up or down, a motion reversed, the
new value left unsaid), decodes the reply with the pipeline's own steps 1–4 (its greedy decoding, no medium
generated) for the item's own request, and again with every training frame of the same kind put in its place
(``anygen.world.text.family_frames(..., "train")``), and reads the pitch or motion the reply names with
``anygen eval``'s parser. Rows: how often the reply names the stepped value ("right") and how often the previous
one ("kept"). Many "kept" on training phrasings means the backbone never learned the step; on the eval phrasings
only, that it does not carry the step to unseen words.

Usage:
    python benchmarks/relative_edits.py [--model weights/anygen-tiny] [--seeds 0,1] [--n 100]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="weights/anygen-tiny", help="a folder saved with AnyGenPipeline.save_pretrained")
    p.add_argument("--seeds", default="0,1", help="comma-separated eval seeds")
    p.add_argument("--n", type=int, default=100, help="multi-turn items per seed to look through")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        print(f"--seeds must be comma-separated ints, got {args.seeds!r}", file=sys.stderr)
        return 1
    if args.n < 1:
        print(f"--n must be at least 1, got {args.n}", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    from tqdm.auto import tqdm

    from anygen.apps.loading import load_pipeline
    from anygen.eval.evaluation import eval_dialogue, pipeline_inputs
    from anygen.eval.parse import parse_reply
    from anygen.world import relative_step, text

    try:
        pipe = load_pipeline(args.model)
    except (OSError, ValueError) as e:
        print(f"--model {args.model}: {e}", file=sys.stderr)
        return 1
    family = {"higher": "edit_pitch", "lower": "edit_pitch", "reverse": "edit_motion"}
    train_frames = {k: [f.text for f in text.family_frames(fam, "train") if f.kind == k] for k, fam in family.items()}
    counts = {(k, ph): [0, 0, 0] for k in family for ph in ("eval", "train")}  # replies, right, kept

    def named(reply: str, modality: str) -> list[str]:
        parsed = parse_reply(reply, modality)
        if modality == "audio":
            return parsed.pitch
        return [v for o in parsed.objects for v in o.get("motion", [])]

    for seed in seeds:
        for i in tqdm(range(args.n), desc=f"multiturn seed {seed}", leave=False):
            d = eval_dialogue("multiturn", "val", seed, i)
            media = [x for m in d.messages[:-1] for x in m.media]
            if not media or not d.messages[-1].media:
                continue
            before, after = media[-1], d.messages[-1].media[0]
            kind = relative_step(before, after)
            if kind is None:
                continue
            want, had = (after.pitch, before.pitch) if kind != "reverse" else (after.motion, before.motion)
            history, kwargs, _ = pipeline_inputs(d)
            if re.search(rf"\b{want}\b", history[-1]["content"], re.I):
                continue  # the request names the new value: not a relative edit
            requests = [("eval", history)] + [
                ("train", history[:-1] + [{"role": "user", "content": text.fill(f, it="it")}]) for f in train_frames[kind]
            ]
            for phrasing, h in requests:
                reply, _ = pipe._write_reply(pipe._check_call(h, **kwargs))  # steps 1-4 of a call, no media
                values = named(reply, after.modality)
                c = counts[kind, phrasing]
                c[0] += 1
                c[1] += values == [want]
                c[2] += values == [had]
    print("| step | phrasing | replies | right | kept the previous value |\n|---|---|---|---|---|")
    for (kind, phrasing), (n, right, kept) in counts.items():
        if n:
            print(f"| {kind} | {phrasing} | {n} | {right} ({right / n:.0%}) | {kept} ({kept / n:.0%}) |")
    print(f"\nreproduce: python benchmarks/relative_edits.py --model {args.model} --seeds {args.seeds} --n {args.n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
