"""Classifier-free guidance combine, forward: ``uncond + s * (cond - uncond)``, optionally rescaled.

With ``guidance_rescale`` = phi > 0 (Lin et al. 2023, "Common Diffusion Noise
Schedules and Sample Steps are Flawed", section 3.4; diffusers'
``rescale_noise_cfg``) the guided prediction is pulled back toward the
per-sample standard deviation of the conditional one:

    cfg = uncond + s * (cond - uncond)
    out = phi * cfg * std(cond) / std(cfg) + (1 - phi) * cfg        (std per sample, unbiased)

Eager PyTorch runs the plain combine as 3 kernels (sub, mul, add: 8 tensor
passes) and the rescaled one as ~10 (two std reductions re-read cond and cfg,
then mul, mul, add); the fused versions make one pass (read 2, write 1) and two
passes (statistics: read 2; combine: read 2, write 1). It runs once per
denoising step on the latents, so it is small (SD-1.5, one image: 4 x 64 x 64
per prediction, 32 KB in bf16) and launch-bound; fusing is mostly fewer
launches: 1 (or 2) instead of 3 (or ~10).

Cost, for cond and uncond of n elements of size e in B samples:
  plain:    bytes = 3*n*e,  FLOPs = 3*n
  rescaled: bytes = 5*n*e + 16 bytes per chunk (re-read by each chunk of its sample),  FLOPs ~ 12*n
"""

from __future__ import annotations

import functools

import torch

from .dispatch import cdiv, interpret_enabled, jit_kernels, next_power_of_2, use_triton

tl = None  # triton.language, bound by jit_kernels() on the first launch: importing this module never imports Triton


def _cfg_combine_fwd_kernel(
    U, C, O, Stats,
    sample_size, n_chunks, scale, rescale,
    RESCALE: tl.constexpr, BLOCK: tl.constexpr, BLOCK_CHUNKS: tl.constexpr,
):
    sample = tl.program_id(0)
    chunk = tl.program_id(1)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < sample_size
    base = sample.to(tl.int64) * sample_size
    u = tl.load(U + base + offs, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(C + base + offs, mask=mask, other=0.0).to(tl.float32)
    g = u + scale * (c - u)
    if RESCALE:
        # Merge this sample's chunk statistics (mean, M2 of cond; mean, M2 of cfg) with Chan's formula.
        k = tl.arange(0, BLOCK_CHUNKS)
        k_ok = k < n_chunks
        row = Stats + (sample * n_chunks + k) * 4
        counts = tl.where(k_ok, tl.minimum(sample_size - k * BLOCK, BLOCK), 0).to(tl.float32)
        mean_c = tl.load(row + 0, mask=k_ok, other=0.0)
        m2_c = tl.load(row + 1, mask=k_ok, other=0.0)
        mean_g = tl.load(row + 2, mask=k_ok, other=0.0)
        m2_g = tl.load(row + 3, mask=k_ok, other=0.0)
        dev_c = tl.where(k_ok, mean_c - tl.sum(counts * mean_c, axis=0) / sample_size, 0.0)
        dev_g = tl.where(k_ok, mean_g - tl.sum(counts * mean_g, axis=0) / sample_size, 0.0)
        # std(cond) / std(cfg): the (n - 1) of the unbiased estimates cancels.
        var_c = tl.sum(m2_c + counts * dev_c * dev_c, axis=0)
        var_g = tl.sum(m2_g + counts * dev_g * dev_g, axis=0)
        factor = rescale * tl.sqrt(var_c / var_g) + (1.0 - rescale)
        g = g * factor
    tl.store(O + base + offs, g.to(O.dtype.element_ty), mask=mask)


def _cfg_combine_stats_kernel(U, C, Stats, sample_size, n_chunks, scale, BLOCK: tl.constexpr):
    sample = tl.program_id(0)
    chunk = tl.program_id(1)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = offs < sample_size
    base = sample.to(tl.int64) * sample_size
    u = tl.load(U + base + offs, mask=mask, other=0.0).to(tl.float32)
    c = tl.load(C + base + offs, mask=mask, other=0.0).to(tl.float32)
    g = u + scale * (c - u)
    count = tl.minimum(sample_size - chunk * BLOCK, BLOCK).to(tl.float32)
    # Two-pass mean / M2 inside the chunk (it is in registers): no E[x^2] - E[x]^2 cancellation.
    mean_c = tl.sum(c, axis=0) / count
    mean_g = tl.sum(g, axis=0) / count
    dc = tl.where(mask, c - mean_c, 0.0)
    dg = tl.where(mask, g - mean_g, 0.0)
    out = Stats + (sample * n_chunks + chunk) * 4
    tl.store(out + 0, mean_c)
    tl.store(out + 1, tl.sum(dc * dc, axis=0))
    tl.store(out + 2, mean_g)
    tl.store(out + 3, tl.sum(dg * dg, axis=0))


@functools.cache
def _kernels(interpret: bool) -> list:
    return jit_kernels(globals(), _cfg_combine_fwd_kernel, _cfg_combine_stats_kernel)


def cfg_combine_triton(
    uncond: torch.Tensor,
    cond: torch.Tensor,
    guidance_scale: float,
    guidance_rescale: float = 0.0,
    block: int | None = None,
) -> torch.Tensor:
    """Launch the kernel(s) on same-shape ``uncond``, ``cond`` (batch first; made contiguous).

    Args:
        block: elements per program, default 1024 (tests pass small values for multi-chunk samples).
    """
    fwd, stats = _kernels(interpret_enabled())
    uncond, cond = uncond.contiguous(), cond.contiguous()
    out = torch.empty(uncond.shape, dtype=torch.promote_types(uncond.dtype, cond.dtype), device=cond.device)
    if out.numel() == 0:
        return out
    samples = cond.shape[0] if cond.dim() > 0 else 1
    sample_size = cond.numel() // samples
    # 1024 elements per program: SD-1.5 latents (4 x 64 x 64 per sample) are 16 programs per sample.
    block = block or min(next_power_of_2(sample_size), 1024)
    n_chunks = cdiv(sample_size, block)
    rescale = guidance_rescale > 0.0
    chunk_stats = torch.empty(samples, n_chunks, 4, dtype=torch.float32, device=cond.device) if rescale else out
    grid = (samples, n_chunks)
    if rescale:
        stats[grid](uncond, cond, chunk_stats, sample_size, n_chunks, float(guidance_scale), BLOCK=block, num_warps=4)
    fwd[grid](
        uncond, cond, out, chunk_stats,
        sample_size, n_chunks, float(guidance_scale), float(guidance_rescale),
        RESCALE=rescale, BLOCK=block, BLOCK_CHUNKS=next_power_of_2(n_chunks), num_warps=4,
    )
    return out


def cfg_combine_torch(
    uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0
) -> torch.Tensor:
    """Reference: the combine of diffusers' StableDiffusionPipeline, then ``rescale_noise_cfg`` if phi > 0."""
    guided = uncond + guidance_scale * (cond - uncond)
    if guidance_rescale > 0.0:
        dims = list(range(1, cond.ndim))
        std_cond = cond.std(dim=dims, keepdim=True)
        std_cfg = guided.std(dim=dims, keepdim=True)
        guided = guidance_rescale * (guided * (std_cond / std_cfg)) + (1 - guidance_rescale) * guided
    return guided


def cfg_combine(
    uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float, guidance_rescale: float = 0.0
) -> torch.Tensor:
    """Classifier-free guidance, Triton or reference (see :mod:`anygen.kernels.dispatch`).

    Args:
        uncond: unconditional prediction, (B, ...).
        cond: conditional prediction, same shape.
        guidance_scale: s; 1 returns ``cond``.
        guidance_rescale: phi in [0, 1]; 0 disables the rescale.

    Returns:
        ``uncond + s * (cond - uncond)``, rescaled per sample when ``guidance_rescale > 0``.
    """
    if uncond.shape != cond.shape:
        raise ValueError(
            "cfg_combine: `uncond` and `cond` must have the same shape, "
            f"got {tuple(uncond.shape)} and {tuple(cond.shape)}"
        )
    if not 0.0 <= guidance_rescale <= 1.0:
        raise ValueError(f"cfg_combine: `guidance_rescale` must be in [0, 1], got {guidance_rescale}")
    needs_grad = torch.is_grad_enabled() and (uncond.requires_grad or cond.requires_grad)
    if not needs_grad and use_triton("cfg_combine", cond, uncond):
        return cfg_combine_triton(uncond, cond, guidance_scale, guidance_rescale)
    return cfg_combine_torch(uncond, cond, guidance_scale, guidance_rescale)
