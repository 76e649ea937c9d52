"""Hardware comparison: one column per machine, one row per benchmark, for one metric.

Columns are labelled with ``machine_info["archbench"]["label"]`` (see
``reports.load.machine_label`` for the fall-backs). Each cell is the value and its ratio
to the first machine (or, for fractions such as accuracy, the difference in percentage
points); a benchmark a machine did not run or could not measure says why. After each
family, a summary row gives the geometric mean of that family's ratios (mean difference
for fractions) over the benchmarks both machines have a value for.

API::

    machine_columns(inputs) -> list[Column]      # [(input name, runs), ...]
    build_comparison(columns, metric="samples_per_s") -> Table
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reports.load import ReportError, Result, Run, result_index
from reports.metrics import METRICS, Metric, format_times, ratio
from reports.table import Table, format_cell

DEFAULT_METRIC = "samples_per_s"


@dataclass
class Column:
    """One machine of one input: its label and its results by (world size, id)."""

    label: str
    source: str
    results: dict[tuple[int, str], Result]


def machine_columns(inputs: Sequence[tuple[str, Sequence[Run]]]) -> list[Column]:
    """A column per machine per input, in input order; repeated labels get the input's name."""
    columns: list[Column] = []
    for name, runs in inputs:
        labels = list(dict.fromkeys(run.label for run in runs))
        for label in labels:
            index = result_index([run for run in runs if run.label == label])
            columns.append(Column(label, name, {(ws, id_): r for (_, ws, id_), r in index.items()}))
    counts: dict[str, int] = {}
    for column in columns:
        counts[column.label] = counts.get(column.label, 0) + 1
    for column in columns:
        if counts[column.label] > 1:
            column.label = f"{column.label} ({column.source})"
    return columns


def _summary(metric: Metric, pairs: list[tuple[float, float]]) -> str:
    """Geometric mean of ratios (or mean difference in pp) over (value, reference) pairs."""
    if metric.ratio == "delta":
        if not pairs:
            return "n/a (no common values)"
        mean = sum(value - reference for value, reference in pairs) / len(pairs)
        return f"{mean * 100:+.1f} pp (n={len(pairs)})"
    ratios = [
        r for value, reference in pairs if (r := ratio(value, reference)) is not None and r > 0
    ]
    if not ratios:
        return "n/a (no common values)"
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return f"{format_times(geomean)} (n={len(ratios)})"


def build_comparison(columns: Sequence[Column], metric: str = DEFAULT_METRIC) -> Table:
    """The comparison table of ``metric`` across ``columns`` (the first is the reference)."""
    if metric not in METRICS:
        raise ReportError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    spec = METRICS[metric]
    if len(columns) < 2:
        source = columns[0].source if columns else "<no input>"
        raise ReportError(f"{source}: compare needs runs from two or more machines or inputs")
    first = columns[0]
    for column in columns[1:]:
        if not first.results.keys() & column.results.keys():
            raise ReportError(f"{column.source}: no benchmark in common with {first.source}")

    keys: dict[tuple[int, str], Result] = {}
    for column in columns:
        for key, result in column.results.items():
            keys.setdefault(key, result)
    ordered = sorted(keys, key=lambda key: (keys[key].order[:3], key[0]))
    show_world_size = len({ws for ws, _ in keys}) > 1
    summary_name = "mean delta" if spec.ratio == "delta" else "geomean"

    rows: list[list[str]] = []
    family_pairs: list[list[tuple[float, float]]] = [[] for _ in columns[1:]]
    for position, key in enumerate(ordered):
        family = keys[key].family
        reference = first.results.get(key)
        row = [key[1]] + [str(key[0])] * show_world_size
        for i, column in enumerate(columns):
            result = column.results.get(key)
            row.append(
                "missing: not run" if result is None else format_cell(spec, result, reference)
            )
            if i and result is not None and reference is not None:
                value, reference_value = result.value(metric), reference.value(metric)
                if value is not None and reference_value is not None:
                    family_pairs[i - 1].append((value, reference_value))
        rows.append(row)
        last_of_family = (
            position + 1 == len(ordered) or keys[ordered[position + 1]].family != family
        )
        if last_of_family and spec.ratio is not None:
            summary = [f"{family} {summary_name}"] + [""] * show_world_size + ["(reference)"]
            rows.append(summary + [_summary(spec, pairs) for pairs in family_pairs])
            family_pairs = [[] for _ in columns[1:]]

    headers = (
        ["benchmark"] + ["world size"] * show_world_size + [column.label for column in columns]
    )
    better = f"{spec.direction} is better; " if spec.direction else ""
    compared = "difference in percentage points" if spec.ratio == "delta" else "ratio"
    caption = (
        f"{spec.label} ({better}unit {spec.unit}). In parentheses: the {compared} to {first.label}."
        f" {summary_name.capitalize()} rows summarise each family over the benchmarks"
        " both machines measured."
    )
    if spec.ratio is None:
        caption = f"{spec.label} (unit {spec.unit})."
    return Table(f"Hardware comparison: {spec.label}", headers, rows, caption)
