"""The ``anygen`` command line.

Every sub-command imports its heavy dependencies lazily, so ``anygen --help``
is instant. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
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
    if not (DEFAULT_WEIGHTS / "model_index.json").exists():
        raise NotImplementedYet(
            f"The embedded default model is not trained yet: {DEFAULT_WEIGHTS} has no model_index.json. "
            "It lands with the issues 'Modality generators' and 'LLM backbone ... AnyGenPipeline'."
        )
    _not_yet("generate", "LLM backbone, signal tokens, projectors and AnyGenPipeline")


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

        return load_pipeline(source, device=device, kernels=args.kernels)

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
    _not_yet("eval", "LLM backbone, signal tokens, projectors and AnyGenPipeline")


def _add_kernels_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kernels", choices=KERNEL_OPTIONS, default=None,
        help="fused Triton kernels: auto = on CUDA when Triton imports (the PyTorch reference elsewhere), "
        "torch = references only, triton = force Triton, off = leave the models unpatched "
        "(default: the recipe's `kernels` key, else off)",
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

    e = sub.add_parser("eval", help="evaluate with the Shapes World judges")
    e.add_argument("--split", default="val", choices=["val", "heldout"])
    e.add_argument("--json", default=None)
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
