"""The one metrics table of archbench: every metric's unit, direction and presentation.

Tables, the hardware comparison and the regression gate all read ``METRICS``; nothing
else in ``reports`` spells a unit, a direction or a number format.

A :class:`Metric` says:

- ``key``: the ``extra_info`` key (see ``docs/schema.md``);
- ``label``: how a table names the metric; ``unit``: its unit in words;
- ``direction``: ``"higher"`` or ``"lower"`` is better, or ``None`` (a fact, not a goal);
- ``fmt`` and ``scale``: ``fmt`` formats the mantissa after ``scale`` picked the prefix
  (``"si"``: 1.23k, 4.5M; ``"bytes"``: KiB/MiB/GiB; ``"time"``: s/ms/us; ``"percent"``:
  a fraction shown in %; ``"plain"``: the number as is);
- ``table``: the report table it belongs to (``"throughput"``, ``"accuracy"``,
  ``"efficiency"``, ``"compression"``, ``"time_to_accuracy"``) or ``None`` when no table shows
  it; a table in ``OPTIONAL_TABLES`` is shown only when some result has a value of one of its
  metrics, and a table in ``TABLE_PHASES`` has rows of that phase only;
- ``ratio``: how a cell relates to its reference (``"ratio"``: ``(0.52x)``, value divided
  by the reference; ``"delta"``: ``(-1.2 pp)``, difference of two fractions in percentage
  points; ``None``: no comparison shown);
- ``signed``: whether the value may be negative (a difference such as ``accuracy_delta``);
  every other metric is a time, size, rate or count, and ``reports.validate`` refuses a
  negative one;
- ``timing``: how the metric follows the median step time, whose 95% interval
  (``step_time_ci_s``) then bounds it too: ``"time"`` (proportional: the step time itself),
  ``"rate"`` (inversely proportional: throughput, TFLOP/s, MFU), ``None`` (not from the step
  time: accuracy, memory, energy);
- ``windowed``: measured over the timed window, so other work on the machine during it
  (``contention.contended``) bears on it: the timing metrics, power and energy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from reports.schema import SCHEMA  # noqa: F401  (re-exported: the schema version)

Direction = Literal["higher", "lower"]
Scale = Literal["si", "bytes", "time", "percent", "plain"]
TableName = Literal["throughput", "accuracy", "efficiency", "compression", "time_to_accuracy"]
RatioStyle = Literal["ratio", "delta"]
Timing = Literal["time", "rate"]

TABLES: tuple[TableName, ...] = ("throughput", "accuracy", "efficiency", "compression", "time_to_accuracy")
TABLE_TITLES: dict[TableName, str] = {
    "throughput": "Throughput",
    "accuracy": "Accuracy",
    "efficiency": "Efficiency",
    "compression": "Compression",
    "time_to_accuracy": "Time to accuracy",
}
# shown only when some result has a value of one of their metrics (inference; --time-to-accuracy)
OPTIONAL_TABLES: frozenset[TableName] = frozenset({"compression", "time_to_accuracy"})
# tables whose rows are of one phase only
TABLE_PHASES: dict[TableName, str] = {"compression": "infer", "time_to_accuracy": "train"}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    direction: Direction | None
    table: TableName | None
    scale: Scale
    fmt: str = "{:.3g}"
    ratio: RatioStyle | None = "ratio"
    signed: bool = False
    timing: Timing | None = None
    windowed: bool = False

    def __post_init__(self) -> None:
        if self.timing is not None and not self.windowed:
            raise ValueError(f"{self.key}: a timing metric is measured over the timed window")


# Order matters: a table lists its metrics in this order.
# fmt: off
METRICS: dict[str, Metric] = {m.key: m for m in (
    # key, label, unit, direction, table, scale[, fmt, ratio, signed, timing, windowed]
    Metric("samples_per_s", "samples/s", "samples/s", "higher", "throughput", "si", timing="rate", windowed=True),
    Metric("tokens_per_s", "tokens/s", "tokens/s", "higher", "throughput", "si", timing="rate", windowed=True),
    Metric("step_time_s", "step time", "s", "lower", "throughput", "time", timing="time", windowed=True),
    Metric("tflops", "TFLOP/s", "TFLOP/s", "higher", "throughput", "plain", timing="rate", windowed=True),
    Metric("accuracy", "accuracy", "fraction", "higher", "accuracy", "percent",
           fmt="{:.1f}", ratio="delta"),
    Metric("accuracy_delta", "accuracy vs fp32", "fraction", "higher", None, "percent",
           fmt="{:+.1f}", ratio=None, signed=True),
    Metric("bits_per_byte", "bits/byte", "bits/byte", "lower", "accuracy", "plain", fmt="{:.3f}"),
    Metric("model_bytes", "model size", "bytes", "lower", "accuracy", "bytes"),
    Metric("params", "parameters", "count", None, "accuracy", "si"),
    Metric("mfu", "MFU", "fraction", "higher", "efficiency", "percent", timing="rate", windowed=True),
    Metric("samples_per_j", "samples/J", "samples/J", "higher", "efficiency", "si", windowed=True),
    Metric("energy_j_per_sample", "energy/sample", "J/sample", "lower", None, "plain", windowed=True),
    Metric("power_w", "power (W)", "W", None, "efficiency", "plain", windowed=True),
    Metric("peak_mem_bytes", "peak memory", "bytes", "lower", "efficiency", "bytes"),
    Metric("model_state_bytes", "model state", "bytes", "lower", "efficiency", "bytes"),
    Metric("model_state_bytes_predicted", "model state (predicted)", "bytes", "lower",
           "efficiency", "bytes"),
    # inference of trained models, compressed or not (workloads/compressed.py)
    Metric("speedup", "speedup vs fp32", "ratio", "higher", "compression", "plain", fmt="{:.2f}x", ratio=None,
           windowed=True),
    Metric("speedup_vs_compiled", "speedup vs compiled", "ratio", "higher", "compression", "plain",
           fmt="{:.2f}x", ratio=None, windowed=True),
    Metric("latency_p50_s", "latency p50 (batch 1)", "s", "lower", "compression", "time", windowed=True),
    Metric("latency_p90_s", "latency p90 (batch 1)", "s", "lower", "compression", "time", windowed=True),
    Metric("latency_p99_s", "latency p99 (batch 1)", "s", "lower", "compression", "time", windowed=True),
    Metric("accuracy_no_teacher", "accuracy, student alone", "fraction", "higher", "compression", "percent",
           fmt="{:.1f}", ratio="delta"),
    Metric("mcnemar_p", "McNemar p vs fp32", "probability", None, "compression", "plain", ratio=None),
    Metric("prepare_s", "preparation", "s", "lower", "compression", "time", ratio=None),
    Metric("step_time_ci_rel", "step time CI (+/-)", "fraction", "lower", None, "percent", ratio=None),
    # time to accuracy (--time-to-accuracy, workloads/tta.py): trained until a held-out target
    Metric("time_to_accuracy_s", "time to target", "s", "lower", "time_to_accuracy", "time"),
    Metric("steps_to_accuracy", "steps to target", "steps", "lower", "time_to_accuracy", "plain", fmt="{:.0f}"),
    Metric("tta_target", "target", "accuracy or bits/byte", None, "time_to_accuracy", "plain", ratio=None),
)}
# fmt: on


def table_metrics(table: TableName) -> list[Metric]:
    """The metrics a report table shows, in table order."""
    return [m for m in METRICS.values() if m.table == table]


_SI_UNITS = tuple((1000.0**power, prefix) for power, prefix in enumerate(("", "k", "M", "G", "T", "P", "E")))
_BYTE_UNITS = tuple((1024.0**power, " " + unit) for power, unit in enumerate(("B", "KiB", "MiB", "GiB", "TiB", "PiB")))
_TIME_UNITS = ((1e-9, " ns"), (1e-6, " us"), (1e-3, " ms"), (1.0, " s"))


def _scaled(value: float, fmt: str, units: tuple[tuple[float, str], ...]) -> str:
    """``value`` in the largest of ``units`` (ascending ``(factor, suffix)``) that does not
    exceed it, one unit up where the formatted mantissa would reach 1000."""
    magnitude = abs(value)
    index = 0
    while index + 1 < len(units) and units[index + 1][0] <= magnitude:
        index += 1
    text = fmt.format(magnitude / units[index][0])
    if float(text) >= 1000 and index + 1 < len(units):
        index += 1
        text = fmt.format(magnitude / units[index][0])
    return ("-" if value < 0 else "") + text + units[index][1]


def format_si(value: float, fmt: str = "{:.3g}") -> str:
    """1234.5 -> ``1.23k``; 4.2e6 -> ``4.2M``; values below 1000 unchanged."""
    return _scaled(value, fmt, _SI_UNITS)


def format_bytes(value: float, fmt: str = "{:.3g}") -> str:
    """Binary units: 512 -> ``512 B``; 1536 -> ``1.5 KiB``; 3 * 2**30 -> ``3 GiB``."""
    return _scaled(value, fmt, _BYTE_UNITS)


def format_time(seconds: float, fmt: str = "{:.3g}") -> str:
    """0.0123 -> ``12.3 ms``; 2.5 -> ``2.5 s``."""
    return _scaled(seconds, fmt, _TIME_UNITS)


def format_value(metric: Metric, value: float) -> str:
    """A metric's value as a table shows it (no ratio)."""
    if not math.isfinite(value):
        return str(value)
    if metric.scale == "si":
        return format_si(value, metric.fmt)
    if metric.scale == "bytes":
        return format_bytes(value, metric.fmt)
    if metric.scale == "time":
        return format_time(value, metric.fmt)
    if metric.scale == "percent":
        return metric.fmt.format(value * 100) + "%"
    return metric.fmt.format(value)


def human_unit(metric: Metric) -> tuple[float, str]:
    """``(factor, unit)`` that puts the metric on a plot's axis in units a reader knows:
    bytes in MiB, fractions in %, seconds in ms; others as they are."""
    if metric.scale == "bytes":
        return 1 / 2**20, "MiB"
    if metric.scale == "percent":
        return 100.0, "%"
    if metric.scale == "time":
        return 1e3, "ms"
    return 1.0, metric.unit


def ratio(value: float, reference: float) -> float | None:
    """``value / reference``, or None where a ratio means nothing (reference <= 0)."""
    if reference <= 0 or value < 0:
        return None
    return value / reference


def format_times(r: float, digits: int | None = None) -> str:
    """A ratio: ``0.52x``, ``3.97x``, ``12.3x``, ``123x``; two significant digits below 0.1
    (``0.024x``). ``digits``: that many significant digits instead (a ratio whose interval
    allows no more)."""
    text = f"{r:#.{digits}g}".rstrip(".") if digits is not None and 0 < r < 100 else "e"
    if "e" not in text:
        return text + "x"  # 0.90x, 11x
    if 0 < r < 0.1:
        return f"{r:.2g}x"
    if r >= 10:
        return f"{r:.0f}x" if r >= 100 else f"{r:.1f}x"
    return f"{r:.2f}x"


def format_ratio(metric: Metric, value: float, reference: float) -> str | None:
    """How ``value`` compares with ``reference`` in the metric's ratio style, or None."""
    if metric.ratio == "ratio":
        r = ratio(value, reference)
        return None if r is None else format_times(r)
    if metric.ratio == "delta":
        return f"{(value - reference) * 100:+.1f} pp"
    return None
