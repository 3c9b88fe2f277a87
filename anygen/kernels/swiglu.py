"""SwiGLU, ``c = silu(a) * b``, forward and backward (the Llama MLP's gate).

In ``down_proj(silu(gate_proj(x)) * up_proj(x))`` eager PyTorch runs silu and
the product as two kernels and keeps silu(a) alive for the backward; the fused
forward reads a and b once and writes c once (3 tensor passes instead of 5),
and the backward recomputes sigmoid(a) from a instead of storing silu(a)
(Liger's trade: one (tokens, 11008) tensor less per layer for a 7B model,
90 MB at 4096 bf16 tokens: 4096 x 11008 x 2 bytes).

Cost, for a and b of n elements of size e:
  forward:  bytes = 3*n*e,  FLOPs ~ 5*n (sigmoid counted as 3)
  backward: bytes = 5*n*e (read a, b, dc; write da, db),  FLOPs ~ 10*n
"""

from __future__ import annotations

import functools

import torch

from .dispatch import cdiv, interpret_enabled, jit_kernels, use_triton

tl = None  # triton.language, bound by jit_kernels() on the first launch: importing this module never imports Triton


def _swiglu_fwd_kernel(A, B, C, n, BLOCK: tl.constexpr):
    # Elementwise over the flattened tensors: 1024 elements per program (8 per thread at 4 warps) keeps
    # loads 16-byte vectorised for bf16 and is large enough to hide the sigmoid's exp latency.
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    # silu(a) is rounded to a's dtype before the product, as eager `F.silu(a) * b` does.
    # silu(a) = a * sigmoid(a), written out: tl.sigmoid is a @jit helper that the interpreter re-patches
    # triton.language for on every call (~4 ms each); compiled, both are the same ex2 + rcp.
    silu_a = (a / (1.0 + tl.exp(-a))).to(A.dtype.element_ty).to(tl.float32)
    tl.store(C + offs, (silu_a * b).to(C.dtype.element_ty), mask=mask)


def _swiglu_bwd_kernel(DC, A, B, DA, DB, n, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dc = tl.load(DC + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-a))  # recomputed: 1 exp per element is cheaper than storing and re-reading silu(a)
    silu_a = a * sig
    db = dc * silu_a.to(A.dtype.element_ty).to(tl.float32)
    # d silu(a) / da = sig * (1 + a * (1 - sig))
    da = dc * b * sig * (1.0 + a * (1.0 - sig))
    tl.store(DA + offs, da.to(DA.dtype.element_ty), mask=mask)
    tl.store(DB + offs, db.to(DB.dtype.element_ty), mask=mask)


@functools.cache
def _kernels(interpret: bool) -> list:
    return jit_kernels(globals(), _swiglu_fwd_kernel, _swiglu_bwd_kernel)


BLOCK = 1024


def swiglu_fwd_triton(a: torch.Tensor, b: torch.Tensor, block: int = BLOCK) -> torch.Tensor:
    """Launch the forward kernel on same-shape ``a``, ``b`` (made contiguous); returns ``silu(a) * b``."""
    (fwd, _) = _kernels(interpret_enabled())
    a, b = a.contiguous(), b.contiguous()
    c = torch.empty(a.shape, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
    n = a.numel()
    if n > 0:
        fwd[(cdiv(n, block),)](a, b, c, n, BLOCK=block, num_warps=4)
    return c


def swiglu_bwd_triton(
    dc: torch.Tensor, a: torch.Tensor, b: torch.Tensor, block: int = BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the backward kernel; returns ``(da, db)`` in a's and b's dtypes."""
    (_, bwd) = _kernels(interpret_enabled())
    dc, a, b = dc.contiguous(), a.contiguous(), b.contiguous()
    da, db = torch.empty_like(a), torch.empty_like(b)
    n = a.numel()
    if n > 0:
        bwd[(cdiv(n, block),)](dc, a, b, da, db, n, BLOCK=block, num_warps=4)
    return da, db


def swiglu_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Reference: ``F.silu(a) * b``, what ``LlamaMLP`` computes between its projections."""
    return torch.nn.functional.silu(a) * b


class SwiGLUFunction(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; saves a and b (not silu(a))."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(a, b)
        return swiglu_fwd_triton(a, b)

    @staticmethod
    def backward(ctx, dc: torch.Tensor):
        a, b = ctx.saved_tensors
        return swiglu_bwd_triton(dc, a, b)


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``silu(a) * b``, Triton or reference (see :mod:`anygen.kernels.dispatch`).

    Args:
        a: gate pre-activation, any shape, float dtype, any strides.
        b: up projection, same shape as ``a``.

    Returns:
        Tensor of that shape, dtype ``promote(a.dtype, b.dtype)``; differentiable in a and b.
    """
    if a.shape != b.shape:
        raise ValueError(f"swiglu: `a` and `b` must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if use_triton("swiglu", a, b):
        return SwiGLUFunction.apply(a, b)
    return swiglu_torch(a, b)
