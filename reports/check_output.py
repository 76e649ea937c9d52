"""What the regression gate prints (``reports.check``): a text table, a Markdown page for a CI
summary, CSV, and JSON; cells of unstable or contended results carry the tables' marks."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from tabulate import tabulate

from reports.gate import ADDED, FIXED, IMPROVED, MISSING, NOT_SIGNIFICANT, Report, Row
from reports.load import Run
from reports.metrics import METRICS, format_value
from reports.trust import CONTENDED, UNSTABLE

# ---------------------------------------------------------------------------------------
# output

COLUMNS = (
    "benchmark", "metric", "baseline", "new", "change", "threshold", "p", "effect",
    "verdict", "note",
)  # fmt: skip


def _format_cell_value(metric: str, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format_value(METRICS[metric], value) if metric in METRICS else f"{value:g}"


def _format_change(row: Row) -> str:
    if row.change is None:
        return ""
    if row.kind == "points":
        return f"{row.change * 100:+.1f} pp"
    return f"{row.change * 100:+.1f}%"


def _format_threshold(row: Row) -> str:
    if row.threshold is None or row.metric not in METRICS:
        return ""
    if row.kind == "points":
        return f"{row.threshold * 100:.2g} pp"
    return f"{row.threshold * 100:.3g}%"


def _format_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _format_effect(row: Row) -> str:
    if row.common_language is None:
        return ""
    text = f"CL {row.common_language:.2f}"
    if row.hodges_lehmann_rel is not None:
        text += f", HL {row.hodges_lehmann_rel * 100:+.1f}%"
    return text


def _cells(row: Row, markdown: bool) -> list[str]:
    cells = [
        row.benchmark,
        row.metric,
        _format_cell_value(row.metric, row.baseline) + row.baseline_marks,
        _format_cell_value(row.metric, row.new) + row.new_marks,
        _format_change(row),
        _format_threshold(row),
        _format_p(row.p_value),
        _format_effect(row),
        f"**{row.verdict}**" if markdown and row.fails else row.verdict,
        row.note,
    ]
    if markdown:
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
    return cells


def _table(rows: Sequence[Row], markdown: bool) -> str:
    fmt = "github" if markdown else "simple"
    return tabulate(
        [_cells(r, markdown) for r in rows],
        headers=COLUMNS,
        tablefmt=fmt,
        disable_numparse=True,
    )


def _describe(run: Run) -> str:
    when = f", {run.datetime}" if run.datetime else ""
    return f"{run.source} ({run.label}{when})"


def summary_line(report: Report) -> str:
    benchmarks = {r.benchmark for r in report.rows if r.verdict not in (MISSING, ADDED)}
    failed = {r.benchmark for r in report.regressions}
    parts = []
    if report.regressions:
        parts.append(
            f"FAIL: {len(report.regressions)} regression(s) in {len(failed)} of {len(benchmarks)} compared benchmark(s)"
        )
    else:
        parts.append(f"PASS: no regression in {len(benchmarks)} compared benchmark(s)")
    if report.missing:
        tail = " (fails the gate: --fail-on-missing)" if report.fail_on_missing else ""
        parts.append(f"{len(report.missing)} missing in NEW{tail}")
    return "; ".join(parts)


def _method_line(report: Report) -> str:
    return (
        f"timing: change of the median beyond the threshold and one-sided Mann-Whitney U on"
        f" the raw step times, p < {report.alpha:g} (p: towards worse; CL: probability a new"
        " step is worse than a baseline step; HL: Hodges-Lehmann shift)"
    )


def mark_lines(rows: Sequence[Row]) -> list[str]:
    """What the marks in the rows mean (``reports.trust``), for the marks that occur."""
    used = " ".join(row.baseline_marks + row.new_marks for row in rows)
    lines = []
    if UNSTABLE in used:
        lines.append(f"{UNSTABLE}: unstable, the 95% interval of its median step is wider than its stable_threshold")
    if CONTENDED in used:
        lines.append(f"{CONTENDED}: other work ran on the machine while it was timed: its timing is suspect")
    return lines


def render_text(report: Report) -> str:
    lines = [
        "archbench check",
        f"baseline: {_describe(report.baseline)}",
        f"new:      {_describe(report.new)}",
        *report.header_notes,
        _method_line(report),
        "",
        _table(report.rows, markdown=False),
        *mark_lines(report.rows),
        "",
    ]
    for row in report.regressions:
        before = _format_cell_value(row.metric, row.baseline)
        after = _format_cell_value(row.metric, row.new)
        change = f" ({_format_change(row)})" if row.change is not None else ""
        lines.append(f"regression: {row.benchmark} {row.metric}: {before} -> {after}{change}")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """A CI summary page: the verdict, the rows that need a look, then every row."""
    title = "regression" if report.regressions else "no regression"
    lines = [
        f"## archbench check: {title}",
        "",
        f"**{summary_line(report)}**",
        "",
        f"- baseline: `{_describe(report.baseline)}`",
        f"- new: `{_describe(report.new)}`",
        *[f"- {note}" for note in report.header_notes],
        f"- {_method_line(report)}",
        "",
    ]
    notable = [
        r for r in report.rows
        if r.fails or r.verdict in (MISSING, NOT_SIGNIFICANT, IMPROVED, FIXED, ADDED)
    ]  # fmt: skip
    if notable:
        lines += [_table(notable, markdown=True), ""]
    lines += [f"- {line}" for line in mark_lines(report.rows)] + [""] * bool(mark_lines(report.rows))
    lines += [
        f"<details><summary>All {len(report.rows)} rows</summary>",
        "",
        _table(report.rows, markdown=True),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "exit_code": report.exit_code,
        "summary": summary_line(report),
        "alpha": report.alpha,
        "baseline": {"source": report.baseline.source, "label": report.baseline.label},
        "new": {"source": report.new.source, "label": report.new.label},
        "notes": report.header_notes,
        "rows": [asdict(r) for r in report.rows],
    }


CSV_COLUMNS = ("benchmark", "metric", "unit", "baseline", "new", "baseline_marks", "new_marks", "change",
               "change_unit", "threshold", "p_value", "common_language", "hodges_lehmann_rel", "rounds_baseline",
               "rounds_new", "verdict", "note")  # fmt: skip


def _csv_value(value: float | str | None) -> str:
    return "" if value is None else value if isinstance(value, str) else repr(float(value))


def _csv_row(row: Row) -> dict[str, str]:
    """One row of the check as raw numbers: values in the metric's unit, change and threshold in
    % (relative) or pp (points)."""
    scale = 100.0
    unit = "pp" if row.kind == "points" else "%"
    return {
        "benchmark": row.benchmark,
        "metric": row.metric,
        "unit": METRICS[row.metric].unit if row.metric in METRICS else "",
        "baseline": _csv_value(row.baseline),
        "new": _csv_value(row.new),
        "baseline_marks": row.baseline_marks.strip(),
        "new_marks": row.new_marks.strip(),
        "change": "" if row.change is None else repr(row.change * scale),
        "change_unit": unit if row.change is not None or row.threshold is not None else "",
        "threshold": "" if row.threshold is None else repr(row.threshold * scale),
        "p_value": _csv_value(row.p_value),
        "common_language": _csv_value(row.common_language),
        "hodges_lehmann_rel": _csv_value(row.hodges_lehmann_rel),
        "rounds_baseline": "" if row.n_rounds is None else str(row.n_rounds[0]),
        "rounds_new": "" if row.n_rounds is None else str(row.n_rounds[1]),
        "verdict": row.verdict,
        "note": row.note,
    }


def check_csv(report: Report) -> str:
    """Every row of the check, for a spreadsheet: ``--format csv``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(_csv_row(row) for row in report.rows)
    return buffer.getvalue()
