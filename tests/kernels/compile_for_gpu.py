"""Compile every kernel for NVIDIA GPUs (sm_80, sm_90) on a machine without one.

The interpreter accepts code the compiler rejects (tl.dot tiles under 16, non-constexpr shapes, bad
casts), so the kernel tests also build each kernel into a cubin. This runs the real launchers on CPU
tensors with each kernel replaced by a recorder that compiles the launch (same constexprs, warps and
stages) instead of running it. Run in a process without TRITON_INTERPRET (tests/kernels/test_compile.py).

    python tests/kernels/compile_for_gpu.py
"""

import importlib
import os
import sys
import time

import torch

assert not os.environ.get("TRITON_INTERPRET"), "compiling needs triton imported without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

TYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


class CompileInsteadOfLaunch:
    """Stands in for a jitted kernel: ``kernel[grid](*args)`` compiles for each target and records the result."""

    def __init__(self, fn, targets, log):
        self.jit, self.targets, self.log = JITFunction(fn), targets, log

    def __getitem__(self, grid):
        def launch(*args, num_warps=4, num_stages=3, **kwargs):
            values = {**dict(zip(self.jit.arg_names, args)), **kwargs}
            signature, constexprs = {}, {}
            for p in self.jit.params:
                v = values[p.name]
                if p.is_constexpr:
                    signature[p.name], constexprs[p.name] = "constexpr", v
                elif isinstance(v, torch.Tensor):
                    signature[p.name] = "*" + TYPES[v.dtype]
                elif isinstance(v, int):
                    signature[p.name] = "i64" if abs(v) >= 2**31 else "i32"
                elif isinstance(v, float):
                    signature[p.name] = "fp32"
                else:
                    raise TypeError(f"{self.jit.__name__}: cannot type argument {p.name}={v!r}")
            for cap in self.targets:
                src = triton.compiler.ASTSource(fn=self.jit, signature=signature, constexprs=constexprs)
                start = time.perf_counter()
                kernel = triton.compile(src, target=GPUTarget("cuda", cap, 32),
                                        options=dict(num_warps=num_warps, num_stages=num_stages))
                dtype = next((signature[n] for n in signature if signature[n].startswith("*")), "")
                self.log.append((self.jit.__name__, cap, dtype, kernel.asm["ptx"], time.perf_counter() - start))

        return launch


def main() -> list:
    log = []

    def intercept(op, targets=(80,)):
        module = importlib.import_module(f"anygen.kernels.{op}")

        def jit_kernels(module_globals, *fns):
            module_globals["tl"] = triton.language  # as anygen.kernels.dispatch.jit_kernels does
            return [CompileInsteadOfLaunch(fn, targets, log) for fn in fns]

        module.jit_kernels = jit_kernels
        module._kernels.cache_clear()
        return module

    bf16, fp32 = torch.bfloat16, torch.float32
    m = intercept("rms_norm")
    for x in (torch.randn(4, 4096, dtype=bf16), torch.randn(3, 123, dtype=fp32)):
        w = torch.ones(x.shape[-1], dtype=x.dtype)
        m.rms_norm_fwd_triton(x, w, 1e-6)
        m.rms_norm_bwd_triton(x, x, w, torch.ones(x.shape[0]))
    m = intercept("swiglu")
    x = torch.randn(4, 11008, dtype=bf16)
    m.swiglu_fwd_triton(x, x)
    m.swiglu_bwd_triton(x, x, x)
    m = intercept("group_norm_silu")
    for shape in ((2, 320, 64, 64), (2, 32, 8, 8)):  # SD-1.5's first block; anygen-tiny-sized (packed groups)
        m.group_norm_silu_triton(torch.randn(shape, dtype=bf16), 8, torch.ones(shape[1], dtype=bf16),
                                 torch.zeros(shape[1], dtype=bf16))
    m = intercept("attention", targets=(80, 90))  # sm_90 lowers tl.dot to wgmma: a different code path
    q = torch.randn(2, 8, 100, 40, dtype=bf16)  # SD-1.5 cross-attention: head dim 40, 77 text tokens, a mask
    m.attention_triton(q, q[:, :, :77], q[:, :, :77], torch.zeros(2, 1, 1, 77, dtype=bf16))
    m = intercept("attention")
    q = torch.randn(2, 8, 100, 160, dtype=bf16)  # SD-1.5's widest heads: 256-wide tiles, 8 warps
    m.attention_triton(q, q, q)
    q = torch.randn(2, 8, 100, 64, dtype=fp32)  # float32 at full precision (no TF32)
    m.attention_triton(q, q, q)
    m = intercept("cfg")
    x = torch.randn(2, 4, 64, 64, dtype=bf16)
    m.cfg_combine_triton(x, x, 7.5, 0.0)
    m.cfg_combine_triton(x, x, 7.5, 0.7)
    return log


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))
    log = main()
    for name, cap, dtype, ptx, seconds in log:
        print(f"sm_{cap} {name:30s} {dtype:5s} ptx {len(ptx):7d} chars  mma {'mma' in ptx!s:5s}  {seconds:5.1f} s")
    # The flash loop must reach the tensor cores: bf16 attention without mma would be ~10x slower.
    bf16_attention = [ptx for name, _, dtype, ptx, _ in log if name == "_attention_fwd_kernel" and dtype == "*bf16"]
    assert bf16_attention and all("mma" in ptx for ptx in bf16_attention), "bf16 attention misses the tensor cores"
    print(f"compiled {len(log)} kernels")
