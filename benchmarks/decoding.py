"""Backbone forwards a reply takes, per task, with each source of drafts of the lookup decoding.

Runs ``--n`` validation dialogues of every task (``anygen eval``'s items; tasks interleaved, as a session would mix
them) through the pipeline three times: step by step (``prompt_lookup_num_tokens = 0``, no reply memory: only a
started signal group's forced rest is drafted), with n-grams of the request, and with the reply memory too (the
default). Counts the forwards of each reply (``SignalLookupDecoding``'s ``num_forwards``: the prompt, the checks,
the pass over the reply) and checks that the replies are identical in all three. Forwards, not positions, are what
the LLM side costs on a CPU (``benchmarks/anygen.py --breakdown``).

Usage:
    python benchmarks/decoding.py [--model weights/anygen-tiny] [--n 6] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SETTINGS = {
    "step by step": dict(prompt_lookup_num_tokens=0, lookup_memory=0),
    "request n-grams": dict(prompt_lookup_num_tokens=10, lookup_memory=0),
    "request + reply memory (default)": dict(prompt_lookup_num_tokens=10, lookup_memory=64),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="weights/anygen-tiny", help="a folder saved with AnyGenPipeline.save_pretrained")
    p.add_argument("--n", type=int, default=6, help="dialogues per task")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from anygen.apps.loading import load_pipeline
    from anygen.eval.evaluation import eval_dialogue, pipeline_inputs
    from anygen.models import lookup_decoding
    from anygen.world import TASKS

    try:
        pipe = load_pipeline(args.model)
    except (OSError, ValueError) as e:
        print(f"--model {args.model}: {e}", file=sys.stderr)
        return 1
    forwards: list[int] = []
    decode = lookup_decoding.SignalLookupDecoding.__call__

    def counted(self, *a, **k):
        out = decode(self, *a, **k)
        forwards.append(out.num_forwards)
        return out

    lookup_decoding.SignalLookupDecoding.__call__ = counted
    items = [(t, i, eval_dialogue(t, "val", 0, i)) for i in range(args.n) for t in TASKS]

    def reply(d, seed: int) -> str:
        history, media, _ = pipeline_inputs(d)
        return pipe(history, **media, seed=seed, num_inference_steps=1).text

    rows, reference = [], None
    for name, settings in SETTINGS.items():
        for key, value in settings.items():
            setattr(pipe, key, value)
        pipe.reply_memory.clear()
        forwards.clear()
        texts = [reply(d, i) for _, i, d in items]
        per_task: dict[str, list[int]] = {}
        for (task, _, _), f in zip(items, forwards):
            per_task.setdefault(task, []).append(f)
        reference = reference or texts
        rows.append((name, statistics.mean(forwards), per_task, sum(a != b for a, b in zip(texts, reference))))
    print(f"| drafts | forwards a reply | {' | '.join(TASKS)} | replies unlike step by step |")
    print("|---|---|" + "---|" * len(TASKS) + "---|")
    for name, mean, per_task, differ in rows:
        cells = " | ".join(f"{statistics.mean(per_task[t]):.1f}" for t in TASKS)
        print(f"| {name} | {mean:.2f} | {cells} | {differ} of {len(items)} |")
    print(f"\nreproduce: python benchmarks/decoding.py --model {args.model} --n {args.n} --threads {args.threads}")
    return 0 if all(differ == 0 for *_, differ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
