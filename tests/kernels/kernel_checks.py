"""Helpers shared by the kernel tests (tests/ has no __init__.py, so this is imported by name)."""

import importlib

import torch

OPS = ("attention", "cfg", "group_norm_silu", "rms_norm", "swiglu")


def launcher_calls() -> int:
    """Launcher calls so far: every launcher fetches its jitted kernels from its module's cached ``_kernels()``."""
    total = 0
    for op in OPS:
        info = importlib.import_module(f"anygen.kernels.{op}")._kernels.cache_info()
        total += info.hits + info.misses
    return total


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float, what: str = "") -> None:
    """``torch.testing.assert_close`` in float32 (so bf16 results compare with bf16-sized tolerances)."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}")
