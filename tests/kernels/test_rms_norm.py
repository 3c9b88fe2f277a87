"""RMSNorm: Triton (interpreter) against LlamaRMSNorm's arithmetic, forward and backward."""

import pytest
import torch

from anygen.kernels import rms_norm, rms_norm_torch
from anygen.kernels.rms_norm import rms_norm_fwd_triton

from kernel_checks import assert_close

SHAPES = [(1, 1), (7, 8), (5, 123, 123), (2, 77, 96), (257, 40), (3, 1, 1000), (2, 3, 4096)]
# (dtype, atol, rtol) forward; backward gets 2x (its reference reduces dw in the input dtype).
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.bfloat16, 2e-2, 2e-2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES, ids=["fp32", "bf16"])
def test_rms_norm_forward_backward(triton_mode, shape, dtype, atol, rtol):
    x = torch.randn(shape, dtype=dtype) * 3
    w = (torch.rand(shape[-1]) + 0.5).to(dtype)
    dy = torch.randn(shape, dtype=dtype)

    xk, wk = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = rms_norm(xk, wk, eps=1e-6)
    y.backward(dy)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    yr = rms_norm_torch(xr, wr, eps=1e-6)
    yr.backward(dy)

    assert_close(y, yr, atol, rtol, "y")
    assert_close(xk.grad, xr.grad, 2 * atol, 2 * rtol, "dx")
    # dw sums over every row: its error grows with the row count in bf16.
    assert_close(wk.grad, wr.grad, 2 * atol * max(1, x.numel() // shape[-1]) ** 0.5, 2 * rtol, "dw")


def test_rms_norm_non_contiguous_and_mixed_dtype(triton_mode):
    x = torch.randn(40, 6, 33).transpose(0, 1)[:, ::2]  # (6, 20, 33), strided in every dim but the last
    w = torch.rand(33, dtype=torch.float32) + 0.5
    assert not x.is_contiguous()
    assert_close(rms_norm(x, w), rms_norm_torch(x, w), 1e-5, 1e-5, "strided")
    # bf16 activations with a float32 weight: LlamaRMSNorm returns float32 (weight * bf16 promotes).
    xb = torch.randn(5, 33, dtype=torch.bfloat16)
    assert_close(rms_norm(xb, w), rms_norm_torch(xb, w), 1e-2, 1e-2, "mixed")


def test_rms_norm_empty(triton_mode):
    y, rstd = rms_norm_fwd_triton(torch.empty(0, 16), torch.ones(16), 1e-6)
    assert y.shape == (0, 16) and rstd.shape == (0,)


def test_rms_norm_rejects_wrong_weight():
    with pytest.raises(ValueError, match="weight"):
        rms_norm(torch.randn(2, 8), torch.ones(7))
