"""Peak matmul throughput of a device and dtype: the denominator of MFU."""

from __future__ import annotations

import time

import torch

from .base import check_choice

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_tflops(
    device: torch.device,
    dtype: torch.dtype,
    min_time_s: float = 0.05,
    max_n: int | None = None,
    min_n: int | None = None,
) -> float:
    """Best achieved TFLOP/s of a square matmul over sizes from 256 up.

    Sizes double until one matmul takes ``min_time_s`` (and the size is at least ``min_n``:
    some kernels, fp16 on CPUs among them, are far slower at small sizes), or ``max_n``;
    the best of 5 repetitions at every size from ``min_n`` counts. The second operand is
    transposed, as ``nn.Linear`` multiplies (``x @ W.t()``): on some CPUs fp16 takes a far slower
    kernel for the other layout.
    """
    check_choice("dtype", dtype, tuple(DTYPES.values()))
    max_n = max_n or (8192 if device.type == "cuda" else 4096)
    min_n = min(min_n or (4096 if device.type == "cuda" else 1024), max_n)
    best_tflops, n = 0.0, 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b.t(), out=out)  # warm-up: kernel selection, allocation
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b.t(), out=out)
        synchronize(device)
        once = time.perf_counter() - t0
        if n >= min_n:
            best = once
            for _ in range(5):
                t0 = time.perf_counter()
                torch.mm(a, b.t(), out=out)
                synchronize(device)
                best = min(best, time.perf_counter() - t0)
            best_tflops = max(best_tflops, 2 * n**3 / best / 1e12)
        if (once >= min_time_s and n >= min_n) or n >= max_n:
            return best_tflops
        n *= 2
