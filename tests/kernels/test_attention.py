"""Flash-style attention: Triton (interpreter) against ``F.scaled_dot_product_attention``, forward."""

import pytest
import torch

from anygen.kernels import attention, attention_torch
from anygen.kernels.attention import attention_triton

from kernel_checks import assert_close

# (B, H, Lq, Lk, D): head dims 8/40/64 and 16 (a 16-wide tile with no padding), sequence lengths 1, 7, 33,
# 77 (text tokens) and 257 (ragged past four 64-key tiles).
SHAPES = [
    (1, 1, 1, 1, 8),
    (1, 2, 7, 77, 40),
    (2, 1, 77, 7, 64),
    (1, 1, 257, 33, 8),
    (1, 2, 33, 257, 40),
    (1, 1, 64, 64, 64),
    (2, 3, 5, 9, 16),
]
DTYPES = [(torch.float32, 2e-5, 1e-4), (torch.bfloat16, 2e-2, 2e-2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@torch.no_grad()
def test_attention_forward(triton_mode, shape, dtype, atol, rtol, bias):
    bsz, heads, len_q, len_k, dim = shape
    q = torch.randn(bsz, heads, len_q, dim, dtype=dtype)
    k = torch.randn(bsz, heads, len_k, dim, dtype=dtype)
    v = torch.randn(bsz, heads, len_k, dim, dtype=dtype)
    # A diffusers-style key-padding bias, broadcast over heads and queries: (B, 1, 1, Lk).
    attn_bias = (torch.randn(bsz, 1, 1, len_k) * 2).to(dtype) if bias else None
    assert_close(attention(q, k, v, attn_bias), attention_torch(q, k, v, attn_bias), atol, rtol)


@torch.no_grad()
def test_attention_small_tiles_strided_inputs_and_scale():
    # diffusers' layout: (B, L, H*D) projections viewed as (B, H, L, D) without a copy.
    bsz, heads, len_q, len_k, dim = 2, 2, 37, 45, 24
    q = torch.randn(bsz, len_q, heads * dim).view(bsz, len_q, heads, dim).transpose(1, 2)
    k = torch.randn(bsz, len_k, heads * dim).view(bsz, len_k, heads, dim).transpose(1, 2)
    v = torch.randn(bsz, len_k, heads * dim).view(bsz, len_k, heads, dim).transpose(1, 2)
    bias = torch.randn(bsz, heads, len_q, len_k)  # full (B, H, Lq, Lk)
    assert not q.is_contiguous()
    out = attention_triton(q, k, v, bias, scale=0.3, block_m=16, block_n=16)
    assert_close(out, attention_torch(q, k, v, bias, scale=0.3), 2e-5, 1e-4)
    # last dim not unit-stride: made contiguous explicitly
    qt = q.transpose(2, 3).contiguous().transpose(2, 3)
    assert qt.stride(-1) != 1
    assert_close(attention_triton(qt, k, v), attention_torch(q, k, v), 2e-5, 1e-4)


@torch.no_grad()
def test_attention_boolean_mask_and_fully_masked_rows(triton_mode):
    q, k, v = torch.randn(1, 2, 9, 16), torch.randn(1, 2, 20, 16), torch.randn(1, 2, 20, 16)
    mask = torch.rand(1, 2, 9, 20) > 0.4
    mask[0, 1, 3] = False  # a query that may attend to nothing: 0, like SDPA
    out = attention(q, k, v, mask)
    assert_close(out, attention_torch(q, k, v, mask), 2e-5, 1e-4)
    assert torch.equal(out[0, 1, 3], torch.zeros(16))


def test_attention_rejects_bad_shapes():
    with pytest.raises(ValueError, match="expected q"):
        attention(torch.randn(1, 2, 3, 8), torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 4))
