"""RMSNorm (Llama's), forward and backward.

``y = w * (x / sqrt(mean(x**2) + eps)).to(x.dtype)``: statistics in float32,
the normalised row rounded to the input dtype *before* the weight multiply,
exactly like ``transformers``' ``LlamaRMSNorm`` (Liger's ``casting_mode="llama"``).

Eager PyTorch runs it as a chain of kernels (to(fp32), pow, mean, add,
rsqrt, mul, to(dtype), mul) that moves ~36 bytes per bf16 element through
float32 intermediates; the fused forward reads x once and writes y once
(4 bytes per element, 9x fewer) and keeps 1/rms per row (4 bytes) for the
backward. The backward reads x and dy once, writes dx once, and
reduces dw through per-program partial sums (one program per SM loops over
rows, so dw costs (SMs x hidden) float32 instead of (tokens x hidden)).

Cost, for x of shape (M, N) with element size e:
  forward:  bytes = 2*M*N*e + N*e + 4*M,  FLOPs ~ 4*M*N
  backward: bytes = 3*M*N*e + N*e + 4*M + 4*P*N (P programs),  FLOPs ~ 8*M*N
"""

from __future__ import annotations

import functools

import torch

from .dispatch import cdiv, interpret_enabled, jit_kernels, next_power_of_2, num_programs, use_triton

tl = None  # triton.language, bound by jit_kernels() on the first launch: importing this module never imports Triton


def _rms_norm_fwd_kernel(
    X, W, Y, Rstd,
    stride_x, stride_y,
    n_rows, n_cols, eps,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # A (BLOCK_M rows x BLOCK_N cols) tile per program, ~4096 elements: a 7B row (4096 bf16) is one row per
    # program and read exactly once; a tiny model's 32-wide rows are packed 128 to a program instead of
    # leaving 31/32 of the lanes idle.
    pid = tl.program_id(0)
    # int64 rows: row * stride overflows int32 past 2**31 elements (524k tokens of a 7B model).
    rows = pid.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    mask = row_ok[:, None] & (cols[None, :] < n_cols)
    # Upcast at load: statistics in float32 (and the interpreter cannot do arithmetic on bf16 at all).
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / n_cols + eps)  # (BLOCK_M,)
    tl.store(Rstd + rows, rstd, mask=row_ok)
    # Round to the input dtype before the weight multiply, as LlamaRMSNorm does.
    xhat = (x * rstd[:, None]).to(X.dtype.element_ty).to(tl.float32)
    w = tl.load(W + cols, mask=cols < n_cols, other=0.0).to(tl.float32)
    y = xhat * w[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)


def _rms_norm_bwd_kernel(
    DY, X, W, Rstd, DX, DW,
    stride_dy, stride_x, stride_dx,
    n_rows, n_cols, tiles_per_program,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Persistent programs (one per SM): each walks `tiles_per_program` row tiles and keeps its share of dw
    # in registers, so dw is one (programs, N) float32 write instead of an atomic add per row.
    pid = tl.program_id(0)
    tile_start = pid.to(tl.int64) * tiles_per_program
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < n_cols
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK_N], dtype=tl.float32)
    for tile in range(tile_start, tile_start + tiles_per_program):
        rows = tile * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows < n_rows)[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + rows, mask=rows < n_rows, other=0.0)
        xhat = x * rstd[:, None]
        # y = w * round(xhat): dw sees the rounded xhat, dx treats the rounding as identity.
        dw += tl.sum(dy * xhat.to(X.dtype.element_ty).to(tl.float32), axis=0)
        g = dy * w[None, :]
        # d/dx [x * rstd(x)] . g = rstd * (g - xhat * mean(g * xhat)), per row
        dx = rstd[:, None] * (g - xhat * (tl.sum(g * xhat, axis=1) / n_cols)[:, None])
        tl.store(DX + rows[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
    tl.store(DW + pid * n_cols + cols, dw, mask=col_ok)


@functools.cache
def _kernels(interpret: bool) -> list:
    return jit_kernels(globals(), _rms_norm_fwd_kernel, _rms_norm_bwd_kernel)


def _launch_config(n_rows: int, n_cols: int) -> tuple[int, int, int]:
    block_n = next_power_of_2(n_cols)
    if block_n > 65536:
        raise ValueError(f"rms_norm: hidden size {n_cols} > 65536 does not fit one program's registers")
    # ~4096 elements per tile: 32 float32 registers per thread at 4 warps (a 7B row is one 4096-wide tile);
    # wider rows (70B: 8192) get 8 warps and beyond that 16, to stay at <= 32 values per thread.
    block_m = min(max(1, 4096 // block_n), next_power_of_2(max(n_rows, 1)))
    num_warps = 4 if block_n <= 4096 else 8 if block_n <= 8192 else 16
    return block_m, block_n, num_warps


def rms_norm_fwd_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel.

    Args:
        x: (..., N) input; made contiguous.
        weight: (N,) scale.
        eps: added to the mean square.

    Returns:
        ``y`` with x's shape and dtype ``promote(x, weight)``, and ``rstd`` (rows,) float32 for the backward.
    """
    (fwd, _) = _kernels(interpret_enabled())
    n_cols = x.shape[-1]
    x2 = x.contiguous().view(-1, n_cols)  # (rows, hidden)
    weight = weight.contiguous()
    n_rows = x2.shape[0]
    y = torch.empty(x2.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    if n_rows > 0:
        block_m, block_n, num_warps = _launch_config(n_rows, n_cols)
        fwd[(cdiv(n_rows, block_m),)](
            x2, weight, y, rstd, x2.stride(0), y.stride(0), n_rows, n_cols, eps,
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
        )
    return y.view(x.shape), rstd


def rms_norm_bwd_triton(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel: returns ``dx`` (x's shape and dtype) and ``dw`` (weight's dtype)."""
    (_, bwd) = _kernels(interpret_enabled())
    n_cols = x.shape[-1]
    x2 = x.contiguous().view(-1, n_cols)
    dy2 = dy.contiguous().view(-1, n_cols)
    weight = weight.contiguous()
    n_rows = x2.shape[0]
    dx = torch.empty_like(x2)
    block_m, block_n, num_warps = _launch_config(n_rows, n_cols)
    n_tiles = cdiv(n_rows, block_m)
    programs = max(1, min(n_tiles, num_programs(x.device)))
    dw_partial = torch.zeros(programs, n_cols, dtype=torch.float32, device=x.device)
    if n_rows > 0:
        bwd[(programs,)](
            dy2, x2, weight, rstd, dx, dw_partial,
            dy2.stride(0), x2.stride(0), dx.stride(0),
            n_rows, n_cols, cdiv(n_tiles, programs),
            BLOCK_M=block_m, BLOCK_N=block_n, num_warps=num_warps,
        )
    return dx.view(x.shape), dw_partial.sum(0).to(weight.dtype)


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Reference: ``transformers``' ``LlamaRMSNorm.forward``, line for line."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    variance = h.pow(2).mean(-1, keepdim=True)
    h = h * torch.rsqrt(variance + eps)
    return weight * h.to(input_dtype)


class RMSNormFunction(torch.autograd.Function):
    """Autograd wrapper of the Triton forward and backward; saves x and 1/rms (not y)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = rms_norm_fwd_triton(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        x, weight, rstd = ctx.saved_tensors
        dx, dw = rms_norm_bwd_triton(dy, x, weight, rstd)
        return dx, dw, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Llama RMSNorm over the last dimension, Triton or reference (see :mod:`anygen.kernels.dispatch`).

    Args:
        x: (..., N) hidden states, any float dtype, any strides.
        weight: (N,) scale.
        eps: added to the mean square before the reciprocal square root.

    Returns:
        Tensor of x's shape and dtype ``promote(x.dtype, weight.dtype)``; differentiable in x and weight.
    """
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"rms_norm: `weight` must have shape ({x.shape[-1]},), got {tuple(weight.shape)}")
    if use_triton("rms_norm", x, weight):
        return RMSNormFunction.apply(x, weight, eps)
    return rms_norm_torch(x, weight, eps)
