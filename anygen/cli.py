"""The ``anygen`` command line.

Every sub-command imports its heavy dependencies lazily, so ``anygen --help``
is instant. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import AnyGenInputError

DEFAULT_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "anygen-tiny"


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


def cmd_batch(args: argparse.Namespace) -> int:
    _not_yet("batch", "Apps: Gradio multimodal chat demo and batch generation")


def cmd_demo(args: argparse.Namespace) -> int:
    _not_yet("demo", "Apps: Gradio multimodal chat demo and batch generation")


def cmd_train(args: argparse.Namespace) -> int:
    from .training import run_training

    return run_training(args.recipe, stage=args.stage, resume=not args.no_resume, max_steps=args.max_steps)


def cmd_eval(args: argparse.Namespace) -> int:
    _not_yet("eval", "LLM backbone, signal tokens, projectors and AnyGenPipeline")


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
    g.set_defaults(func=cmd_generate)

    b = sub.add_parser("batch", help="generate from a .txt or .jsonl prompt file")
    b.add_argument("prompts")
    b.add_argument("--out", required=True)
    b.add_argument("--resume", action="store_true")
    b.set_defaults(func=cmd_batch)

    d = sub.add_parser("demo", help="Gradio chat demo on 127.0.0.1")
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=7860)
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
