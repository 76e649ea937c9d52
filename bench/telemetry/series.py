"""The sampled series: integration by the trapezoid rule, and downsampling for the result."""

from __future__ import annotations

from array import array
from itertools import pairwise
from typing import Any


def trapezoid(t: array, y: array) -> float | None:
    """Integral of y over t by the trapezoid rule, skipping NaN points; None with fewer
    than two finite points."""
    total, n, prev_t, prev_y = 0.0, 0, 0.0, 0.0
    for ti, yi in zip(t, y, strict=True):
        if yi != yi:  # NaN: not read at this tick
            continue
        if n:
            total += (ti - prev_t) * (yi + prev_y) / 2
        n, prev_t, prev_y = n + 1, ti, yi
    return total if n >= 2 else None


def downsample(t: array, cols: dict[str, tuple[array, str]], max_points: int) -> dict[str, list[Any]]:
    """Bucket the series into at most ``max_points`` points: time is the bucket's mean,
    each column is aggregated with its rule ("max" keeps memory peaks, "mean"), NaN
    values are skipped and an all-NaN bucket becomes None."""
    n = len(t)
    buckets = max(1, min(n, max_points))
    bounds = [n * i // buckets for i in range(buckets + 1)]
    out: dict[str, list[Any]] = {"t": []}
    for name in cols:
        out[name] = []
    for lo, hi in pairwise(bounds):
        out["t"].append(round(sum(t[lo:hi]) / (hi - lo), 4))
        for name, (col, rule) in cols.items():
            vals = [v for v in col[lo:hi] if v == v]
            if not vals:
                out[name].append(None)
            elif rule == "max":
                out[name].append(int(max(vals)))
            else:
                out[name].append(round(sum(vals) / len(vals), 3))
    return out
