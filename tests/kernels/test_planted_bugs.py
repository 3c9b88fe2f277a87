"""The comparisons catch real kernel bugs: a copy of a kernel with one planted bug must fail its check.

Each case copies a kernel module's source into a temporary module of the same package, changes one line of
one kernel (a mask that is too strict, or masked lanes filled with the wrong value), and runs the copy's
launchers against the untouched reference. The unchanged copy ("control") must pass, so the mutant's
failure is the bug's doing, not the harness's.

Each bug corrupts values the kernel writes (rather than only leaving an output element unwritten, which a
recycled allocation could happen to hold correctly), and none reaches past a tensor: the interpreter
executes out-of-bounds accesses on real host memory.
"""

import importlib.util
import inspect
import itertools
import sys

import pytest
import torch

from anygen.kernels import attention_torch, cfg_combine_torch, group_norm_silu_torch, rms_norm_torch, swiglu_torch

# (op module, kernel function, original text, mutated text, what the bug is)
MUTATIONS = [
    ("rms_norm", "_rms_norm_fwd_kernel", "(cols[None, :] < n_cols)", "(cols[None, :] < n_cols - 1)",
     "forward column mask drops the last column"),
    ("rms_norm", "_rms_norm_bwd_kernel", "mask = (rows < n_rows)[:, None]", "mask = (rows < n_rows - 1)[:, None]",
     "backward row mask drops the last row of dx and dw"),
    ("swiglu", "_swiglu_fwd_kernel", "b = tl.load(B + offs, mask=mask", "b = tl.load(B + offs, mask=offs < n - 1",
     "forward load mask zeroes the last b"),
    ("swiglu", "_swiglu_bwd_kernel", "dc = tl.load(DC + offs, mask=mask",
     "dc = tl.load(DC + offs, mask=offs < (n // BLOCK) * BLOCK", "backward load mask zeroes dc in the ragged block"),
    ("group_norm_silu", "_group_norm_silu_stats_kernel", "d = tl.where(mask, x - mean[:, None], 0.0)",
     "d = x - mean[:, None]", "variance counts the padded lanes of a ragged chunk"),
    ("attention", "_attention_fwd_kernel", 's = tl.where(n_ok[None, :], s, float("-inf"))',
     "s = tl.where(n_ok[None, :], s, 0.0)", "padded keys get score 0 instead of -inf"),
    ("cfg", "_cfg_combine_stats_kernel", "dc = tl.where(mask, c - mean_c, 0.0)", "dc = c - mean_c",
     "rescale std counts the padded lanes of a ragged chunk"),
]


_copies = itertools.count()


def load_copy(op: str, kernel: str, old: str, new: str, tmp_path):
    """Import a copy of ``anygen.kernels.<op>`` with ``old`` replaced by ``new`` inside ``kernel`` only."""
    source = inspect.getsource(importlib.import_module(f"anygen.kernels.{op}"))
    start = source.index(f"def {kernel}(")
    end = source.find("\ndef ", start + 1)
    body = source[start:end]
    assert body.count(old) == 1, f"{old!r} must occur exactly once in {kernel}: update the mutation"
    mutated = source[:start] + body.replace(old, new) + source[end:]
    name = f"anygen.kernels._copy_{op}_{next(_copies)}"
    path = tmp_path / f"{name.rsplit('.', 1)[1]}.py"
    path.write_text(mutated)  # Triton reads kernel source from the file, so the copy must be a real file
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # relative imports resolve through the package anygen.kernels
    spec.loader.exec_module(module)
    return module


def check(op: str, module) -> None:
    """Run ``module``'s launchers on shapes with ragged edges and compare with the reference (raises on mismatch)."""
    close = dict(atol=1e-5, rtol=1e-5)
    if op == "rms_norm":
        x, w, dy = torch.randn(5, 37), torch.rand(37) + 0.5, torch.randn(5, 37)
        y, rstd = module.rms_norm_fwd_triton(x, w, 1e-6)
        dx, dw = module.rms_norm_bwd_triton(dy, x, w, rstd)
        xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
        yr = rms_norm_torch(xr, wr, 1e-6)
        yr.backward(dy)
        for got, want in ((y, yr), (dx, xr.grad), (dw, wr.grad)):
            torch.testing.assert_close(got, want.detach(), **close)
    elif op == "swiglu":
        a, b, dc = torch.randn(3, 700), torch.randn(3, 700), torch.randn(3, 700)  # 2100 = 2 x 1024 + 52
        ar, br = a.clone().requires_grad_(), b.clone().requires_grad_()
        cr = swiglu_torch(ar, br)
        cr.backward(dc)
        da, db = module.swiglu_bwd_triton(dc, a, b)
        for got, want in ((module.swiglu_fwd_triton(a, b), cr), (da, ar.grad), (db, br.grad)):
            torch.testing.assert_close(got, want.detach(), **close)
    elif op == "group_norm_silu":
        x, w, b = torch.randn(2, 6, 5, 7) + 3, torch.randn(6), torch.randn(6)  # groups of 70 in chunks of 32
        torch.testing.assert_close(module.group_norm_silu_triton(x, 3, w, b, 1e-5, tile=(2, 32)),
                                   group_norm_silu_torch(x, 3, w, b, 1e-5), **close)
    elif op == "attention":
        q, k, v = torch.randn(1, 2, 9, 16), torch.randn(1, 2, 40, 16), torch.randn(1, 2, 40, 16)  # 40 = 16 + 16 + 8
        torch.testing.assert_close(module.attention_triton(q, k, v, block_m=16, block_n=16),
                                   attention_torch(q, k, v), atol=2e-5, rtol=1e-4)
    elif op == "cfg":
        u, c = torch.randn(2, 3, 7, 7), torch.randn(2, 3, 7, 7) + 1  # samples of 147 in chunks of 64
        torch.testing.assert_close(module.cfg_combine_triton(u, c, 7.5, 0.7, block=64),
                                   cfg_combine_torch(u, c, 7.5, 0.7), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("op, kernel, old, new, bug", MUTATIONS, ids=[m[4] for m in MUTATIONS])
@torch.no_grad()
def test_planted_bug_is_caught(op, kernel, old, new, bug, tmp_path):
    with torch.enable_grad():
        check(op, load_copy(op, kernel, old, old, tmp_path))  # control: the unmodified copy passes
        mutant = load_copy(op, kernel, old, new, tmp_path)
        with pytest.raises(AssertionError):
            check(op, mutant)
