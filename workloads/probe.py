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
    device: torch.device, dtype: torch.dtype, min_time_s: float = 0.05, max_n: int | None = None
) -> float:
    """Best achieved TFLOP/s of a square matmul, growing the size until one takes min_time_s.

    Sizes double from 256; the fastest of 5 repetitions at the final size counts. Slow dtypes
    (fp16 on most CPUs) stop at a small size, so the probe stays short everywhere.
    """
    check_choice("dtype", dtype, tuple(DTYPES.values()))
    max_n = max_n or (8192 if device.type == "cuda" else 4096)
    n = 256
    while True:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up: kernel selection, allocation
        synchronize(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        once = time.perf_counter() - t0
        if once >= min_time_s or n >= max_n:
            break
        n *= 2
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e12
