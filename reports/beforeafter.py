"""Before and after: two or more runs of one machine, every metric side by side.

``archbench report html before.json after.json`` (both from one machine) shows, for every
benchmark of the first run, each metric the tables show with its value in every run and, for
each later run, how it compares with the first: a ratio with its 95% interval (``0.97x ±4%``,
``reports.trust``) or a difference in percentage points. Cells carry the marks of the tables
(``~`` unstable, ``contended``); a run where the benchmark did not end ok names its status and a
numbered note the reason. Unlike ``check`` this judges nothing: it shows.

API::

    same_machine_runs(runs) -> dict[label, list[Run]]     # labels with more than one run
    before_after(runs) -> Table                           # runs of one machine, first = before
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from reports.load import Result, Run
from reports.metrics import METRICS, Metric
from reports.table import NOT_RUN, Notes, Table, compared_text, format_cell
from reports.trust import INTERVAL_NOTE, has_intervals, mark_notes

SHOWN = [m for m in METRICS.values() if m.table is not None and m.key != "params"]


def same_machine_runs(runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs by machine label, for the labels that more than one run shares (input order)."""
    by_label: dict[str, list[Run]] = {}
    for run in runs:
        by_label.setdefault(run.label, []).append(run)
    return {label: group for label, group in by_label.items() if len(group) > 1}


def _row(metric: Metric, results: list[Result | None], notes: Notes) -> list[str] | None:
    """The metric's cells across runs, or None when no run measured it."""
    if all(r is None or r.value(metric.key) is None for r in results):
        return None
    first = results[0]
    cells = [format_cell(metric, first, notes=notes)]
    for result in results[1:]:
        cells.append(format_cell(metric, result, notes=notes))
        compared = None if result is None or first is None else compared_text(metric, result, first)
        cells.append(compared or "")
    return cells


def _headers(runs: Sequence[Run]) -> list[str]:
    names = [f"before ({Path(runs[0].source).name})"]
    for i, run in enumerate(runs[1:], start=1):
        name = "after" if len(runs) == 2 else f"after {i}"
        names += [f"{name} ({Path(run.source).name})", f"{name} / before"]
    return names


def before_after(runs: Sequence[Run]) -> Table:
    """The before/after table of ``runs`` (one machine; the first is the reference)."""
    if len(runs) < 2:
        raise ValueError("before_after needs two runs or more")
    notes = Notes()
    rows: list[list[str]] = []
    results: list[Result] = []
    for base in sorted(runs[0].results, key=lambda r: r.order):
        line = [run.get(base.id, base.world_size) for run in runs]
        results += [r for r in line if r is not None]
        name = base.id if base.world_size == 1 else f"{base.id} (x{base.world_size})"
        if all(r is None or r.status != "ok" for r in line):
            statuses = [NOT_RUN if r is None else notes.cite(r.status, r.reason or "no reason given") for r in line]
            cells = [statuses[0]] + [c for status in statuses[1:] for c in (status, "")]
            rows.append([name, "(all)", *cells])
            continue
        for metric in SHOWN:
            cells = _row(metric, line, notes)
            if cells is not None:
                rows.append([name, metric.label, *cells])
    label = runs[0].label
    caption = (
        f"Runs of one machine ({label}), every metric of the tables side by side; the ratio (x) or the"
        " difference in percentage points (pp) is the later run's against the first's. A cell without a"
        f" number names why in a note; {NOT_RUN} means not run."
    )
    lines = notes.lines() + mark_notes(results, SHOWN)
    if has_intervals(results):
        lines.append(INTERVAL_NOTE)
    return Table(f"Before and after: {label}", ["benchmark", "metric", *_headers(runs)], rows, caption, lines)
