"""Hardware comparison: one column per machine, one row per benchmark, for one metric.

Columns are labelled with ``machine_info["archbench"]["label"]`` (see
``reports.load.machine_label`` for the fall-backs). Each cell is the value and its ratio
to the first machine with its 95% interval (``reports.trust``; or, for fractions such as
accuracy, the difference in percentage points), marked ``~`` / ``contended`` like the tables;
a benchmark a machine did not run or could not measure names its status, and a numbered
note the reason. After each family, a summary row gives the geometric mean of that family's
ratios (and of their interval bounds) or the mean difference for fractions, over the
benchmarks both machines have a value for.

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
from reports.metrics import METRICS, Metric, ratio
from reports.table import Notes, Table, format_cell
from reports.trust import INTERVAL_NOTE, format_ratio_with_interval, has_intervals, mark_notes, ratio_interval

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


def _summary(metric: Metric, pairs: list[Pair]) -> str:
    """Geometric mean of ratios (or mean difference in pp) over the pairs, with the geometric
    mean of the ratios' interval bounds where every ratio has one."""
    if metric.ratio == "delta":
        if not pairs:
            return "n/a (no common values)"
        mean = sum(pair.value - pair.reference for pair in pairs) / len(pairs)
        return f"{mean * 100:+.1f} pp (n={len(pairs)})"
    usable = [(r, pair.interval) for pair in pairs if (r := ratio(pair.value, pair.reference)) is not None and r > 0]
    if not usable:
        return "n/a (no common values)"
    try:
        geomean = _geomean([r for r, _ in usable])
        intervals = [i for _, i in usable if i is not None and i[0] > 0]
        interval = None
        if len(intervals) == len(usable):
            interval = (_geomean([i[0] for i in intervals]), _geomean([i[1] for i in intervals]))
    except OverflowError:  # ratios near a float's range
        geomean, interval = math.inf, None
    return f"{format_ratio_with_interval(geomean, interval)} (n={len(usable)})"


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


@dataclass
class Pair:
    """One benchmark's value on a machine and on the reference machine."""

    value: float
    reference: float
    interval: tuple[float, float] | None  # of value / reference


def _check_columns(columns: Sequence[Column], metric: str) -> None:
    if metric not in METRICS:
        raise ReportError(f"metric {metric!r}: expected one of {', '.join(METRICS)}")
    if len(columns) < 2:
        source = columns[0].source if columns else "<no input>"
        raise ReportError(f"{source}: compare needs runs from two or more machines or inputs")
    first = columns[0]
    for column in columns[1:]:
        if not first.results.keys() & column.results.keys():
            raise ReportError(f"{column.source}: no benchmark in common with {first.source}")


def _pairs(spec: Metric, reference: Result | None, others: Sequence[Result | None]) -> list[Pair | None]:
    """Per other column: the benchmark's value beside the reference's, or None."""
    reference_value = None if reference is None else reference.value(spec.key)
    pairs: list[Pair | None] = []
    for other in others:
        value = None if other is None else other.value(spec.key)
        if value is None or reference_value is None or reference is None or other is None:
            pairs.append(None)
        else:
            pairs.append(Pair(value, reference_value, ratio_interval(spec, other, reference)))
    return pairs


def _caption(spec: Metric, first: Column, summary_name: str) -> str:
    if spec.ratio is None:
        return f"{spec.label} (unit {spec.unit})."
    better = f"{spec.direction} is better; " if spec.direction else ""
    compared = "difference in percentage points" if spec.ratio == "delta" else "ratio"
    return (
        f"{spec.label} ({better}unit {spec.unit}). In parentheses: the {compared} to {first.label}."
        f" {summary_name.capitalize()} rows summarise each family over the benchmarks"
        " both machines measured. A cell without a number names why in a note."
    )


def build_comparison(columns: Sequence[Column], metric: str = DEFAULT_METRIC) -> Table:
    """The comparison table of ``metric`` across ``columns`` (the first is the reference)."""
    _check_columns(columns, metric)
    spec, first = METRICS[metric], columns[0]
    examples: dict[tuple[int, str], Result] = {}  # (world size, id) -> any column's result
    for column in columns:
        for key, result in column.results.items():
            examples.setdefault(key, result)
    ordered = sorted(examples, key=lambda key: (examples[key].order[:3], key[0]))
    show_world_size = len({ws for ws, _ in examples}) > 1
    summary_name = "mean delta" if spec.ratio == "delta" else "geomean"
    notes = Notes()
    rows: list[list[str]] = []
    for family, family_keys in itertools.groupby(ordered, key=lambda key: examples[key].family):
        pairs: list[list[Pair]] = [[] for _ in columns[1:]]  # per other column
        for key in family_keys:
            reference = first.results.get(key)
            row = [key[1]] + [str(key[0])] * show_world_size
            for column in columns:
                cell = column.results.get(key)
                row.append(MISSING if cell is None else format_cell(spec, cell, reference, notes))
            rows.append(row)
            found = _pairs(spec, reference, [column.results.get(key) for column in columns[1:]])
            for column_pairs, pair in zip(pairs, found, strict=True):
                if pair is not None:
                    column_pairs.append(pair)
        if spec.ratio is not None:
            summary = [f"{family} {summary_name}"] + [""] * show_world_size + ["(reference)"]
            rows.append(summary + [_summary(spec, column_pairs) for column_pairs in pairs])

    headers = ["benchmark"] + ["world size"] * show_world_size + [column.label for column in columns]
    results = [r for column in columns for r in column.results.values()]
    lines = notes.lines() + mark_notes(results, [spec])
    if spec.timing is not None and spec.ratio == "ratio" and has_intervals(results):
        lines.append(INTERVAL_NOTE)
    return Table(f"Hardware comparison: {spec.label}", headers, rows, _caption(spec, first, summary_name), lines)
