"""The HTML report's figures besides the scaling curves: one per case (its telemetry and the
distribution of its step times) and a metric across machines.

Every axis is in units a reader knows (MiB, W, %, ms, samples/s) and every title names the
machine. matplotlib is imported here only, when a figure is drawn (``matplotlib.figure.Figure``
with the Agg canvas: no pyplot, no GUI backend).

API::

    case_png(result, machine) -> bytes | None        # None: nothing to draw
    machines_png(columns, metric="samples_per_s") -> bytes | None
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from reports.errors import ReportError
from reports.load import Result
from reports.metrics import METRICS, human_unit
from reports.plot import PLOTTABLE
from reports.trust import contended, step_interval, unstable, value_interval

# telemetry key -> (panel title, factor to the unit, unit)
SERIES = {
    "mem_bytes": ("memory", 1 / 2**20, "MiB"),
    "power_w": ("power", 1.0, "W"),
    "util_pct": ("utilization", 1.0, "%"),
}
MAX_BARS = 60  # benchmarks in the machines chart; more are left out, with a note


def _figure(size: tuple[float, float], layout: str | None = "constrained") -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:  # pragma: no cover - matplotlib is a dependency of plots
        raise ReportError(f"plot: matplotlib is not available ({error})") from None
    return Figure(figsize=size, layout=layout)


def _png(figure: Any, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _numbers(values: object) -> list[float | None]:
    """The plottable numbers of a list (``PLOTTABLE``), None for the others."""
    if not isinstance(values, list):
        return []
    low, high = PLOTTABLE
    return [float(v) if isinstance(v, int | float) and (v == 0 or low <= abs(v) <= high) else None for v in values]


def telemetry_series(result: Result) -> dict[str, tuple[list[float], list[float]]]:
    """Series with at least one value: key -> (t in s, values in the panel's unit)."""
    telemetry = result.extra_info.get("telemetry")
    if not isinstance(telemetry, dict):
        return {}
    t = _numbers(telemetry.get("t"))
    found = {}
    for key, (_, factor, _) in SERIES.items():
        pairs = [(x, y * factor) for x, y in zip(t, _numbers(telemetry.get(key)), strict=False) if None not in (x, y)]
        if pairs:
            xs, ys = zip(*pairs, strict=True)
            found[key] = (list(xs), list(ys))  # type: ignore[arg-type]
    return found


def step_times_ms(result: Result) -> list[float]:
    times = [v * 1e3 for v in _numbers(result.extra_info.get("step_times_s")) if v is not None and v > 0]
    return times if all(PLOTTABLE[0] <= t <= PLOTTABLE[1] for t in times) else []


def case_title(result: Result, machine: str) -> str:
    marks = [word for word, on in (("unstable", unstable(result)), ("contended", contended(result))) if on]
    return f"{result.id} on {machine}" + (f" ({', '.join(marks)})" if marks else "")


def _draw_steps(axes: Any, result: Result, times: list[float]) -> None:
    low, high = min(times), max(times)
    if high - low <= 1e-9 * high:  # one value (or nearly): one bar around it
        axes.hist(times, bins=1, range=(low * 0.99, high * 1.01), color="tab:blue", alpha=0.75)
    else:
        axes.hist(times, bins=min(30, max(5, len(times) // 4)), color="tab:blue", alpha=0.75)
    median = result.value("step_time_s")
    if median is not None and low <= median * 1e3 <= high:
        axes.axvline(median * 1e3, color="black", linewidth=1, label="median")
    ci = step_interval(result)
    if ci is not None and low <= ci[0] * 1e3 and ci[1] * 1e3 <= high:
        axes.axvspan(ci[0] * 1e3, ci[1] * 1e3, color="tab:orange", alpha=0.3, label="95% CI of the median")
    axes.set_title(f"step times ({len(times)} rounds)")
    axes.set_xlabel("step time (ms)")
    axes.set_ylabel("rounds")
    if axes.get_legend_handles_labels()[1]:
        axes.legend(fontsize="x-small")


def case_png(result: Result, machine: str) -> bytes | None:
    """The case's telemetry over its timed window and its step-time histogram, or None when
    it has neither."""
    series, times = telemetry_series(result), step_times_ms(result)
    if not series and not times:
        return None
    panels = len(series) + bool(times)
    width, height = 3.4 * panels + 0.6, 2.7
    # margins in inches, not constrained layout: a report draws one of these per case, and the
    # layout engine's text measuring was 40% of each (0.45 s -> 0.26 s a case on the 2-core VM)
    figure = _figure((width, height), layout=None)
    left, right, gap = 0.95, 0.2, 1.0  # gap: the next panel's tick labels and axis label
    axes_width = (width - left - right - (panels - 1) * gap) / panels
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=0.55 / height, top=1 - 0.65 / height,
                           wspace=gap / axes_width)  # fmt: skip
    figure.suptitle(case_title(result, machine), fontsize="medium")
    for position, (key, (t, values)) in enumerate(series.items(), start=1):
        title, _, unit = SERIES[key]
        axes = figure.add_subplot(1, panels, position)
        axes.plot(t, values, marker=".", linewidth=1)
        axes.set_title(title)
        axes.set_xlabel("time in the timed window (s)")
        axes.set_ylabel(f"{title} ({unit})")
        axes.grid(True, alpha=0.3)
    if times:
        _draw_steps(figure.add_subplot(1, panels, panels), result, times)
    return _png(figure)


def machines_png(columns: Sequence[Any], metric: str = "samples_per_s") -> bytes | None:
    """A bar per benchmark and machine (``compare.Column``s), log scale, with each value's
    95% interval as an error bar; None when no machine measured the metric."""
    spec = METRICS[metric]
    factor, unit = human_unit(spec)
    examples: dict[tuple[int, str], Result] = {}
    for column in columns:
        for key, result in column.results.items():
            examples.setdefault(key, result)
    keys = sorted(examples, key=lambda k: (examples[k].order, k[0]))
    keys = [k for k in keys if any(_value(c.results.get(k), metric) is not None for c in columns)]
    if not keys:
        return None
    shown = keys[:MAX_BARS]
    figure = _figure((max(6.0, 0.45 * len(shown) * len(columns) + 2), 4.2))
    axes = figure.add_subplot(1, 1, 1)
    width = 0.8 / len(columns)
    for i, column in enumerate(columns):
        xs, ys, errors = [], [], [[], []]
        for j, key in enumerate(shown):
            result = column.results.get(key)
            value = _value(result, metric)
            if value is None or result is None:
                continue
            interval = value_interval(spec, result) or (value, value)
            xs.append(j + (i - (len(columns) - 1) / 2) * width)
            ys.append(value * factor)
            errors[0].append(max(value - interval[0], 0) * factor)
            errors[1].append(max(interval[1] - value, 0) * factor)
        axes.bar(xs, ys, width=width, yerr=errors, capsize=2, label=column.label)
    axes.set_xticks(range(len(shown)), [_name(key) for key in shown], rotation=60, ha="right", fontsize="small")
    axes.set_yscale("log")
    axes.set_ylabel(f"{spec.label} ({unit})" if spec.label != unit else unit)
    title = f"{spec.label} across machines: " + " vs ".join(column.label for column in columns)
    if len(keys) > len(shown):
        title += f" (first {len(shown)} of {len(keys)} benchmarks)"
    axes.set_title(title, fontsize="medium")
    axes.grid(True, axis="y", which="both", alpha=0.3)
    axes.legend(fontsize="small")
    return _png(figure)


def _value(result: Result | None, metric: str) -> float | None:
    """A positive value a log axis can hold (``PLOTTABLE``, with margin for its interval)."""
    value = None if result is None else result.value(metric)
    return value if value is not None and PLOTTABLE[0] * 1e3 <= value <= PLOTTABLE[1] / 1e3 else None


def _name(key: tuple[int, str]) -> str:
    world_size, benchmark = key
    return benchmark if world_size == 1 else f"{benchmark} (x{world_size})"
