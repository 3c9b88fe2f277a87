"""The ``anygen`` command line.

Every sub-command imports its heavy dependencies lazily, so ``anygen --help``
is instant. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
from pathlib import Path

from .errors import AnyGenInputError

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "anygen-tiny"
KERNEL_OPTIONS = ("off", "auto", "torch", "triton")  # anygen.kernels.kernels_option; not imported: it imports torch


class NotImplementedYet(RuntimeError):
    pass


def _not_yet(what: str, issue: str):
    raise NotImplementedYet(f"`anygen {what}` is not implemented yet (tracked in the issue '{issue}').")


def cmd_generate(args: argparse.Namespace) -> int:
    """Answer one prompt; write reply.txt, image_i.png, video_i.mp4 (+ .gif), audio_i.wav and result.json to --out."""
    import time

    from .apps.media import load_audio, load_image, load_video, write_json, write_output

    load = _pipeline_loader(args)
    if not args.prompt.strip():
        raise AnyGenInputError("`prompt` is empty; pass a request such as 'draw a red circle'")
    if args.steps is not None and args.steps < 1:
        raise AnyGenInputError(f"--steps must be a positive int, got {args.steps}")
    if args.guidance is not None and args.guidance < 0:
        raise AnyGenInputError(f"--guidance must be >= 0 (<= 1 disables guidance), got {args.guidance}")
    # Read every attachment before loading the model: a bad file fails fast, with nothing written.
    images = [load_image(f) for f in args.image]
    audios = [load_audio(f) for f in args.audio]
    videos = [load_video(f) for f in args.video]

    pipe = load()
    # The settings used, given or the pipeline's defaults, are recorded in result.json.
    defaults = {k: p.default for k, p in inspect.signature(pipe.__call__).parameters.items()}
    kw = {
        "num_inference_steps": args.steps if args.steps is not None else defaults.get("num_inference_steps"),
        "guidance_scale": args.guidance if args.guidance is not None else defaults.get("guidance_scale"),
    }
    kw = {k: v for k, v in kw.items() if v is not None}
    t0 = time.perf_counter()
    out = pipe(args.prompt, images=images or None, audios=audios or None, videos=videos or None, seed=args.seed, **kw)
    seconds = time.perf_counter() - t0

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = write_output(out, out_dir, gif=True)
    write_json(out_dir / "result.json", {
        "prompt": args.prompt,
        "attachments": {"image": args.image, "audio": args.audio, "video": args.video},
        "model": args.model or str(DEFAULT_WEIGHTS),
        "seed": args.seed,
        "num_inference_steps": kw.get("num_inference_steps"),
        "guidance_scale": kw.get("guidance_scale"),
        "reply": out.text,
        "outputs": {"images": len(out.images), "videos": len(out.videos), "audios": len(out.audios)},
        "sample_rate": out.sample_rate,
        "files": files,
        "seconds": round(seconds, 3),
    })
    print(out.text)
    for f in files + ["result.json"]:
        print(out_dir / f)
    return 0


def _pipeline_loader(args: argparse.Namespace):
    """A function of the device that loads ``--model`` (default: the embedded anygen-tiny), checked up front."""
    if args.model is None:
        if not (DEFAULT_WEIGHTS / "model_index.json").exists():
            raise NotImplementedYet(
                f"the embedded default model is not trained yet ({DEFAULT_WEIGHTS} has no model_index.json); "
                "pass --model PATH, a folder saved with AnyGenPipeline.save_pretrained"
            )
        source = str(DEFAULT_WEIGHTS)
    else:
        source = args.model
        if Path(source).exists() and not (Path(source) / "model_index.json").is_file():
            raise AnyGenInputError(f"--model: {source!r} has no model_index.json; give a folder saved with AnyGenPipeline.save_pretrained")
        if not Path(source).exists() and source.count("/") != 1:
            raise AnyGenInputError(f"--model: no such folder {source!r}")

    def load(device=None):
        from .apps.loading import load_pipeline

        return load_pipeline(source, device=device, kernels=args.kernels, compile=getattr(args, "compile", False))

    return load


def cmd_batch(args: argparse.Namespace) -> int:
    from .apps.batch import RunSettings, run_batch

    settings = RunSettings(seed=args.seed, num_inference_steps=args.steps, guidance_scale=args.guidance, batch_size=args.batch_size)
    if args.steps is not None and args.steps < 1:
        raise AnyGenInputError(f"--steps must be at least 1, got {args.steps}")
    load = _pipeline_loader(args)
    return run_batch(args.prompts, args.out, load_pipeline=load, resume=args.resume, settings=settings,
                     progress=not args.no_progress)


def cmd_demo(args: argparse.Namespace) -> int:
    from .apps.demo import launch_demo

    pipe = _pipeline_loader(args)()
    launch_demo(pipe, host=args.host, port=args.port, share=args.share)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import run_training

    return run_training(args.recipe, stage=args.stage, resume=not args.no_resume, max_steps=args.max_steps)


def cmd_eval(args: argparse.Namespace) -> int:
    """Measure the pipeline on val/held-out dialogues; print the issue's table, optionally write --json."""
    from .apps.media import write_json

    if args.n < 1:
        raise AnyGenInputError(f"--n must be a positive int, got {args.n}")
    if args.steps is not None and args.steps < 1:
        raise AnyGenInputError(f"--steps must be a positive int, got {args.steps}")
    if args.guidance is not None and args.guidance < 0:
        raise AnyGenInputError(f"--guidance must be >= 0 (<= 1 disables guidance), got {args.guidance}")
    from .world import TASKS

    tasks = [t for t in args.tasks.split(",") if t] if args.tasks else None
    if tasks is not None and (bad := [t for t in tasks if t not in TASKS]):
        raise AnyGenInputError(f"--tasks: unknown {bad}; choose from {','.join(TASKS)}")
    pipe = _pipeline_loader(args)()
    from .eval.evaluation import DEFAULT_GUIDANCE_SCALE, evaluate, markdown_table

    result = evaluate(
        pipe, split=args.split, n=args.n, seed=args.seed, tasks=tasks,
        num_inference_steps=args.steps if args.steps is not None else 20,
        guidance_scale=args.guidance if args.guidance is not None else DEFAULT_GUIDANCE_SCALE,
    )
    result = {"model": args.model or str(DEFAULT_WEIGHTS), **result}
    if args.json:
        write_json(args.json, result)
    print(markdown_table(result))
    if result["n_errors"]:
        print(f"\n{result['n_errors']} item(s) raised an input error, counted wrong: {result['errors'][0]}")
    return 0


def _add_kernels_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernels", choices=KERNEL_OPTIONS, default=None,
        help="fused Triton kernels: auto = on CUDA when Triton imports (the PyTorch reference elsewhere), "
        "torch = references only, triton = force Triton, off = leave the models unpatched "
        "(default: off)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anygen", description="AnyGen: any-to-any generation.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="answer one prompt; write the reply and media to --out")
    g.add_argument("prompt")
    g.add_argument("--image", action="append", default=[], help="attach an image file (repeatable)")
    g.add_argument("--audio", action="append", default=[], help="attach a .wav file (repeatable)")
    g.add_argument("--video", action="append", default=[], help="attach a video file (repeatable)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default="outputs")
    g.add_argument("--model", default=None, help="pipeline folder (default: the embedded anygen-tiny)")
    g.add_argument("--steps", type=int, default=None, help="denoising steps of every generator (default: the pipeline's, 20)")
    g.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the pipeline's, 1.5)")
    _add_kernels_flag(g)
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser(
        "batch", help="generate from a .txt or .jsonl prompt file (also under `accelerate launch`)",
        description="Generate every prompt of a .txt (one per line) or .jsonl file into DIR/<id>/, with DIR/manifest.jsonl. "
        "Exit code 0: all items ok; 1: some failed (see the manifest); 2: bad arguments.",
    )
    b.add_argument("prompts", help=".txt (one prompt per line; blank and # lines skipped) or .jsonl "
                   "(prompt, id, seed, num_inference_steps, guidance_scale, negative_prompt, image, audio, video)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--resume", action="store_true", help="skip the items already done in DIR, redo the rest")
    b.add_argument("--batch-size", type=int, default=8, help="items denoised together per generator (default 8)")
    b.add_argument("--seed", type=int, default=0, help="seed of the items that set none (default 0)")
    b.add_argument("--steps", type=int, default=None, help="inference steps of the items that set none (default: the model's)")
    b.add_argument("--guidance", type=float, default=None, help="guidance scale of the items that set none (default: the model's)")
    b.add_argument("--model", default=None, help="pipeline folder (default: the embedded anygen-tiny)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_kernels_flag(b)
    b.add_argument(
        "--compile", action="store_true",
        help="torch.compile the generators' denoisers: the first item pays seconds of compilation (a C++ compiler "
        "must be installed on CPU), later ones run faster; worth it for many prompts",
    )
    b.set_defaults(func=cmd_batch)

    d = sub.add_parser("demo", help="Gradio chat demo on 127.0.0.1")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=int, default=7860)
    d.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    d.add_argument("--model", default=None, help="pipeline folder (default: the embedded anygen-tiny)")
    _add_kernels_flag(d)
    d.set_defaults(func=cmd_demo)

    t = sub.add_parser("train", help="train a recipe stage (resumable)")
    t.add_argument("recipe", help="recipe TOML, e.g. pipelines/anygen-tiny.toml")
    t.add_argument("--stage", default="generators", help="generators[:vae|image|video|audio], align-in, align-out, instruct")
    t.add_argument("--no-resume", action="store_true", help="ignore existing checkpoints and start over")
    t.add_argument("--max-steps", type=int, default=None, help="override the recipe's step count (smoke runs)")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "eval", help="measure the issue's bars with the Shapes World judges",
        description="Answer dialogues worded with templates held out of training and measure routing, generated "
        "media (judges) and descriptions; prints a markdown table.",
    )
    e.add_argument("--split", default="val", choices=["val", "heldout"],
                   help="val: unseen phrasings; heldout: also held-out (colour, shape) pairs (default val)")
    e.add_argument("--n", type=int, default=100, help="dialogues per task (default 100)")
    e.add_argument("--json", default=None, metavar="F", help="also write the full result as JSON to F")
    e.add_argument("--model", default=None, help="pipeline folder (default: the embedded anygen-tiny)")
    e.add_argument("--tasks", default=None, help="comma-separated subset of the world's tasks (default: all of the split's)")
    e.add_argument("--seed", type=int, default=0, help="picks the dialogues and seeds the calls (default 0)")
    e.add_argument("--steps", type=int, default=None, help="denoising steps of every generator (default 20)")
    e.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default 1.5)")
    _add_kernels_flag(e)
    e.set_defaults(func=cmd_eval)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "kernels", None) not in (None, "off"):
        os.environ["ANYGEN_KERNELS"] = args.kernels  # read by every kernel call (anygen.kernels.dispatch)
    try:
        return int(args.func(args) or 0)
    except AnyGenInputError as e:
        print(f"anygen {args.command}: error: {e}", file=sys.stderr)
        return 2
    except NotImplementedYet as e:
        print(f"anygen {args.command}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
