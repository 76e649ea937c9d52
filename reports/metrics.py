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
  ``"efficiency"``, ``"time_to_accuracy"``) or ``None`` when no table shows it; a table in
  ``OPTIONAL_TABLES`` is shown only when some result carries one of its metrics;
- ``ratio``: how a cell relates to its reference (``"ratio"``: ``(0.52x)``, value divided
  by the reference; ``"delta"``: ``(-1.2 pp)``, difference of two fractions in percentage
  points; ``None``: no comparison shown);
- ``across_phases``: whether a train and an infer result may be compared (true for
  properties of the model such as accuracy, false for per-step costs such as throughput);
- ``signed``: whether the value may be negative (a difference such as ``accuracy_delta``);
  every other metric is a time, size, rate or count, and ``reports.validate`` refuses a
  negative one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from reports.schema import SCHEMA  # noqa: F401  (re-exported: the schema version)

Direction = Literal["higher", "lower"]
Scale = Literal["si", "bytes", "time", "percent", "plain"]
TableName = Literal["throughput", "accuracy", "efficiency", "time_to_accuracy"]
RatioStyle = Literal["ratio", "delta"]

TABLES: tuple[TableName, ...] = ("throughput", "accuracy", "efficiency", "time_to_accuracy")
TABLE_TITLES: dict[TableName, str] = {
    "throughput": "Throughput",
    "accuracy": "Accuracy",
    "efficiency": "Efficiency",
    "time_to_accuracy": "Time to accuracy",
}
OPTIONAL_TABLES: frozenset[TableName] = frozenset({"time_to_accuracy"})  # only with --time-to-accuracy


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
    across_phases: bool = False
    signed: bool = False


# Order matters: a table lists its metrics in this order.
# fmt: off
METRICS: dict[str, Metric] = {m.key: m for m in (
    # key, label, unit, direction, table, scale[, fmt, ratio, across_phases, signed]
    Metric("samples_per_s", "samples/s", "samples/s", "higher", "throughput", "si"),
    Metric("tokens_per_s", "tokens/s", "tokens/s", "higher", "throughput", "si"),
    Metric("step_time_s", "step time", "s", "lower", "throughput", "time"),
    Metric("tflops", "TFLOP/s", "TFLOP/s", "higher", "throughput", "plain"),
    Metric("accuracy", "accuracy", "fraction", "higher", "accuracy", "percent",
           fmt="{:.1f}", ratio="delta", across_phases=True),
    Metric("accuracy_delta", "accuracy vs fp32", "fraction", "higher", None, "percent",
           fmt="{:+.1f}", ratio=None, across_phases=True, signed=True),
    Metric("bits_per_byte", "bits/byte", "bits/byte", "lower", "accuracy", "plain",
           fmt="{:.3f}", across_phases=True),
    Metric("model_bytes", "model size", "bytes", "lower", "accuracy", "bytes", across_phases=True),
    Metric("params", "parameters", "count", None, "accuracy", "si", across_phases=True),
    Metric("mfu", "MFU", "fraction", "higher", "efficiency", "percent"),
    Metric("samples_per_j", "samples/J", "samples/J", "higher", "efficiency", "si"),
    Metric("energy_j_per_sample", "energy/sample", "J/sample", "lower", None, "plain"),
    Metric("power_w", "power (W)", "W", None, "efficiency", "plain"),
    Metric("peak_mem_bytes", "peak memory", "bytes", "lower", "efficiency", "bytes"),
    Metric("model_state_bytes", "model state", "bytes", "lower", "efficiency", "bytes"),
    Metric("model_state_bytes_predicted", "model state (predicted)", "bytes", "lower",
           "efficiency", "bytes"),
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


def ratio(value: float, reference: float) -> float | None:
    """``value / reference``, or None where a ratio means nothing (reference <= 0)."""
    if reference <= 0 or value < 0:
        return None
    return value / reference


def format_times(r: float) -> str:
    """A ratio: ``0.52x``, ``12.30x``; two significant digits below 0.1 (``0.024x``)."""
    if 0 < r < 0.1:
        return f"{r:.2g}x"
    return f"{r:.0f}x" if r >= 100 else f"{r:.2f}x"


def format_ratio(metric: Metric, value: float, reference: float) -> str | None:
    """How ``value`` compares with ``reference`` in the metric's ratio style, or None."""
    if metric.ratio == "ratio":
        r = ratio(value, reference)
        return None if r is None else format_times(r)
    if metric.ratio == "delta":
        return f"{(value - reference) * 100:+.1f} pp"
    return None
