"""Kernel tests: every Triton kernel runs on CPU through Triton's interpreter against its PyTorch reference."""

import os

# Before anything imports triton (tests/conftest.py already did this for whole-suite runs).
os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

from anygen.kernels import force_kernels  # noqa: E402
from kernel_checks import launcher_calls  # noqa: E402


@pytest.fixture
def triton_mode():
    """Force the Triton path (the interpreter, on these CPU tensors) inside the test, and check it ran."""
    before = launcher_calls()
    with force_kernels("triton"):
        yield
    assert launcher_calls() > before, "the test never launched a Triton kernel: dispatch took the reference"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
