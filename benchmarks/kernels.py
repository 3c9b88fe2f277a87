"""Triton kernels against PyTorch eager and torch.compile, on the shapes they meet in real models.

Usage:
    python benchmarks/kernels.py [--ops group_norm_silu,attention,rms_norm,swiglu,cfg_combine]
                                 [--dtype bf16] [--reps 100] [--bandwidth-gbps B] [--peak-tflops F]

On CUDA, for every op and shape it times three implementations of the same math:

    triton     anygen.kernels' launcher
    eager      the PyTorch reference (<op>_torch), which is what diffusers / transformers run
    compiled   torch.compile(<op>_torch)

as the median of --reps runs, each timed alone with CUDA events after flushing the L2 cache (so every run
reads from HBM, as it does inside a model), and prints beside each the achieved GB/s (memory-bound ops) or
TFLOP/s (attention) and the roofline floor: bytes moved / peak bandwidth, FLOPs / peak FLOP/s, using the
byte and FLOP counts written in each kernel's docstring. The peaks are measured on the spot (a 1 GiB
device-to-device copy; a bf16 8192^3 matmul) unless given.

Without CUDA it says so, runs the Triton interpreter correctness check on small shapes instead, and exits
0 when every kernel matches its reference (1 otherwise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

OPS = ("group_norm_silu", "attention", "rms_norm", "swiglu", "cfg_combine")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass
class Case:
    """One benchmark row: the same math three ways, and its cost model."""

    op: str
    shape: str
    triton: Callable[[], object]
    eager: Callable[[], object]
    compiled: Callable[[], object]
    bytes: float  # minimum HBM traffic of one call (the fused kernel's), from the kernel's docstring
    flops: float = 0.0  # counted FLOPs; > 0 makes the row compute-bound (reported in TFLOP/s)


def _compile(fn: Callable) -> Callable:
    return torch.compile(fn, dynamic=False)


def cases(ops: list[str], dtype: torch.dtype, device: str = "cuda") -> list[Case]:
    """The benchmark rows: SD-1.5-sized UNet/VAE tensors, a 7B-sized backbone (hidden 4096, MLP 11008)."""
    from anygen.kernels import attention_torch, cfg_combine_torch, group_norm_silu_torch, rms_norm_torch, swiglu_torch
    from anygen.kernels.attention import attention_triton
    from anygen.kernels.cfg import cfg_combine_triton
    from anygen.kernels.group_norm_silu import group_norm_silu_triton
    from anygen.kernels.rms_norm import RMSNormFunction
    from anygen.kernels.swiglu import SwiGLUFunction

    dev, e = device, torch.finfo(dtype).bits // 8
    out: list[Case] = []

    if "group_norm_silu" in ops:
        gn_c = _compile(group_norm_silu_torch)
        # SD-1.5 UNet at 64x64 latents with CFG (batch 2), its four resolutions; VAE decoder at 512x512.
        for shape in [(2, 320, 64, 64), (2, 640, 32, 32), (2, 1280, 16, 16), (2, 1280, 8, 8),
                      (1, 512, 64, 64), (1, 256, 256, 256), (1, 128, 512, 512)]:
            x = torch.randn(shape, device=dev, dtype=dtype)
            w, b = torch.randn(shape[1], device=dev, dtype=dtype), torch.randn(shape[1], device=dev, dtype=dtype)
            out.append(Case(
                "group_norm_silu", str(shape),
                lambda x=x, w=w, b=b: group_norm_silu_triton(x, 32, w, b, 1e-5),
                lambda x=x, w=w, b=b: group_norm_silu_torch(x, 32, w, b, 1e-5),
                lambda x=x, w=w, b=b: gn_c(x, 32, w, b, 1e-5),
                bytes=3 * x.numel() * e + 2 * shape[1] * e,
            ))

    if "attention" in ops:
        attn_c = _compile(attention_torch)
        # (B, H, Lq, Lk, D): SD-1.5 self-attention at its 4 resolutions (head dims 40/80/160/160) and
        # cross-attention against 77 text tokens.
        for b, h, lq, lk, d in [(2, 8, 4096, 4096, 40), (2, 8, 1024, 1024, 80), (2, 8, 256, 256, 160),
                                (2, 8, 64, 64, 160), (2, 8, 4096, 77, 40), (2, 8, 1024, 77, 80)]:
            q = torch.randn(b, h, lq, d, device=dev, dtype=dtype)
            k = torch.randn(b, h, lk, d, device=dev, dtype=dtype)
            v = torch.randn(b, h, lk, d, device=dev, dtype=dtype)
            out.append(Case(
                "attention", f"B{b} H{h} Lq{lq} Lk{lk} D{d}",
                lambda q=q, k=k, v=v: attention_triton(q, k, v),
                lambda q=q, k=k, v=v: attention_torch(q, k, v),
                lambda q=q, k=k, v=v: attn_c(q, k, v),
                bytes=e * b * h * (2 * lq * d + 2 * lk * d),  # compulsory q, k, v, o (compute-bound anyway)
                flops=4.0 * b * h * lq * lk * d,
            ))

    if "rms_norm" in ops:
        def fwd_bwd(fn):
            def run(x, w, dy):
                return torch.autograd.grad(fn(x, w, 1e-6), (x, w), dy)
            return run

        rms_c = _compile(rms_norm_torch)
        rms_fn = lambda x, w, eps: RMSNormFunction.apply(x, w, eps)  # noqa: E731
        for m in (1, 4096, 16384):  # one decode token, a 4k prefill, a 4 x 4k training batch
            n = 4096
            x = torch.randn(m, n, device=dev, dtype=dtype, requires_grad=True)
            w = torch.rand(n, device=dev, dtype=dtype).add_(0.5).requires_grad_()
            dy = torch.randn(m, n, device=dev, dtype=dtype)
            xd, wd = x.detach(), w.detach()  # inference: no autograd bookkeeping in the forward rows
            out.append(Case(
                "rms_norm fwd", f"({m}, {n})",
                lambda x=xd, w=wd: rms_fn(x, w, 1e-6), lambda x=xd, w=wd: rms_norm_torch(x, w, 1e-6),
                lambda x=xd, w=wd: rms_c(x, w, 1e-6),
                bytes=2 * m * n * e + n * e + 4 * m,
            ))
            sms = torch.cuda.get_device_properties(0).multi_processor_count if dev == "cuda" else 4
            out.append(Case(
                "rms_norm fwd+bwd", f"({m}, {n})",
                lambda x=x, w=w, dy=dy: fwd_bwd(rms_fn)(x, w, dy),
                lambda x=x, w=w, dy=dy: fwd_bwd(rms_norm_torch)(x, w, dy),
                lambda x=x, w=w, dy=dy: fwd_bwd(rms_c)(x, w, dy),
                bytes=(2 * m * n * e + n * e + 4 * m) + (3 * m * n * e + n * e + 4 * m + 4 * sms * n),
            ))

    if "swiglu" in ops:
        sw_c = _compile(swiglu_torch)
        for m in (1, 4096, 16384):
            n = 11008  # Llama-2-7B intermediate size
            a = torch.randn(m, n, device=dev, dtype=dtype, requires_grad=True)
            b = torch.randn(m, n, device=dev, dtype=dtype, requires_grad=True)
            dc = torch.randn(m, n, device=dev, dtype=dtype)
            ad, bd = a.detach(), b.detach()
            out.append(Case(
                "swiglu fwd", f"({m}, {n})",
                lambda a=ad, b=bd: SwiGLUFunction.apply(a, b), lambda a=ad, b=bd: swiglu_torch(a, b),
                lambda a=ad, b=bd: sw_c(a, b),
                bytes=3 * m * n * e,
            ))
            out.append(Case(
                "swiglu fwd+bwd", f"({m}, {n})",
                lambda a=a, b=b, dc=dc: torch.autograd.grad(SwiGLUFunction.apply(a, b), (a, b), dc),
                lambda a=a, b=b, dc=dc: torch.autograd.grad(swiglu_torch(a, b), (a, b), dc),
                lambda a=a, b=b, dc=dc: torch.autograd.grad(sw_c(a, b), (a, b), dc),
                bytes=3 * m * n * e + 5 * m * n * e,
            ))

    if "cfg_combine" in ops:
        cfg_c = _compile(cfg_combine_torch)
        # SD-1.5 latents (one image), SDXL latents, an AnimateDiff 16-frame clip.
        for shape in [(1, 4, 64, 64), (1, 4, 128, 128), (1, 4, 16, 64, 64)]:
            u = torch.randn(shape, device=dev, dtype=dtype)
            c = torch.randn(shape, device=dev, dtype=dtype)
            for phi in (0.0, 0.7):
                out.append(Case(
                    "cfg_combine" + (" rescaled" if phi else ""), str(shape),
                    lambda u=u, c=c, phi=phi: cfg_combine_triton(u, c, 7.5, phi),
                    lambda u=u, c=c, phi=phi: cfg_combine_torch(u, c, 7.5, phi),
                    lambda u=u, c=c, phi=phi: cfg_c(u, c, 7.5, phi),
                    bytes=(5 if phi else 3) * u.numel() * e,
                ))
    return out


def cuda_time_ms(fn: Callable[[], object], reps: int, flush: torch.Tensor) -> float:
    """Median milliseconds of ``fn`` over ``reps`` runs, each between its own pair of CUDA events."""
    for _ in range(3):  # warm-up: JIT compilation, autotuning, torch.compile
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for start, end in zip(starts, ends):
        flush.zero_()  # evict the L2 (40-60 MB on A100/H100) so inputs come from HBM
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def measure_peaks(dtype: torch.dtype) -> tuple[float, float]:
    """Achievable HBM bandwidth (GB/s, from a 1 GiB copy) and matmul throughput (TFLOP/s, 8192^3)."""
    flush = torch.empty(0, device="cuda")
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = cuda_time_ms(lambda: dst.copy_(src), 20, flush)
    bandwidth = 2 * src.numel() / (ms * 1e-3) / 1e9  # read + write
    del src, dst
    a = torch.randn(8192, 8192, device="cuda", dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    ms = cuda_time_ms(lambda: a @ a, 20, flush)
    tflops = 2 * 8192**3 / (ms * 1e-3) / 1e12
    return bandwidth, tflops


def run_cuda(args: argparse.Namespace) -> int:
    dtype = DTYPES[args.dtype]
    bandwidth, tflops = measure_peaks(dtype)
    bandwidth = args.bandwidth_gbps or bandwidth
    tflops = args.peak_tflops or tflops
    print(f"# {torch.cuda.get_device_name()}  dtype {args.dtype}  peak {bandwidth:.0f} GB/s, {tflops:.0f} TFLOP/s "
          f"({'given' if args.bandwidth_gbps else 'measured'} / {'given' if args.peak_tflops else 'measured'})")
    ops = ",".join(args.ops)
    print(f"# reproduce: python benchmarks/kernels.py --dtype {args.dtype} --reps {args.reps} --ops {ops}")
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    header = f"{'op':22s} {'shape':32s} {'floor ms':>9s} | " + " | ".join(
        f"{name:>8s} ms {'rate':>12s} {'%roof':>5s}" for name in ("triton", "eager", "compiled")
    )
    print(header)
    print("-" * len(header))
    for case in cases(args.ops, dtype):
        floor = max(case.bytes / (bandwidth * 1e9), case.flops / (tflops * 1e12)) * 1e3
        cells = []
        for name in ("triton", "eager", "compiled"):
            try:
                ms = cuda_time_ms(getattr(case, name), args.reps, flush)
            except Exception as e:  # e.g. torch.compile unavailable: report, keep going
                cells.append(f"{'error':>11s} {type(e).__name__[:12]:>12s} {'':>5s}")
                continue
            if case.flops:
                rate = f"{case.flops / (ms * 1e-3) / 1e12:7.1f} TF/s"
            else:
                rate = f"{case.bytes / (ms * 1e-3) / 1e9:7.0f} GB/s"
            cells.append(f"{ms:11.4f} {rate:>12s} {100 * floor / ms:5.0f}")
        print(f"{case.op:22s} {case.shape:32s} {floor:9.4f} | " + " | ".join(cells))
    return 0


def run_interpreter_check() -> int:
    """Small shapes, every kernel through Triton's interpreter against its reference (~10 s on 2 cores)."""
    from anygen.kernels import (
        attention, attention_torch, cfg_combine, cfg_combine_torch, force_kernels, group_norm_silu,
        group_norm_silu_torch, rms_norm, rms_norm_torch, swiglu, swiglu_torch,
    )

    torch.manual_seed(0)
    x4, w8, b8 = torch.randn(2, 8, 5, 7), torch.randn(8), torch.randn(8)
    q, k, v = torch.randn(1, 2, 33, 40), torch.randn(1, 2, 77, 40), torch.randn(1, 2, 77, 40)
    x2, w2, y2 = torch.randn(7, 123), torch.rand(123) + 0.5, torch.randn(7, 123)
    checks = [
        ("group_norm_silu", lambda: group_norm_silu(x4, 4, w8, b8), lambda: group_norm_silu_torch(x4, 4, w8, b8)),
        ("attention", lambda: attention(q, k, v), lambda: attention_torch(q, k, v)),
        ("rms_norm", lambda: rms_norm(x2, w2), lambda: rms_norm_torch(x2, w2)),
        ("swiglu", lambda: swiglu(x2, y2), lambda: swiglu_torch(x2, y2)),
        ("cfg_combine", lambda: cfg_combine(x2, y2, 7.5, 0.7), lambda: cfg_combine_torch(x2, y2, 7.5, 0.7)),
    ]
    ok = True
    print(f"{'op':16s} {'max |triton - ref|':>18s}  result")
    for name, kernel, reference in checks:
        start = time.perf_counter()
        with torch.no_grad(), force_kernels("triton"):
            got = kernel()
        want = reference()
        err = (got - want).abs().max().item()
        good = torch.allclose(got, want, atol=1e-4, rtol=1e-4)
        ok &= good
        print(f"{name:16s} {err:18.2e}  {'ok' if good else 'MISMATCH'}  ({time.perf_counter() - start:.1f} s)")
    print("all kernels match their references" if ok else "some kernels DO NOT match their references")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ops", default=",".join(OPS), type=lambda s: s.split(","), help=f"comma-separated subset of {OPS}")
    p.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--bandwidth-gbps", type=float, default=None, help="peak HBM bandwidth (default: measured)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak matmul TFLOP/s (default: measured)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.ops) - set(OPS))
    if unknown:
        p.error(f"--ops: unknown {unknown}; choose from {OPS}")
    if torch.cuda.is_available():
        return run_cuda(args)
    print("benchmarks/kernels.py needs a CUDA GPU to time the kernels, and found none.")
    print("Running the Triton interpreter correctness check on small CPU shapes instead.\n")
    # Before anything imports triton: the interpreter is chosen when triton.language is first decorated.
    if "triton" in sys.modules and not os.environ.get("TRITON_INTERPRET"):
        print("triton was imported before TRITON_INTERPRET could be set; rerun as a script")
        return 1
    os.environ["TRITON_INTERPRET"] = "1"
    return run_interpreter_check()


if __name__ == "__main__":
    sys.exit(main())
