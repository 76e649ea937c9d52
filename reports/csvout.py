"""``--format csv``: the numbers behind a table, one row per result and metric.

Values are raw numbers in the metric's own unit (the ``unit`` column: ``s``, ``bytes``,
``samples/s``, ``fraction`` ...), not the rounded text of the tables; columns of a fixed unit
name it in the header (``ratio (x)``, ``delta (pp)``). A result that did not run has one row
per metric with its status and reason and no value. Read it with Python's ``csv`` module.

API::

    results_csv(runs) -> str                     # table --format csv
    comparison_csv(columns, metric) -> str       # compare --format csv
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from reports.load import Result, Run, result_index
from reports.metrics import METRICS, Metric, ratio
from reports.schema import REFERENCE_VARIANT
from reports.trust import contended, ratio_interval, unstable, value_interval

SHOWN = [m for m in METRICS.values() if m.table is not None]
COMPARED = ["ratio (x)", "ratio_ci_low (x)", "ratio_ci_high (x)", "delta (pp)"]
TRUST = ["stable", "contended", "status", "reason"]
TABLE_COLUMNS = ["machine", "world_size", "id", "family", "size", "variant", "phase", "metric", "unit",
                 "value", "ci_low", "ci_high", "reference", *COMPARED, *TRUST]  # fmt: skip
COMPARE_COLUMNS = ["id", "world_size", "machine", "source", "metric", "unit", "value", "ci_low", "ci_high",
                   "reference", *COMPARED, *TRUST]  # fmt: skip


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _flag(value: bool | None) -> str:
    return "" if value is None else str(value).lower()


def value_cells(metric: Metric, result: Result) -> dict[str, str]:
    interval = value_interval(metric, result)
    return {
        "metric": metric.key,
        "unit": metric.unit,
        "value": _number(result.value(metric.key)),
        "ci_low": _number(interval[0] if interval else None),
        "ci_high": _number(interval[1] if interval else None),
    }


def compared_cells(metric: Metric, result: Result, reference: Result | None) -> dict[str, str]:
    """How ``result`` compares with ``reference`` (empty where it is the reference or cannot)."""
    cells = dict.fromkeys(COMPARED, "")
    value = result.value(metric.key)
    ref = None if reference is None or reference is result else reference.value(metric.key)
    comparable = reference is not None and (metric.across_phases or reference.phase == result.phase)
    if value is None or ref is None or not comparable or reference is None:
        return cells
    if metric.ratio == "ratio" and (r := ratio(value, ref)) is not None:
        interval = ratio_interval(metric, result, reference)
        cells["ratio (x)"] = _number(r)
        cells["ratio_ci_low (x)"] = _number(interval[0] if interval else None)
        cells["ratio_ci_high (x)"] = _number(interval[1] if interval else None)
    elif metric.ratio == "delta":
        cells["delta (pp)"] = _number((value - ref) * 100)
    return cells


def trust_cells(metric: Metric, result: Result) -> dict[str, str]:
    ran = result.status == "ok"
    stable = (
        None if not ran or metric.timing is None or result.extra_info.get("stable") is None else not unstable(result)
    )
    is_contended = contended(result) if ran and metric.windowed and result.extra_info.get("contention") else None
    reason = (
        result.reason
        if not ran
        else (None if result.value(metric.key) is not None else result.absent_reason(metric.key))
    )
    return {"stable": _flag(stable), "contended": _flag(is_contended), "status": result.status, "reason": reason or ""}


def _write(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def results_csv(runs: Sequence[Run]) -> str:
    """Every result of ``runs`` and every metric of the tables; ratios against fp32 of the same
    family, size, machine and world size."""
    index = result_index(runs)
    rows = []
    for (machine, world_size, _), result in sorted(index.items(), key=lambda item: (item[1].order, item[0])):
        reference = index.get((machine, world_size, f"{result.family}-{result.size}-{REFERENCE_VARIANT}"))
        for metric in SHOWN:
            row = {"machine": machine, "world_size": world_size, "id": result.id, "family": result.family,
                   "size": result.size, "variant": result.variant, "phase": result.phase}  # fmt: skip
            row |= value_cells(metric, result)
            row["reference"] = reference.id if reference is not None and reference is not result else ""
            row |= compared_cells(metric, result, reference) | trust_cells(metric, result)
            rows.append(row)
    return _write(TABLE_COLUMNS, rows)


def comparison_csv(columns: Sequence[Any], metric: str) -> str:
    """``compare``'s numbers: a row per benchmark and machine (``compare.Column``), ratios
    against the first machine."""
    spec = METRICS[metric]
    first = columns[0]
    keys = sorted({key for column in columns for key in column.results}, key=lambda k: (k[1], k[0]))
    rows = []
    for key in keys:
        reference = first.results.get(key)
        for column in columns:
            result = column.results.get(key)
            if result is None:
                continue
            row = {"id": key[1], "world_size": key[0], "machine": column.label, "source": column.source}
            row |= value_cells(spec, result)
            row["reference"] = first.label if reference is not None and column is not first else ""
            row |= compared_cells(spec, result, reference if column is not first else None)
            rows.append(row | trust_cells(spec, result))
    return _write(COMPARE_COLUMNS, rows)
