"""Fused GroupNorm + SiLU: Triton (interpreter) against ``F.silu(F.group_norm(...))``, forward."""

import importlib

import pytest
import torch

from anygen.kernels import force_kernels, group_norm_silu, group_norm_silu_torch
from anygen.kernels.group_norm_silu import group_norm_silu_triton

from kernel_checks import assert_close

# (x shape, groups): 4-D UNet/VAE activations, a 5-D video activation, 3-D, a 1x1 map, odd spatial sizes.
SHAPES = [
    ((1, 8, 1, 1), 4),
    ((2, 32, 7, 9), 8),
    ((2, 64, 8, 8), 32),
    ((5, 12, 3, 3), 3),
    ((1, 6, 5, 7, 3), 2),
    ((3, 4, 123), 1),
    ((2, 40, 13, 11), 4),
]
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.bfloat16, 2e-2, 2e-2)]


@pytest.mark.parametrize("shape, groups", SHAPES, ids=str)
@pytest.mark.parametrize("dtype, atol, rtol", DTYPES, ids=["fp32", "bf16"])
@torch.no_grad()
def test_group_norm_silu_forward(triton_mode, shape, groups, dtype, atol, rtol):
    # A large offset checks the variance is computed without E[x^2] - E[x]^2 cancellation.
    x = (torch.randn(shape) * 3 + 20).to(dtype)
    w = torch.randn(shape[1], dtype=dtype)
    b = torch.randn(shape[1], dtype=dtype)
    assert_close(group_norm_silu(x, groups, w, b, eps=1e-5), group_norm_silu_torch(x, groups, w, b, 1e-5), atol, rtol)


# (groups per program, elements per program): several chunks per group with a ragged last chunk, and a
# ragged last tile of groups (6 groups in tiles of 4).
@pytest.mark.parametrize("tile", [(1, 16), (4, 32), (2, 64)], ids=str)
@torch.no_grad()
def test_group_norm_silu_small_tiles(tile):
    x = torch.randn(2, 6, 5, 7) * 2 + 1
    w, b = torch.randn(6), torch.randn(6)
    out = group_norm_silu_triton(x, 3, w, b, 1e-5, tile=tile)
    assert_close(out, group_norm_silu_torch(x, 3, w, b, 1e-5), 1e-5, 1e-5)


@torch.no_grad()
def test_group_norm_silu_no_affine_and_channels_last(triton_mode):
    x = torch.randn(2, 16, 5, 6).to(memory_format=torch.channels_last)
    assert not x.is_contiguous()
    assert_close(group_norm_silu(x, 4), group_norm_silu_torch(x, 4), 1e-5, 1e-5)


def test_group_norm_silu_falls_back_when_gradients_are_needed(monkeypatch):
    module = importlib.import_module("anygen.kernels.group_norm_silu")
    monkeypatch.setattr(module, "group_norm_silu_triton", lambda *a, **k: pytest.fail("no backward in Triton"))
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    with force_kernels("triton"):
        group_norm_silu(x, 4).sum().backward()
    assert x.grad is not None


def test_group_norm_silu_rejects_bad_groups():
    with pytest.raises(ValueError, match="num_groups"):
        group_norm_silu(torch.randn(1, 6, 2, 2), 4)
