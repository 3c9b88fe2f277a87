"""Several requests through one :class:`~anygen.AnyGenPipeline`, their media denoised together.

``AnyGenPipeline.__call__`` answers one request and runs each generator on
one medium at a time. On small models most of a denoising step is fixed
per-call overhead, so stacking the media of several requests into one
generator call raises throughput (``benchmarks/batch.py``).

:func:`generate_batch` runs each request's reply, signal-group hidden states
and projector (steps 1–4 of the pipeline) with the pipeline's own code, while
its step 5 (``_generate_medium``) is replaced, on this instance only and for
the duration of the batch, by a recorder. The recorded media are then grouped
by generator and settings and denoised in stacks: ``prompt_embeds`` of shape
(batch, Lc, Dc) and one ``torch.Generator`` per medium, seeded exactly as the
pipeline seeds it, so every medium starts from the same noise as in a
one-request call.

This leans on the pipeline's private step-5 hook; a batched entry point in
``AnyGenPipeline`` itself should replace it (noted for the pipeline's owner).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(eq=False)
class _Pending:
    """A medium the pipeline asked for, generated after the whole batch has been read."""

    modality: str
    cond: torch.Tensor  # (1, Lc, Dc)
    negative_prompt: str | None
    seed: int
    num_inference_steps: int
    guidance_scale: float
    num_frames: int
    result: Any = None
    error: BaseException | None = None


def _run_stack(pipe, pending: list[_Pending]) -> None:
    """Denoise media of one generator and one setting together; store each result on its record."""
    from ..pipelines.pipeline_anygen import encode_caption

    p0 = pending[0]
    g, proj = pipe.generator(p0.modality), pipe.output_projector(p0.modality)
    negatives = [
        encode_caption(g, [p.negative_prompt]) if p.negative_prompt is not None else proj.null_conditioning(1)
        for p in pending
    ]
    dtype = g.unet.dtype
    kw = dict(
        prompt_embeds=torch.cat([p.cond for p in pending]).to(g.device, dtype),  # (batch, Lc, Dc)
        negative_prompt_embeds=torch.cat(negatives).to(g.device, dtype),
        num_inference_steps=p0.num_inference_steps,
        guidance_scale=p0.guidance_scale,
        generator=[torch.Generator("cpu").manual_seed(p.seed) for p in pending],
    )
    if p0.modality == "image":
        results = g(**kw, output_type="pil").images
    elif p0.modality == "video":
        results = [list(frames) for frames in g(**kw, num_frames=p0.num_frames, output_type="pil").frames]
    else:
        results = [np.asarray(a, dtype=np.float32) for a in g(**kw, output_type="np").audios]
    for p, r in zip(pending, results):
        p.result = r


def _resolve(value):
    if isinstance(value, _Pending):
        if value.error is not None:
            raise value.error
        return value.result
    return value


def generate_batch(pipe, requests: list[tuple[Any, dict]], max_batch: int | None = None) -> list:
    """Answer several requests, denoising their media in stacks.

    Args:
        pipe: an :class:`~anygen.AnyGenPipeline`.
        requests: ``(prompt, kwargs)`` pairs, each exactly what ``pipe(prompt, **kwargs)`` would take.
        max_batch: most media per generator call (default: all that share a generator and settings).

    Returns:
        One entry per request, in order: its ``AnyGenOutput``, or the exception that request raised.
    """
    pending: list[_Pending] = []

    def record(modality, cond, negative_prompt, seed, num_inference_steps, guidance_scale, num_frames):
        p = _Pending(modality, cond, negative_prompt, seed, num_inference_steps, guidance_scale, num_frames)
        pending.append(p)
        return p

    outputs: list = []
    pipe._generate_medium = record  # an instance attribute: shadows the method for this batch only
    try:
        for prompt, kwargs in requests:
            try:
                outputs.append(pipe(prompt, **kwargs))
            except Exception as e:  # this request fails alone
                outputs.append(e)
    finally:
        del pipe.__dict__["_generate_medium"]

    stacks: dict[tuple, list[_Pending]] = defaultdict(list)
    for p in pending:
        stacks[(p.modality, p.num_inference_steps, p.guidance_scale, p.num_frames)].append(p)
    for group in stacks.values():
        size = max_batch or len(group)
        for i in range(0, len(group), size):
            chunk = group[i : i + size]
            try:
                _run_stack(pipe, chunk)
            except Exception as e:
                for p in chunk:
                    p.error = e

    results = []
    for out in outputs:
        if not isinstance(out, Exception):
            try:
                out.images = [_resolve(x) for x in out.images]
                out.videos = [_resolve(x) for x in out.videos]
                out.audios = [_resolve(x) for x in out.audios]
            except Exception as e:
                out = e
        results.append(out)
    return results
