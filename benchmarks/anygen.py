"""Warm text → image latency of AnyGenPipeline, end to end, against the bare StableDiffusionPipeline inside it.

Both paths run the same image generator with the same steps, guidance and seed; the bare one is fed the very
conditioning the output projector produced for the request (captured beforehand), so the difference is what the
LLM side costs: tokenising, the greedy reply with its signal group (lookup decoding), the pass over the reply and
the projector. The two paths are timed alternately, and the ratio is the median of the per-pair ratios.

Every timed pair is a different request: the README's one, then text → image requests of the world's validation
split (``anygen eval``'s items, eval seed 7). The pipeline's lookup decoding drafts from its recent replies, so a
request timed again would find its own reply remembered; here each is decoded for the first time since the memory
was cleared (after capturing the conditioning), behind eight warm-up requests of the same kind, as in a session of
distinct requests. ``--cold`` clears the memory before every end-to-end call instead (drafts from the request and
the signal group only).

Usage:
    python benchmarks/anygen.py [--model weights/anygen-tiny] [--threads 2] [--repeats 9] [--steps 20]
                                [--scripted] [--compile] [--breakdown] [--cold]

``--breakdown`` also times each backbone forward of the end-to-end calls (grouped by how many positions a
forward feeds), to show where the LLM side goes; the wrapper adds a few microseconds to each forward.

``--scripted`` makes the backbone say the canonical reply ("Here is <caption>. [IMG]") through
``anygen.testing.ScriptedReply`` (every token still runs through the backbone): for untrained or smoke models
whose own reply would not draw. ``--compile`` compiles the image generator's UNet first
(``pipe.compile_generators(["image"])``); both paths then run the compiled UNet. Prints a table and the command
that reproduces it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# `python benchmarks/anygen.py` puts benchmarks/ first on sys.path, where this very file would shadow the package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

PROMPT = "draw a small red circle at the top-left on a black background"
REPLY = "Here is a small red circle at the top-left on a black background. [IMG]"
BARS = {"ratio": 1.2, "seconds": 0.5}


def _time_pairs(pairs: list) -> tuple[float, float, float]:
    """Medians of each pair's ``a()`` and ``b()`` seconds and of their ratio ``b / a``, timed alternately.

    Alternating keeps slow drifts of a shared machine (another VM's load, frequency changes) out of the
    ratio: both sides of each pair run within a second of each other.
    """
    ta, tb = [], []
    for a, b in pairs:
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb), statistics.median(y / x for x, y in zip(ta, tb))


def _time_forwards(backbone) -> dict[int, list[float]]:
    """Wrap ``backbone.forward`` (on the instance) to record each call's seconds by the positions it feeds."""
    forward, times = backbone.forward, {}

    def timed(*args, **kwargs):
        x = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        t = time.perf_counter()
        out = forward(*args, **kwargs)
        times.setdefault(x.shape[1], []).append(time.perf_counter() - t)
        return out

    backbone.forward = timed
    return times


def _print_forwards(times: dict[int, list[float]], calls: int) -> None:
    print("\n| backbone forward, positions fed | per call | median ms | ms per call |")
    print("|---|---|---|---|")
    for n, ts in sorted(times.items()):
        print(f"| {n} | {len(ts) / calls:.1f} | {1000 * statistics.median(ts):.2f} | {1000 * sum(ts) / calls:.1f} |")
    print(f"| all | {sum(map(len, times.values())) / calls:.1f} | | {1000 * sum(map(sum, times.values())) / calls:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="weights/anygen-tiny", help="a folder saved with AnyGenPipeline.save_pretrained")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9, help="timed pairs, one request each")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.5, help="guidance scale (default 1.5, the model card's)")
    p.add_argument("--scripted", action="store_true", help="force the canonical reply (untrained/smoke models)")
    p.add_argument("--compile", action="store_true", help="torch.compile the image generator's UNet (both paths)")
    p.add_argument("--breakdown", action="store_true", help="also time each backbone forward of the end-to-end calls")
    p.add_argument("--cold", action="store_true", help="no remembered replies to draft from in any timed call")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if not (Path(args.model) / "model_index.json").exists():
        print(f"No pipeline at {args.model} (model_index.json missing)", file=sys.stderr)
        return 1
    from anygen.apps.loading import load_pipeline
    from anygen.eval.evaluation import eval_dialogue
    from anygen.testing import ScriptedReply

    pipe = load_pipeline(args.model)
    if args.compile:
        pipe.compile_generators(["image"])
    g = pipe.image_generator
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, seed=0)
    requests = [PROMPT] + [eval_dialogue("t2i", "val", 7, i).messages[0].content for i in range(args.repeats + 8)]
    timed, warm_up = requests[: args.repeats], requests[args.repeats :]

    def end_to_end(prompt):
        if args.cold:
            pipe.reply_memory.clear()
        extra = {"logits_processor": [ScriptedReply(pipe.tokenizer, REPLY)]} if args.scripted else {}
        return pipe(prompt, **kw, **extra)

    # Capture the conditioning the output projector hands the generator for each timed request.
    captured, outs = [], []
    hook = pipe.image_output_projector.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    for prompt in timed:
        outs.append(end_to_end(prompt))
        if len(outs[-1].images) != 1:
            hook.remove()
            print(f"The reply to {prompt!r} drew {len(outs[-1].images)} images ({outs[-1].text!r}), not one; "
                  "pass --scripted for an untrained model", file=sys.stderr)
            return 1
    hook.remove()
    null = pipe.image_output_projector.null_conditioning(1)

    def bare(cond):
        return g(prompt_embeds=cond, negative_prompt_embeds=null, num_inference_steps=args.steps,
                 guidance_scale=args.guidance, generator=torch.Generator("cpu").manual_seed(0), output_type="pil").images[0]

    pipe.reply_memory.clear()  # no timed request finds its own reply remembered
    for prompt in warm_up:
        end_to_end(prompt)
    bare(captured[0])
    forwards = _time_forwards(pipe.backbone) if args.breakdown else None
    t_bare, t_e2e, ratio = _time_pairs(
        [(lambda c=c: bare(c), lambda p=p: end_to_end(p)) for c, p in zip(captured[-len(timed) :], timed)]
    )
    out = outs[0]
    lengths = [len(pipe.tokenizer(o.text, add_special_tokens=False).input_ids) for o in outs]
    mode = "compiled UNet" if args.compile else "eager"
    print(f"| path | median s ({args.steps} steps, {args.threads} threads, {mode}) | bar | ok |")
    print("|---|---|---|---|")
    print(f"| bare StableDiffusionPipeline (prompt_embeds) | {t_bare:.3f} | | |")
    ok_s = "yes" if t_e2e < BARS["seconds"] else "NO"
    print(f"| AnyGenPipeline text → image, end to end | {t_e2e:.3f} | < {BARS['seconds']} s | {ok_s} |")
    print(f"| ratio end to end / bare (median of pairs) | {ratio:.2f} | ≤ {BARS['ratio']} | {'yes' if ratio <= BARS['ratio'] else 'NO'} |")
    print(f"| LLM side (difference) | {t_e2e - t_bare:.3f} | | |")
    if forwards is not None:
        _print_forwards(forwards, calls=args.repeats)
    print(f"\n{len(timed)} requests, replies of {min(lengths)}–{max(lengths)} tokens"
          f"{', scripted' if args.scripted else ''}; the first: {out.text}")
    print(f"reproduce: python benchmarks/anygen.py --model {args.model} --threads {args.threads} --steps {args.steps}"
          f" --repeats {args.repeats}" + "".join(f" --{k}" for k in ("scripted", "compile", "breakdown", "cold") if getattr(args, k)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
