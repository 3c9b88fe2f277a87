"""Dispatch: which implementation runs, the ANYGEN_KERNELS switch, and the clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anygen.errors import AnyGenInputError
from anygen.kernels import (
    KernelUnavailableError,
    attention,
    attention_torch,
    cfg_combine,
    cfg_combine_torch,
    force_kernels,
    group_norm_silu,
    group_norm_silu_torch,
    kernels_mode,
    kernels_option,
    rms_norm,
    rms_norm_torch,
    swiglu,
    swiglu_torch,
)
from anygen.kernels.dispatch import use_triton
from kernel_checks import launcher_calls

ROOT = Path(__file__).resolve().parents[2]


def test_mode_from_env_and_override(monkeypatch):
    monkeypatch.delenv("ANYGEN_KERNELS", raising=False)
    assert kernels_mode() == "auto"
    monkeypatch.setenv("ANYGEN_KERNELS", "Torch")
    assert kernels_mode() == "torch"
    with force_kernels("triton"):
        assert kernels_mode() == "triton"
    assert kernels_mode() == "torch"
    monkeypatch.setenv("ANYGEN_KERNELS", "cuda")
    with pytest.raises(AnyGenInputError, match="ANYGEN_KERNELS"):
        kernels_mode()
    with pytest.raises(AnyGenInputError, match="mode"):
        force_kernels("fast").__enter__()


def test_cpu_tensors_get_the_reference_unless_triton_is_forced():
    x = torch.randn(2, 8)
    with force_kernels("auto"):
        assert not use_triton("op", x)  # CPU: never the interpreter by accident
    with force_kernels("torch"):
        assert not use_triton("op", x)
    with force_kernels("triton"):
        assert use_triton("op", x)  # TRITON_INTERPRET=1 (conftest)


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with force_kernels("triton"), pytest.raises(KernelUnavailableError, match="TRITON_INTERPRET=1"):
        rms_norm(torch.randn(2, 8), torch.ones(8))


@torch.no_grad()
def test_torch_and_auto_modes_run_exactly_the_references():
    x4, w, b = torch.randn(2, 8, 5, 5), torch.randn(8), torch.randn(8)
    q, k = torch.randn(1, 2, 7, 16), torch.randn(1, 2, 9, 16)
    x2, y2 = torch.randn(3, 24), torch.randn(3, 24)
    for mode in ("torch", "auto"):
        before = launcher_calls()
        with force_kernels(mode):
            assert torch.equal(group_norm_silu(x4, 4, w, b), group_norm_silu_torch(x4, 4, w, b))
            assert torch.equal(attention(q, k, k), attention_torch(q, k, k))
            assert torch.equal(rms_norm(x2, y2[0]), rms_norm_torch(x2, y2[0]))
            assert torch.equal(swiglu(x2, y2), swiglu_torch(x2, y2))
            assert torch.equal(cfg_combine(x2, y2, 5.0, 0.5), cfg_combine_torch(x2, y2, 5.0, 0.5))
        assert launcher_calls() == before


def test_kernels_option():
    assert kernels_option(None) is None and kernels_option(False) is None and kernels_option("off") is None
    assert kernels_option(True) == "auto" and kernels_option("Triton") == "triton"
    with pytest.raises(AnyGenInputError, match="kernels"):
        kernels_option("on")


def test_cli_kernels_flag(monkeypatch):
    from anygen import cli

    monkeypatch.setenv("ANYGEN_KERNELS", "auto")  # so monkeypatch restores the variable that main() sets
    monkeypatch.delenv("ANYGEN_KERNELS")
    seen = []
    monkeypatch.setattr(cli, "cmd_generate", lambda args: seen.append(args.kernels))
    assert cli.main(["generate", "draw a circle", "--kernels", "off"]) == 0
    assert "ANYGEN_KERNELS" not in os.environ
    assert cli.main(["generate", "draw a circle", "--kernels", "torch"]) == 0
    assert seen == ["off", "torch"] and os.environ["ANYGEN_KERNELS"] == "torch"
    with pytest.raises(SystemExit):
        cli.main(["generate", "draw a circle", "--kernels", "fast"])


SUBPROCESS_CHECK = r"""
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import torch
import anygen.kernels as K
assert "triton" not in sys.modules, "import anygen.kernels imported triton"

# Without Triton: auto falls back to the reference, triton says why it cannot run.
sys.modules["triton"] = None
from anygen.kernels import dispatch
x = torch.randn(2, 8)
assert torch.equal(K.rms_norm(x, torch.ones(8)), K.rms_norm_torch(x, torch.ones(8)))
os.environ["ANYGEN_KERNELS"] = "triton"
try:
    K.rms_norm(x, torch.ones(8))
except K.KernelUnavailableError as e:
    assert "does not import" in str(e), e
else:
    raise SystemExit("no error without triton")

# TRITON_INTERPRET set only after triton's first import: a clear error, not an obscure interpreter failure.
del sys.modules["triton"]
dispatch.triton_available.cache_clear()
import triton
os.environ["TRITON_INTERPRET"] = "1"
try:
    K.rms_norm(x, torch.ones(8))
except K.KernelUnavailableError as e:
    assert "before anything imports triton" in str(e), e
else:
    raise SystemExit("no error for a late TRITON_INTERPRET")
print("ok")
"""


def test_import_is_lazy_and_misconfiguration_is_reported():
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "ANYGEN_KERNELS")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", SUBPROCESS_CHECK], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
