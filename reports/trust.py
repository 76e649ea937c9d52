"""How far a figure can be trusted, as every report shows it: intervals, unstable and
contended results.

The bench gives every timed result a 95% confidence interval of its median step time
(``step_time_ci_s``), says whether that interval is tight (``stable``: its half-width within
``stable_threshold`` of the median) and whether other work competed for the machine while the
case was timed (``contention.contended``); see ``docs/schema.md``. Results without these keys
(older files) are shown as before: no interval, no mark.

- :func:`value_interval`: a timing metric's 95% interval. The step time's is
  ``step_time_ci_s``; a metric proportional to the step time (``Metric.timing == "time"``)
  scales it, one inversely proportional (``"rate"``: throughput, TFLOP/s, MFU) inverts it,
  ``value * median / [high, low]``.
- :func:`ratio_interval`: the interval of ``value / reference`` as the ratio of the bounds,
  ``[low_a / high_b, high_a / low_b]``. Conservative: it holds whenever both intervals hold (at
  least 90% for two 95% intervals, by the union bound, without assuming them independent).
- :func:`format_spread`: that interval compactly, ``±6%``: the larger of its two distances
  from the ratio, in % of the ratio, rounded up (so the printed range covers the interval).
- Marks: a timing cell of an unstable result ends in ``~``; a cell measured over the timed
  window (timing, power, energy) of a contended result ends in ``contended`` (compare, check,
  before/after). The tables say ``contended`` once per result, in a ``timing`` row that also
  gives each result's step-time interval (:func:`timing_cell`): four timing rows of three
  variants each saying it would not fit a terminal. :func:`mark_notes` explains the marks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from reports.load import Result
from reports.metrics import Metric, format_times
from reports.stats import ci_half_width_rel

UNSTABLE = "~"
CONTENDED = "contended"
DEFAULT_STABLE_THRESHOLD = 0.05
MAX_SPREAD_PCT = 999
INTERVAL_NOTE = (
    "±: the ratio's 95% interval from the two step-time intervals (ratio of the bounds), as the larger"
    " distance from the ratio in %"
)


def step_interval(result: Result) -> tuple[float, float] | None:
    """``step_time_ci_s`` of a result that ran, or None when it has none (or a malformed one)."""
    if result.status != "ok":
        return None
    ci = result.extra_info.get("step_time_ci_s")
    if not isinstance(ci, list | tuple) or len(ci) != 2:
        return None
    low, high = ci
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in ci):
        return None
    return (float(low), float(high)) if 0 < low <= high else None


def value_interval(metric: Metric, result: Result) -> tuple[float, float] | None:
    """The 95% interval of a timing metric's value, or None (not a timing metric, no interval)."""
    value, median, ci = result.value(metric.key), result.value("step_time_s"), step_interval(result)
    if metric.timing is None or value is None or not median or ci is None:
        return None
    low, high = ci
    if metric.timing == "time":
        return _finite(value * low / median, value * high / median)
    return _finite(value * median / high, value * median / low)


def _finite(low: float, high: float) -> tuple[float, float] | None:
    """``(low, high)`` when both are finite and ordered (extreme inputs overflow), else None."""
    return (low, high) if math.isfinite(low) and math.isfinite(high) and 0 <= low <= high else None


def ratio_interval(metric: Metric, result: Result, reference: Result) -> tuple[float, float] | None:
    """The interval of ``result / reference`` for ``metric`` (ratio of the bounds), or None."""
    a, b = value_interval(metric, result), value_interval(metric, reference)
    if a is None or b is None or b[0] <= 0:
        return None
    return _finite(a[0] / b[1], a[1] / b[0])


def format_spread(center: float, interval: tuple[float, float]) -> str:
    """``±6%``: the larger distance of ``interval`` from ``center``, in % of it, rounded up."""
    low, high = interval
    if not center > 0 or not math.isfinite(center):
        return ""
    return format_pct_spread(max(center - low, high - center, 0.0) / center * 100)


def format_pct_spread(pct: float) -> str:
    """``±6%`` for 5.2 (%): rounded up, to 0.1 below 1%, so the printed figure is never the smaller."""
    if not pct < MAX_SPREAD_PCT:  # also inf and nan
        return f"±>{MAX_SPREAD_PCT}%"
    if pct < 1:
        return f"±{math.ceil(pct * 10) / 10:.1f}%"
    return f"±{math.ceil(pct - 1e-9):d}%"


def format_ratio_with_interval(ratio: float, interval: tuple[float, float] | None) -> str:
    """``0.52x ±6%`` (``0.52x`` without an interval); a ratio known to ±10% or worse is
    rounded to the two significant digits it can carry (``11x ±28%``)."""
    if interval is None:
        return format_times(ratio)
    spread = format_spread(ratio, interval)
    wide = ratio > 0 and max(ratio - interval[0], interval[1] - ratio) >= 0.1 * ratio
    return f"{format_times(ratio, 2 if wide else None)} {spread}"


def unstable(result: Result) -> bool:
    """The result ran and its step-time interval is wider than its ``stable_threshold``."""
    return result.status == "ok" and result.extra_info.get("stable") is False


def contended(result: Result) -> bool:
    """Other work competed for the machine while the result was timed."""
    contention = result.extra_info.get("contention")
    return isinstance(contention, Mapping) and contention.get("contended") is True


def stable_threshold(result: Result) -> float:
    value = result.extra_info.get("stable_threshold")
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else DEFAULT_STABLE_THRESHOLD


def marks(metric: Metric, result: Result | None, with_contended: bool = True) -> str:
    """What follows a cell's text: ``~`` (unstable timing), `` contended`` (windowed metric;
    the tables say it once per result, in their timing row: ``with_contended=False``)."""
    if result is None or result.status != "ok" or result.value(metric.key) is None:
        return ""
    text = UNSTABLE if metric.timing is not None and unstable(result) else ""
    if with_contended and metric.windowed and contended(result):
        text += " " + CONTENDED
    return text


def timing_cell(result: Result | None) -> str:
    """A result's cell in the tables' timing row: the half-width of its step-time interval in %
    of the median (``±2.5%``: the figure ``stable`` is decided by, so a cell reads over the
    threshold exactly when it is marked), ``~`` when unstable, ``contended`` when contended."""
    if result is None or result.status != "ok":
        return ""
    ci, median = step_interval(result), result.value("step_time_s")
    if ci is None or not median:
        return "no CI" + (f", {CONTENDED}" if contended(result) else "")
    text = format_pct_spread(ci_half_width_rel(ci, median) * 100) + (UNSTABLE if unstable(result) else "")
    return text + (" " + CONTENDED if contended(result) else "")


def has_timing_facts(results: Iterable[Result]) -> bool:
    """Whether any result has a step-time interval or a contention verdict."""
    return any(step_interval(r) is not None or contended(r) for r in results)


def contention_text(result: Result) -> str:
    """``0.8 foreign cores, 0% steal``: what made a result contended, from its ``contention``."""
    contention: Any = result.extra_info.get("contention") or {}
    parts = []
    cores, steal, gpu = (contention.get(k) for k in ("foreign_cores", "steal_pct", "foreign_gpu_processes"))
    if isinstance(cores, int | float):
        parts.append(f"{cores:.2g} foreign cores")
    if isinstance(steal, int | float):
        parts.append(f"{steal:.2g}% steal")
    if isinstance(gpu, int) and gpu:
        parts.append(f"{gpu} foreign GPU processes")
    return ", ".join(parts)


def mark_notes(results: Iterable[Result], metrics: Iterable[Metric], with_contended: bool = True) -> list[str]:
    """The notes explaining the marks that cells of ``results`` for ``metrics`` carry
    (``with_contended``: whether the word appears in them)."""
    results, metrics = list(results), list(metrics)
    timing = any(m.timing is not None for m in metrics)
    windowed = any(m.windowed for m in metrics)
    notes = []
    shaky = [r for r in results if unstable(r)] if timing else []
    if shaky:
        limits = sorted({stable_threshold(r) for r in shaky})
        limit = " / ".join(f"{t * 100:g}%" for t in limits)
        notes.append(f"{UNSTABLE}: unstable, CI half-width > {limit} of the median step time")
    if with_contended and windowed and any(contended(r) for r in results):
        notes.append(
            f"{CONTENDED}: other work ran on the machine while the case was timed (foreign CPU time over"
            " its threshold, VM steal, or another GPU process): its timing and energy are suspect"
        )
    return notes


TIMING_NOTE = (
    "timing: the 95% interval of the median step time, its half-width in % of the median (step_time_ci_rel),"
    " ~ when over stable_threshold, contended when other work competed for the machine"
)


def has_intervals(results: Iterable[Result]) -> bool:
    return any(step_interval(r) is not None for r in results)
