"""Tiny random AnyGen systems for tests, demos under development and CI.

:func:`build_tiny_random_pipeline` returns a real :class:`~anygen.AnyGenPipeline` (same classes, same
:func:`~anygen.pipelines.assembly.assemble` path as a recipe) whose parts are tiny and randomly initialised:
a ``LlamaForCausalLM`` of width 32, a ``StableDiffusionPipeline`` at 16 × 16, an ``AnimateDiffPipeline`` of
4 frames on it, and an ``AnyGenAudioPipeline`` over the world's 64 × 64 log-mel with a 4-iteration
Griffin-Lim. Everything runs on CPU in a fraction of a second.

A random backbone seldom emits a signal group by itself; :class:`ScriptedReply` makes it say a given reply
(through ``pipe(..., logits_processor=[ScriptedReply(pipe.tokenizer, text)])``), so tests exercise the real
path — generate, the signal-group processor, hidden states, projectors, generators — with a known routing.

Example:
    ```py
    >>> from anygen.testing import ScriptedReply, build_tiny_random_pipeline
    >>> pipe = build_tiny_random_pipeline(seed=0)
    >>> reply = ScriptedReply(pipe.tokenizer, "Here is a small red circle. [IMG] And a high tone. [AUD]")
    >>> out = pipe("draw a red circle and play a high tone", seed=0, num_inference_steps=2, logits_processor=[reply])
    >>> len(out.images), len(out.audios), out.images[0].size
    (1, 1, (16, 16))
    ```
"""

from __future__ import annotations

import functools

import torch
from transformers import LogitsProcessor

from .models.tokenizer import MODALITIES, build_tokenizer, expand_signal_markers, signal_groups

SCHEDULER = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1)
TINY_BACKBONE = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position_embeddings=256)
TINY_INPUT_PROJECTOR = dict(num_queries=4, hidden_size=16, num_layers=1, num_heads=2)
TINY_OUTPUT_PROJECTOR = dict(hidden_size=16, num_layers=1, num_heads=2)
TINY_NUM_FRAMES = 4


@functools.lru_cache(maxsize=4)
def _cached_tokenizer(k: tuple[tuple[str, int], ...]):
    return build_tokenizer(dict(k), vocab_size=512, dialogues_per_task=20, seed=0)


def tiny_tokenizer(signal_tokens: dict[str, int] | None = None):
    """A small BPE tokenizer over 20 train dialogues per task (cached per K; a fresh copy each call)."""
    import copy

    k = signal_tokens or {m: 4 for m in MODALITIES}
    return copy.deepcopy(_cached_tokenizer(tuple(sorted(k.items()))))


def tiny_image_components(seed: int = 0, max_length: int = 12, hidden_size: int = 16) -> dict:
    """Components of a random 16 × 16 ``StableDiffusionPipeline`` (the layout of tests/test_generators.py)."""
    from diffusers import DPMSolverMultistepScheduler

    from .models.generators import build_unet, build_vae
    from .models.text_encoder import build_caption_encoder, build_caption_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_caption_tokenizer(max_length=max_length)
    return dict(
        vae=build_vae(block_out_channels=(8, 16), latent_channels=4, norm_num_groups=8, sample_size=16),
        text_encoder=build_caption_encoder(tokenizer, hidden_size=hidden_size, num_layers=1, num_heads=2).eval(),
        tokenizer=tokenizer,
        unet=build_unet(4, hidden_size, (16, 32), layers_per_block=1, attention_head_dim=2, norm_num_groups=8, sample_size=8),
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
    )


def tiny_image_generator(seed: int = 0):
    """A random ``StableDiffusionPipeline`` of tiny components."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        **tiny_image_components(seed), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )


def tiny_video_generator(image_generator, seed: int = 0):
    """A random ``AnimateDiffPipeline`` over ``image_generator``'s components."""
    from diffusers import AnimateDiffPipeline

    from .models.generators import build_motion_adapter

    torch.manual_seed(seed)
    c = image_generator.components
    adapter = build_motion_adapter((16, 32), motion_num_attention_heads=2, motion_norm_num_groups=8, motion_max_seq_length=8)
    return AnimateDiffPipeline(
        vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
        scheduler=c["scheduler"], motion_adapter=adapter,
    )


def tiny_audio_generator(seed: int = 0, max_length: int = 12, hidden_size: int = 16):
    """A random ``AnyGenAudioPipeline`` over the world's 64 × 64 log-mel (VAE 64 → 8), 1 s of 16 kHz audio."""
    from diffusers import DPMSolverMultistepScheduler

    from .models.generators import build_unet, build_vae
    from .models.text_encoder import build_caption_encoder, build_caption_tokenizer
    from .pipelines import AnyGenAudioPipeline, GriffinLimVocoder
    from .training.generators import MEL_MEAN, MEL_STD

    torch.manual_seed(seed)
    tokenizer = build_caption_tokenizer(max_length=max_length)
    return AnyGenAudioPipeline(
        vae=build_vae(in_channels=1, block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=8, sample_size=64),
        text_encoder=build_caption_encoder(tokenizer, hidden_size=hidden_size, num_layers=1, num_heads=2).eval(),
        tokenizer=tokenizer,
        unet=build_unet(4, hidden_size, (16, 32), layers_per_block=1, attention_head_dim=2, norm_num_groups=8, sample_size=8),
        scheduler=DPMSolverMultistepScheduler(**SCHEDULER),
        vocoder=GriffinLimVocoder(n_iter=4, input_mean=MEL_MEAN, input_scale=MEL_STD),
    )


def build_tiny_random_pipeline(seed: int = 0, modalities: tuple[str, ...] = ("image", "video", "audio")):
    """A complete, random-weight :class:`~anygen.AnyGenPipeline` of tiny components.

    Args:
        seed: seeds every component, so two calls with the same seed give identical pipelines.
        modalities: which generators to include (``"video"`` needs ``"image"``'s components and builds its
            own copy of them when ``"image"`` is absent). Each included generator also enables that
            modality's input side (its VAE is the encoder).

    Returns:
        An :class:`~anygen.AnyGenPipeline` with progress bars off.
    """
    from .models.backbone import build_llama
    from .pipelines.assembly import assemble

    bad = sorted(set(modalities) - set(MODALITIES))
    if bad:
        raise ValueError(f"`modalities` must be drawn from {MODALITIES}, got {bad}")
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    backbone = build_llama(tokenizer, **TINY_BACKBONE)
    image = tiny_image_generator(seed + 1) if "image" in modalities or "video" in modalities else None
    video = tiny_video_generator(image, seed + 2) if "video" in modalities else None
    audio = tiny_audio_generator(seed + 3) if "audio" in modalities else None
    pipe = assemble(
        tokenizer, backbone,
        image_generator=image if "image" in modalities else None, video_generator=video, audio_generator=audio,
        input_projector=TINY_INPUT_PROJECTOR, output_projector=TINY_OUTPUT_PROJECTOR,
        num_frames=TINY_NUM_FRAMES, max_new_tokens=48, seed=seed + 4,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ScriptedReply(LogitsProcessor):
    r"""Make ``generate`` produce a given reply: at each step only the script's next token (then eos) is allowed.

    For tests and demos of random-weight pipelines only: it replaces what the backbone would say, while
    everything downstream (signal-group processing, hidden states, projectors, generators) runs for real.
    Create a new one per call.

    Args:
        tokenizer: the pipeline's tokenizer.
        text: the reply, with ``[IMG]``/``[VID]``/``[AUD]`` markers where media should be generated.
    """

    def __init__(self, tokenizer, text: str):
        k = {m: len(ids) for m, ids in signal_groups(tokenizer).items()}
        self.ids = tokenizer(expand_signal_markers(text, k), add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        self._start: int | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # The first call sees the prompt; later ones any longer prefix (assisted decoding scores several
        # candidate positions per step and may step back), so the script position is the length past the prompt.
        n = input_ids.shape[1]
        if self._start is None:
            self._start = n
        step = min(max(n - self._start, 0), len(self.ids) - 1)
        # Keep the script's token at the score the earlier processors left it (forbidden stays forbidden).
        out = torch.full_like(scores, torch.finfo(scores.dtype).min)
        out[:, self.ids[step]] = scores[:, self.ids[step]]
        return out
