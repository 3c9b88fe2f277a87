"""What the demo's streamed denoising previews cost: seconds per text→image reply with and without them.

The demo decodes a preview only while previews stay within ``PREVIEW_BUDGET``
of the time spent denoising (``anygen/apps/demo.py``). This runs the demo's chat
function itself (no server): reply text, scheduler, previews, PNG files.

Usage:
    python benchmarks/demo_preview.py [--model weights/anygen-tiny] [--steps 20] [--repeats 7] [--threads 2]

Without ``--model`` it assembles an AnyGenPipeline around a random image generator
of anygen-tiny's shapes (``pipelines/anygen-tiny.toml``: 64×64 VAE with 4 levels,
a 64-channel UNet over 8×8 latents, a 64-wide caption encoder) with a scripted
reply, since the cost ratio of a VAE decode to a denoising step is what matters.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `python benchmarks/<this>.py` puts benchmarks/ first on sys.path, where benchmarks/anygen.py would shadow the package.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def recipe_shaped_pipeline():
    """An AnyGenPipeline whose image generator has anygen-tiny's shapes (random weights)."""
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from anygen.models.backbone import build_llama
    from anygen.models.generators import build_unet, build_vae
    from anygen.models.text_encoder import build_caption_encoder, build_caption_tokenizer
    from anygen.pipelines.assembly import assemble
    from anygen.testing import SCHEDULER, TINY_BACKBONE, TINY_INPUT_PROJECTOR, TINY_OUTPUT_PROJECTOR, tiny_tokenizer

    r = tomllib.loads((ROOT / "pipelines" / "anygen-tiny.toml").read_text())["generators"]
    enc, vae, unet = r["caption_encoder"], r["image_vae"], r["image_unet"]
    torch.manual_seed(0)
    captions = build_caption_tokenizer(max_length=enc["max_length"])
    image = StableDiffusionPipeline(
        vae=build_vae(block_out_channels=vae["block_out_channels"], latent_channels=vae["latent_channels"],
                      layers_per_block=vae["layers_per_block"], norm_num_groups=vae["norm_num_groups"]),
        text_encoder=build_caption_encoder(captions, enc["hidden_size"], enc["num_layers"], enc["num_heads"]).eval(),
        tokenizer=captions,
        unet=build_unet(vae["latent_channels"], enc["hidden_size"], unet["block_out_channels"], unet["layers_per_block"],
                        unet["attention_head_dim"], unet["norm_num_groups"], sample_size=8),
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    tokenizer = tiny_tokenizer()
    pipe = assemble(tokenizer, build_llama(tokenizer, **TINY_BACKBONE), image_generator=image,
                    input_projector=TINY_INPUT_PROJECTOR, output_projector=TINY_OUTPUT_PROJECTOR, max_new_tokens=48)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from anygen.apps.demo import PREVIEW_BUDGET, ChatDemo
    from anygen.apps.loading import load_pipeline

    pipe = load_pipeline(args.model) if args.model else recipe_shaped_pipeline()
    processors = None
    if not args.model:
        from anygen.testing import ScriptedReply

        def processors(messages):
            return [ScriptedReply(pipe.tokenizer, "Here is a small red circle at the top-left on a black background. [IMG]")]

    message = {"text": "draw a small red circle at the top-left on a black background", "files": []}
    with tempfile.TemporaryDirectory() as tmp:
        def reply_seconds(budget: float) -> tuple[float, int]:
            chat = ChatDemo(pipe, tmp, logits_processor=processors, preview_budget=budget)
            t0 = time.perf_counter()
            updates = list(chat.respond(message, [], 0, False, args.steps, 4.0, "default"))
            previews = sum("preview_" in str(c) for u, _ in updates for c in u["content"])
            return time.perf_counter() - t0, previews

        rows = {}
        for budget in (0.0, PREVIEW_BUDGET, 0.0, PREVIEW_BUDGET):  # interleaved, the first pair warms up
            reply_seconds(budget)
        for budget in (0.0, PREVIEW_BUDGET):
            rows[budget] = []
        for _ in range(args.repeats):  # interleaved so that a busy machine slows both alike
            for budget in rows:
                rows[budget].append(reply_seconds(budget))
    off = statistics.median(s for s, _ in rows[0.0])
    on = statistics.median(s for s, _ in rows[PREVIEW_BUDGET])
    shown = statistics.median(n for _, n in rows[PREVIEW_BUDGET])
    print(f"| previews | median s / reply ({args.steps} steps, {args.threads} threads) | previews shown | extra time |")
    print("|---|---|---|---|")
    print(f"| off | {off:.3f} | 0 | |")
    print(f"| budget {PREVIEW_BUDGET:.0%} | {on:.3f} | {shown:g} | {on / off - 1:+.1%} |")
    model = f" --model {args.model}" if args.model else ""
    print(f"\nreproduce: python benchmarks/demo_preview.py{model} --steps {args.steps} --repeats {args.repeats} --threads {args.threads}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
