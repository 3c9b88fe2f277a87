"""Fused GroupNorm + SiLU, forward only (inference): ``silu(group_norm(x))``.

Every diffusers ``ResnetBlock2D`` runs ``norm1 -> SiLU`` and ``norm2 -> SiLU``.
Eager PyTorch spends 5 passes over the activation on that pair (group-norm
statistics read x, the normalise pass reads x and writes y, SiLU reads y and
writes z); the fused op spends 3 (statistics read x, the normalise+SiLU pass
reads x and writes z): 1.67x fewer bytes on the most frequent op of a UNet.

Two kernels, so the work spreads over the whole GPU even when a UNet has only
batch x 32 groups: SD-1.5 at 64x64 latents with CFG has 2 x 32 = 64 groups of
10 x 4096 = 40960 elements; one program per group would leave 44 of an A100's
108 SMs idle. Instead each group is cut into chunks of ``BLOCK`` elements
(and groups smaller than a chunk are packed ``GROUPS`` to a program):

1. ``_group_norm_silu_stats_kernel``: one program per (groups, chunk) tile writes
   each chunk's mean and sum of squared deviations (M2), two-pass in registers.
2. ``_group_norm_silu_fwd_kernel``: one program per tile merges its groups'
   chunk statistics (Chan et al.'s parallel variance: exact, no
   E[x^2] - E[x]^2 cancellation) and writes ``silu((x - mean) * rstd * w + b)``.

Cost, for x of n elements of size e, C channels:
  bytes = 3*n*e + 2*C*e (+ 8 bytes per chunk, written once, read per chunk),  FLOPs ~ 12*n (sigmoid as 3)
"""

from __future__ import annotations

import functools

import torch

from .dispatch import cdiv, interpret_enabled, jit_kernels, next_power_of_2, use_triton

tl = None  # triton.language, bound by jit_kernels() on the first launch: importing this module never imports Triton


def _group_norm_silu_stats_kernel(
    X, Mean, M2,
    n_groups, group_size, n_chunks,
    GROUPS: tl.constexpr, BLOCK: tl.constexpr,
):
    # A (GROUPS x BLOCK) tile: GROUPS groups (n * num_groups + g; each contiguous in an NC... tensor), one chunk
    # of BLOCK elements of each. Small groups are packed (anygen-tiny's 4 channels x 8 x 8 = 256 elements:
    # 16 groups per program) instead of leaving most of a program's lanes idle.
    groups = tl.program_id(0) * GROUPS + tl.arange(0, GROUPS)
    chunk = tl.program_id(1)
    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    g_ok = groups < n_groups
    mask = g_ok[:, None] & (offs < group_size)[None, :]
    x = tl.load(X + groups.to(tl.int64)[:, None] * group_size + offs[None, :], mask=mask, other=0.0).to(tl.float32)
    count = tl.minimum(group_size - chunk * BLOCK, BLOCK).to(tl.float32)
    mean = tl.sum(x, axis=1) / count
    d = tl.where(mask, x - mean[:, None], 0.0)
    tl.store(Mean + groups * n_chunks + chunk, mean, mask=g_ok)
    tl.store(M2 + groups * n_chunks + chunk, tl.sum(d * d, axis=1), mask=g_ok)


def _group_norm_silu_fwd_kernel(
    X, W, B, Y, Mean, M2,
    n_groups, group_size, spatial, channels_per_group, num_groups, n_chunks, eps,
    HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr,
    GROUPS: tl.constexpr, BLOCK: tl.constexpr, BLOCK_CHUNKS: tl.constexpr,
):
    groups = tl.program_id(0) * GROUPS + tl.arange(0, GROUPS)
    chunk = tl.program_id(1)
    g_ok = groups < n_groups
    # Merge each group's chunk statistics. Every chunk program of a group repeats this: n_chunks is small
    # (20 for SD-1.5 at 64x64 latents), so 2 * n_chunks * 4 bytes re-read per program beats a third kernel.
    c = tl.arange(0, BLOCK_CHUNKS)
    c_ok = c < n_chunks
    s_mask = g_ok[:, None] & c_ok[None, :]
    s_offs = groups[:, None] * n_chunks + c[None, :]
    means = tl.load(Mean + s_offs, mask=s_mask, other=0.0)  # (GROUPS, BLOCK_CHUNKS)
    m2s = tl.load(M2 + s_offs, mask=s_mask, other=0.0)
    counts = tl.where(c_ok, tl.minimum(group_size - c * BLOCK, BLOCK), 0).to(tl.float32)[None, :]
    mean = tl.sum(counts * means, axis=1) / group_size  # (GROUPS,)
    dev = tl.where(s_mask, means - mean[:, None], 0.0)
    var = tl.sum(m2s + counts * dev * dev, axis=1) / group_size  # biased, as GroupNorm
    rstd = tl.rsqrt(var + eps)

    offs = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = g_ok[:, None] & (offs < group_size)[None, :]
    ptrs = groups.to(tl.int64)[:, None] * group_size + offs[None, :]
    x = tl.load(X + ptrs, mask=mask, other=0.0).to(tl.float32)
    y = (x - mean[:, None]) * rstd[:, None]
    # Per-channel affine: the channel of element i of group g is g * channels_per_group + i // spatial.
    channel = ((groups % num_groups) * channels_per_group)[:, None] + (offs // spatial)[None, :]
    if HAS_WEIGHT:
        y = y * tl.load(W + channel, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(B + channel, mask=mask, other=0.0).to(tl.float32)
    # silu(y) = y * sigmoid(y), written out: tl.sigmoid is a @jit helper, which the interpreter re-patches
    # triton.language for on every call (~4 ms each); compiled, both are the same ex2 + rcp.
    y = y / (1.0 + tl.exp(-y))
    tl.store(Y + ptrs, y.to(Y.dtype.element_ty), mask=mask)


@functools.cache
def _kernels(interpret: bool) -> list:
    return jit_kernels(globals(), _group_norm_silu_stats_kernel, _group_norm_silu_fwd_kernel)


def _pick_tile(n_groups: int, group_size: int) -> tuple[int, int]:
    # Tiles of <= 2048 elements (16 per thread at 4 warps). SD-1.5's 40960-element groups become 20 chunks:
    # 64 groups x 20 = 1280 programs, ~12 per A100 SM. Groups smaller than a tile are packed several per tile.
    block = min(next_power_of_2(group_size), 2048)
    groups = min(max(1, 2048 // block), next_power_of_2(n_groups))
    return groups, block


def group_norm_silu_triton(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
    tile: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Launch the two kernels on ``x`` (N, C, *spatial), made contiguous.

    Args:
        tile: (groups per program, elements of a group per program), powers of two; default from
            :func:`_pick_tile`. Tests pass small tiles to cover multi-chunk groups, ragged last chunks and
            a ragged last group tile.
    """
    stats, fwd = _kernels(interpret_enabled())
    x = x.contiguous()
    n, c = x.shape[0], x.shape[1]
    spatial = x[0, 0].numel()
    channels_per_group = c // num_groups
    group_size = channels_per_group * spatial
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    n_groups = n * num_groups
    per_program, block = tile or _pick_tile(n_groups, group_size)
    n_chunks = cdiv(group_size, block)
    grid = (cdiv(n_groups, per_program), n_chunks)
    mean = torch.empty(n_groups, n_chunks, dtype=torch.float32, device=x.device)
    m2 = torch.empty(n_groups, n_chunks, dtype=torch.float32, device=x.device)
    stats[grid](x, mean, m2, n_groups, group_size, n_chunks, GROUPS=per_program, BLOCK=block, num_warps=4)
    dummy = mean  # never read: HAS_WEIGHT / HAS_BIAS are compile-time False
    fwd[grid](
        x,
        weight.contiguous() if weight is not None else dummy,
        bias.contiguous() if bias is not None else dummy,
        y, mean, m2,
        n_groups, group_size, spatial, channels_per_group, num_groups, n_chunks, eps,
        HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None,
        GROUPS=per_program, BLOCK=block, BLOCK_CHUNKS=next_power_of_2(n_chunks), num_warps=4,
    )
    return y


def group_norm_silu_torch(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Reference: ``F.silu(F.group_norm(x, num_groups, weight, bias, eps))``, what diffusers runs unfused."""
    return torch.nn.functional.silu(torch.nn.functional.group_norm(x, num_groups, weight, bias, eps))


def group_norm_silu(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """``silu(group_norm(x))``, Triton or reference (see :mod:`anygen.kernels.dispatch`).

    The Triton path has no backward, so when autograd needs gradients (training) or autocast is on (it runs
    group_norm in float32, which the kernel does not mirror), the reference runs whatever the mode.

    Args:
        x: (N, C, *spatial) activations, any float dtype, any strides.
        num_groups: number of groups; must divide C.
        weight: (C,) scale or None.
        bias: (C,) shift or None.
        eps: added to the variance.

    Returns:
        Tensor of x's shape and dtype.
    """
    if x.dim() < 2 or x.shape[1] % num_groups != 0:
        raise ValueError(f"group_norm_silu: `num_groups`={num_groups} must divide the channels of x {tuple(x.shape)}")
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias)
    )
    if needs_grad or torch.is_autocast_enabled(x.device.type):
        return group_norm_silu_torch(x, num_groups, weight, bias, eps)
    if use_triton("group_norm_silu", x):
        return group_norm_silu_triton(x, num_groups, weight, bias, eps)
    return group_norm_silu_torch(x, num_groups, weight, bias, eps)
