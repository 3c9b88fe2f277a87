"""Classifier-free guidance combine: Triton (interpreter) against diffusers' arithmetic, forward."""

import math

import pytest
import torch

from anygen.kernels import cfg_combine, cfg_combine_torch
from anygen.kernels.cfg import cfg_combine_triton

from kernel_checks import assert_close

# Latents of image (B, C, H, W) and video (B, C, F, H, W) generators, a flat one and odd sizes.
SHAPES = [(1, 1), (2, 4, 8, 8), (3, 5, 7, 9), (1, 4, 3, 16, 16), (2, 1025), (4, 3, 1), (1, 8, 123)]
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.bfloat16, 2e-2, 2e-2)]


# The rescale needs a standard deviation: not for one-element samples.
CASES = [(shape, rescale) for shape in SHAPES for rescale in (0.0, 0.7) if not rescale or math.prod(shape[1:]) > 1]


@pytest.mark.parametrize("shape, rescale", CASES, ids=str)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES, ids=["fp32", "bf16"])
@torch.no_grad()
def test_cfg_combine_forward(triton_mode, shape, dtype, atol, rtol, rescale):
    uncond = torch.randn(shape, dtype=dtype)
    cond = (torch.randn(shape) * 1.5 + 0.3).to(dtype)
    out = cfg_combine(uncond, cond, 7.5, rescale)
    ref = cfg_combine_torch(uncond, cond, 7.5, rescale)
    # bf16: the reference rounds after each of its ops, on values up to ~7.5 * |cond - uncond| ~ 40.
    assert_close(out, ref, atol * (8 if dtype == torch.bfloat16 else 1), rtol)


@pytest.mark.parametrize("block", [16, 64])
@torch.no_grad()
def test_cfg_combine_multi_chunk_rescale_and_strides(block):
    uncond = torch.randn(3, 5, 7, 9).transpose(2, 3)  # non-contiguous
    cond = torch.randn(3, 5, 9, 7) + 100.0  # large mean: the std must not cancel
    assert not uncond.is_contiguous()
    out = cfg_combine_triton(uncond, cond, 5.0, 0.5, block=block)
    assert_close(out, cfg_combine_torch(uncond, cond, 5.0, 0.5), 1e-4, 1e-5)


def test_cfg_combine_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        cfg_combine(torch.randn(2, 4), torch.randn(2, 5), 7.5)
    with pytest.raises(ValueError, match="guidance_rescale"):
        cfg_combine(torch.randn(2, 4), torch.randn(2, 4), 7.5, 1.5)
