"""SwiGLU: Triton (interpreter) against ``F.silu(a) * b``, forward and backward."""

import pytest
import torch

from anygen.kernels import swiglu, swiglu_torch
from anygen.kernels.swiglu import swiglu_bwd_triton, swiglu_fwd_triton

from kernel_checks import assert_close

SHAPES = [(1,), (7, 1), (5, 123, 123), (77, 48), (2, 257, 40), (3, 1025)]
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.bfloat16, 2e-2, 2e-2)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES, ids=["fp32", "bf16"])
def test_swiglu_forward_backward(triton_mode, shape, dtype, atol, rtol):
    a = torch.randn(shape, dtype=dtype) * 3
    b = torch.randn(shape, dtype=dtype)
    dc = torch.randn(shape, dtype=dtype)

    ak, bk = a.clone().requires_grad_(), b.clone().requires_grad_()
    c = swiglu(ak, bk)
    c.backward(dc)
    ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
    cr = swiglu_torch(ar, br)
    cr.backward(dc)

    assert_close(c, cr, atol, rtol, "c")
    assert_close(ak.grad, ar.grad, 2 * atol, 2 * rtol, "da")
    assert_close(bk.grad, br.grad, 2 * atol, 2 * rtol, "db")


def test_swiglu_small_blocks_and_strides(triton_mode):
    # A 16-element block makes 27 programs with a ragged last one; inputs are transposed views.
    a = torch.randn(7, 61).t()
    b = torch.randn(61, 7)
    dc = torch.randn(61, 7)
    assert_close(swiglu_fwd_triton(a, b, block=16), swiglu_torch(a, b), 1e-5, 1e-5, "c")
    ar = a.clone().requires_grad_()
    br = b.clone().requires_grad_()
    swiglu_torch(ar, br).backward(dc)
    da, db = swiglu_bwd_triton(dc, a, b, block=16)
    assert_close(da, ar.grad, 1e-5, 1e-5, "da")
    assert_close(db, br.grad, 1e-5, 1e-5, "db")


def test_swiglu_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        swiglu(torch.randn(2, 8), torch.randn(2, 7))
