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

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from reports.load import ReportError, Result, Run, result_index
from reports.metrics import METRICS, Metric, format_times, ratio
from reports.table import Table, format_cell

DEFAULT_METRIC = "samples_per_s"
MISSING = "missing: not run"


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
    ratios = [r for value, reference in pairs if (r := ratio(value, reference)) is not None and r > 0]
    if not ratios:
        return "n/a (no common values)"
    try:
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    except OverflowError:  # ratios near a float's range
        geomean = math.inf
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

    examples: dict[tuple[int, str], Result] = {}  # (world size, id) -> any column's result
    for column in columns:
        for key, result in column.results.items():
            examples.setdefault(key, result)
    ordered = sorted(examples, key=lambda key: (examples[key].order[:3], key[0]))
    show_world_size = len({ws for ws, _ in examples}) > 1
    summary_name = "mean delta" if spec.ratio == "delta" else "geomean"

    rows: list[list[str]] = []
    for family, family_keys in itertools.groupby(ordered, key=lambda key: examples[key].family):
        pairs: list[list[tuple[float, float]]] = [[] for _ in columns[1:]]  # per other column
        for key in family_keys:
            reference = first.results.get(key)
            row = [key[1]] + [str(key[0])] * show_world_size
            for column in columns:
                cell = column.results.get(key)
                row.append(MISSING if cell is None else format_cell(spec, cell, reference))
            rows.append(row)
            reference_value = None if reference is None else reference.value(metric)
            if reference_value is None:
                continue
            for column_pairs, column in zip(pairs, columns[1:], strict=True):
                other = column.results.get(key)
                value = None if other is None else other.value(metric)
                if value is not None:
                    column_pairs.append((value, reference_value))
        if spec.ratio is not None:
            summary = [f"{family} {summary_name}"] + [""] * show_world_size + ["(reference)"]
            rows.append(summary + [_summary(spec, column_pairs) for column_pairs in pairs])

    headers = ["benchmark"] + ["world size"] * show_world_size + [column.label for column in columns]
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
