"""What the CPU can do for low-precision inference, read from ``/proc/cpuinfo`` and torch.

x86 machines of the same name differ: one EPYC has AVX2 only, the next AVX-512 with VNNI. The
int8 kernels behind torch.compile need ``reduce_range=True`` without VNNI (the u8 x s8 product
saturates otherwise), so callers ask ``has_vnni()`` instead of assuming.
"""

from __future__ import annotations

import functools
import platform

# /proc/cpuinfo flag -> what it enables
FEATURES: dict[str, str] = {
    "avx2": "256-bit SIMD; fp32 GEMM, int8 without VNNI (u8 x s8 pairs, saturating)",
    "avx512f": "512-bit SIMD",
    "avx512_vnni": "int8 dot products (VPDPBUSD) on 512-bit vectors",
    "avx_vnni": "int8 dot products on 256-bit vectors (Alder Lake and later)",
    "avx512_bf16": "bf16 dot products (VDPBF16PS)",
    "amx_bf16": "AMX tiles for bf16 matmul",
    "amx_int8": "AMX tiles for int8 matmul",
    "avx512_fp16": "fp16 arithmetic on 512-bit vectors",
}


def _parse_flags(cpuinfo: str) -> frozenset[str]:
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):  # x86 / arm
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The first processor's flags; empty where /proc/cpuinfo is missing (macOS, Windows)."""
    try:
        with open(path, encoding="utf-8") as f:
            return _parse_flags(f.read())
    except OSError:
        return frozenset()


def torch_cpu_capability() -> str | None:
    """The vector ISA torch's CPU kernels dispatch to here ("AVX2", "AVX512", "DEFAULT" ...)."""
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def features(flags: frozenset[str] | None = None) -> dict[str, bool]:
    """Each of ``FEATURES`` -> present on this CPU."""
    flags = cpu_flags() if flags is None else flags
    return {name: name in flags for name in FEATURES}


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether int8 dot products are native (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    found = features(flags)
    return found["avx512_vnni"] or found["avx_vnni"] or found["amx_int8"]


def machine_info() -> dict:
    """CPU facts for a report: architecture, torch's dispatch ISA, each feature, and the int8 advice."""
    return {
        "cpu_arch": platform.machine(),
        "torch_cpu_capability": torch_cpu_capability(),
        "cpu_features": features(),
        "vnni": has_vnni(),
        "int8_reduce_range": not has_vnni(),
    }
