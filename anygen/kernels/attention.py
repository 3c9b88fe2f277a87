"""Attention, flash-style forward: ``softmax(q k^T * scale + bias) v`` in one pass over K/V.

Each program owns BLOCK_M queries of one (batch, head) and streams K and V
through in BLOCK_N tiles with an online softmax (running max m, running sum l,
rescaling the accumulator by exp(m_old - m_new) as the max grows; Dao et al.
2022, Milakov & Gimelshein 2018), so the (Lq x Lk) score matrix never touches
memory. For SD-1.5 self-attention at 64x64 latents that matrix is
2 x 8 x 4096 x 4096 x 2 bytes = 537 MB per layer in eager math attention;
here HBM traffic is q, k, v, o only (4 x 2 x 8 x 4096 x 40 x 2 = 21 MB).

Scores use exp2 with scale * log2(e) folded into one multiply (one FMUL per
score saved, and ex2 is the hardware instruction). Edges are masked on every
side: queries past Lq, keys past Lk (their score is -inf), head dims past D
(zero-padded; D = 40 runs in a 64-wide tile). A row whose keys are all masked
returns 0, as PyTorch's SDPA does.

``bias`` is additive, broadcastable to (B, H, Lq, Lk) and read through its
strides, so a diffusers mask of shape (B, H, 1, Lk) is read with a zero query
stride (Lk values per head, served from cache) instead of being materialised
as (B, H, Lq, Lk): 2 x 8 x 4096 x 77 x 2 bytes = 10 MB per SD-1.5 cross-attention.

Cost, for q (B, H, Lq, D), k and v (B, H, Lk, D), element size e:
  FLOPs = 4 * B * H * Lq * Lk * D       (two matmuls; softmax ~ 5 * B*H*Lq*Lk not counted)
  bytes = e * B * H * (2 * Lq * D + 2 * Lk * D * ceil(Lq / BLOCK_M))   (K/V re-read per query block)
"""

from __future__ import annotations

import functools
import math

import torch

from .dispatch import cdiv, interpret_enabled, jit_kernels, next_power_of_2, use_triton

tl = None  # triton.language, bound by jit_kernels() on the first launch: importing this module never imports Triton


def _attention_fwd_kernel(
    Q, K, V, Bias, O,
    stride_qb, stride_qh, stride_qm,
    stride_kb, stride_kh, stride_kn,
    stride_vb, stride_vh, stride_vn,
    stride_bb, stride_bh, stride_bm, stride_bn,
    stride_ob, stride_oh, stride_om,
    num_heads, len_q, len_k, head_dim, qk_scale,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr,
):
    LOG2E: tl.constexpr = 1.4426950408889634
    start_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = (bh // num_heads).to(tl.int64)
    h = (bh % num_heads).to(tl.int64)
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    m_ok = offs_m < len_q
    d_ok = offs_d < head_dim

    q = tl.load(
        Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :],
        mask=m_ok[:, None] & d_ok[None, :], other=0.0,
    )
    if DOT_FP32:
        # The interpreter's tl.dot multiplies bf16 bit patterns as integers (triton-lang/triton#11584):
        # upcast its operands there. Compiled, bf16 goes to the tensor cores as is.
        q = q.to(tl.float32)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    bias_base = Bias + b * stride_bb + h * stride_bh + offs_m[:, None] * stride_bm

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max of the log2-scaled scores
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exp2(score - m_i)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(0, len_k, BLOCK_N):
        n = start_n + offs_n
        n_ok = n < len_k
        # K loaded transposed, (BLOCK_D, BLOCK_N), so q @ k needs no shuffle.
        k = tl.load(k_base + n[None, :] * stride_kn + offs_d[:, None], mask=d_ok[:, None] & n_ok[None, :], other=0.0)
        if DOT_FP32:
            k = k.to(tl.float32)
        s = tl.dot(q, k, input_precision=INPUT_PRECISION) * qk_scale
        if HAS_BIAS:
            bias = tl.load(bias_base + n[None, :] * stride_bn, mask=m_ok[:, None] & n_ok[None, :], other=0.0)
            s += bias.to(tl.float32) * LOG2E
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with every key so far masked has m_new = -inf: subtract 0 instead, so exp2 gives 0, not NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp2(s - m_safe[:, None])
        alpha = tl.exp2(m_i - m_safe)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = tl.load(v_base + n[:, None] * stride_vn + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :], other=0.0)
        # p is rounded to v's dtype (bf16 on GPU) for the second tensor-core matmul, as flash attention does.
        p = p.to(V.dtype.element_ty)
        if DOT_FP32:
            p = p.to(tl.float32)
            v = v.to(tl.float32)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision=INPUT_PRECISION)
        m_i = m_new
    out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :],
        out.to(O.dtype.element_ty), mask=m_ok[:, None] & d_ok[None, :],
    )


@functools.cache
def _kernels(interpret: bool) -> list:
    return jit_kernels(globals(), _attention_fwd_kernel)


def _launch_config(len_q: int, len_k: int, head_dim: int) -> tuple[int, int, int, int]:
    # tl.dot needs every tile side >= 16. 64 x 64 tiles with 4 warps for D <= 64 (SD's 40 and 64);
    # D = 80/128/160 (SD-1.5's deeper blocks, SDXL) doubles the accumulator, so BLOCK_N drops to 32
    # and 8 warps keep it at <= 64 float32 registers per thread.
    block_d = max(16, next_power_of_2(head_dim))
    block_m = min(64, max(16, next_power_of_2(len_q)))
    block_n = min(64 if block_d <= 64 else 32, max(16, next_power_of_2(len_k)))
    num_warps = 4 if block_d <= 64 else 8
    return block_m, block_n, block_d, num_warps


def attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_bias: torch.Tensor | None = None,
    scale: float | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
) -> torch.Tensor:
    """Launch the kernel.

    Args:
        q: (B, H, Lq, D). k, v: (B, H, Lk, D). Any strides with a unit last stride (the ``transpose(1, 2)``
            views diffusers makes are used in place); anything else is made contiguous.
        attn_bias: additive float bias broadcastable to (B, H, Lq, Lk), or None.
        scale: score scale, default ``D ** -0.5``.
        block_m, block_n: tile sizes (>= 16), default from the head dim; tests shrink them to cover
            multi-tile loops and ragged last tiles on small shapes.

    Returns:
        (B, H, Lq, D) tensor, contiguous, in q's dtype.
    """
    (fwd,) = _kernels(interpret_enabled())
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    bsz, heads, len_q, head_dim = q.shape
    len_k = k.shape[2]
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    if out.numel() == 0:
        return out
    bm, bn, bd, num_warps = _launch_config(len_q, len_k, head_dim)
    bm, bn = block_m or bm, block_n or bn
    scale = head_dim**-0.5 if scale is None else scale
    if attn_bias is not None:
        bias = attn_bias.expand(bsz, heads, len_q, len_k)  # stride-0 broadcast dims: no copy
        bias_strides = bias.stride()
    else:
        bias, bias_strides = q, (0, 0, 0, 0)  # never read: HAS_BIAS is compile-time False
    interpret = interpret_enabled()
    tf32 = torch.backends.cuda.matmul.allow_tf32
    fwd[(cdiv(len_q, bm), bsz * heads)](
        q, k, v, bias, out,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        *bias_strides,
        out.stride(0), out.stride(1), out.stride(2),
        heads, len_q, len_k, head_dim, scale * math.log2(math.e),
        HAS_BIAS=attn_bias is not None,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=bd,
        # float32 inputs follow torch's TF32 switch (off by default), like SDPA; bf16/fp16 ignore it.
        DOT_FP32=interpret and q.dtype == torch.bfloat16, INPUT_PRECISION="tf32" if tf32 else "ieee",
        num_warps=num_warps, num_stages=2,
    )
    return out


def attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Reference: ``F.scaled_dot_product_attention`` (what diffusers' ``AttnProcessor2_0`` calls)."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=scale)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_bias: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention, Triton or reference (see :mod:`anygen.kernels.dispatch`).

    The Triton path is forward only: when autograd needs gradients the reference runs whatever the mode.

    Args:
        q: (B, H, Lq, D) queries.
        k: (B, H, Lk, D) keys.
        v: (B, H, Lk, D) values.
        attn_bias: additive float bias, or a boolean mask (True = attend), broadcastable to (B, H, Lq, Lk).
        scale: score scale, default ``D ** -0.5``.

    Returns:
        (B, H, Lq, D) tensor in q's dtype.
    """
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4 or k.shape[:2] != q.shape[:2] or k.shape[3] != q.shape[3]:
        raise ValueError(
            "attention: expected q (B, H, Lq, D) and k, v (B, H, Lk, D), "
            f"got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if attn_bias is not None and attn_bias.dtype == torch.bool:
        attn_bias = torch.zeros(attn_bias.shape, dtype=q.dtype, device=q.device).masked_fill_(~attn_bias, float("-inf"))
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    if not needs_grad and use_triton("attention", q, k, v):
        return attention_triton(q, k, v, attn_bias, scale)
    return attention_torch(q, k, v, attn_bias, scale)


class AnyGenAttnProcessor:
    r"""diffusers attention processor running :func:`attention` (Triton on CUDA, SDPA otherwise).

    A copy of diffusers' ``AttnProcessor2_0`` with the SDPA call swapped, for every ``Attention`` of a
    UNet, VAE or motion adapter: self-attention (Lq = Lk = h*w), cross-attention (Lk = text tokens) and the
    VAE mid-block's single-head attention. One difference: it honours ``attn.scale`` (``AttnProcessor2_0``
    leaves SDPA's default ``head_dim ** -0.5``; the two agree whenever ``scale_qk=True``, the only case
    :func:`anygen.kernels.apply_kernels` installs it on).
    """

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)  # (B, h*w, C)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            # (B * H, 1 or Lq, Lk) -> (B, H, 1 or Lq, Lk)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        inner_dim = key.shape[-1]
        head_dim = inner_dim // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Lq, D), a strided view
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)  # (B, H, Lk, D)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = attention(query, key, value, attn_bias=attention_mask, scale=attn.scale)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)  # (B, Lq, H*D)
        hidden_states = hidden_states.to(query.dtype)

        hidden_states = attn.to_out[0](hidden_states)  # linear
        hidden_states = attn.to_out[1](hidden_states)  # dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor
