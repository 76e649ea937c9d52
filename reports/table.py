"""The Throughput, Accuracy and Efficiency tables; Compression when the results hold inference
of trained models, and Time to accuracy when they hold time-to-accuracy runs.

Rows are a family and a size (plus the machine and the world size when the input holds
more than one), one row per metric of the table (``reports.metrics.METRICS``); columns are
variants, ``fp32`` first. A cell is the value and, in parentheses, how it compares with
``fp32`` in the same row: a ratio with its 95% interval (``1.23k (0.52x ±6%)``, see
``reports.trust``) or a difference (``97.0% (-1.2 pp)``). A timing cell of an unstable result
ends in ``~``, a cell of a contended result in ``contended``. A cell without a number names
its status and a numbered note under the table holds the reason (``skipped [1]``,
``absent [2]``): long reasons are not repeated in every metric row, and the github tables of
the smoke tier fit in 120 columns. ``-`` means the benchmark was not run. A metric row with
no value in any variant and a metric absent in some (``tokens/s`` of a CNN) is left out and
named in a note under the table.

One :class:`Table` drives every output format (``FORMATS``) through tabulate.

Public API::

    render_tables(results, fmt="github", *, label=None, machine_info=None) -> str

``results`` is a list of archbench ``extra_info`` dicts (what the bench's conftest
holds at the end of a session; ``label``/``machine_info`` describe the machine), a
:class:`reports.load.Run`, or a list of Runs. Returns the three tables, each under its
heading, in ``fmt`` (github, pipe, html, latex, plain). Raises ``ReportError`` for
results that do not follow ``docs/schema.md``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from reports.load import (
    ReportError,
    Result,
    Run,
    result_index,
    run_from_extra_info,
)
from reports.metrics import (
    METRICS,
    OPTIONAL_TABLES,
    TABLE_PHASES,
    TABLE_TITLES,
    TABLES,
    Metric,
    TableName,
    format_ratio,
    format_value,
    ratio,
    table_metrics,
)
from reports.schema import REFERENCE_VARIANT, phase_rank, variant_rank
from reports.trust import (
    INTERVAL_NOTE,
    TIMING_NOTE,
    format_ratio_with_interval,
    has_intervals,
    has_timing_facts,
    mark_notes,
    marks,
    ratio_interval,
    timing_cell,
)

FORMATS = ("github", "pipe", "html", "latex", "plain")
NOT_RUN = "-"
NOTHING_MEASURED = "(all)"
TIMING_ROW = "timing"  # the throughput table's row of each result's step-time interval and contention
MAX_REASON = 60  # an inline reason (compare's cells without notes)
MAX_NOTE = 240  # a numbered note under a table


@dataclass
class Table:
    """A titled table of strings: what every output format renders."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


class Notes:
    """Numbered notes under a table: a cell says ``skipped [1]``, the note ``[1] <reason>``.
    Each distinct (status, reason) gets one number, in the order cells first use it."""

    def __init__(self) -> None:
        self._numbers: dict[tuple[str, str], int] = {}

    def cite(self, status: str, reason: str) -> str:
        key = (status, " ".join(reason.split()))
        number = self._numbers.setdefault(key, len(self._numbers) + 1)
        return f"{status} [{number}]"

    def lines(self) -> list[str]:
        return [f"[{number}] {shorten(reason, MAX_NOTE)}" for (_, reason), number in self._numbers.items()]


# ---------------------------------------------------------------------------------------
# cells


def shorten(text: str, width: int = MAX_REASON) -> str:
    """One line of at most ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def _why(metric: Metric, result: Result, notes: Notes | None) -> str:
    """Why a result has no value for ``metric``: inline, or a numbered note."""
    if notes is None:
        return shorten(result.missing_reason(metric.key))
    if result.status != "ok":
        return notes.cite(result.status, result.reason or "no reason given")
    return notes.cite("absent", result.absent_reason(metric.key))


def compared_text(metric: Metric, result: Result, reference: Result | None) -> str | None:
    """How ``result`` compares with ``reference`` (``0.52x ±6%``, ``-1.2 pp``), or None."""
    value = result.value(metric.key)
    if reference is None or reference is result or value is None:
        return None
    reference_value = reference.value(metric.key)
    if reference_value is None or reference.phase != result.phase:  # fp32 of the same phase
        return None
    if metric.ratio == "ratio":
        r = ratio(value, reference_value)
        return None if r is None else format_ratio_with_interval(r, ratio_interval(metric, result, reference))
    return format_ratio(metric, value, reference_value)


def format_cell(
    metric: Metric,
    result: Result | None,
    reference: Result | None = None,
    notes: Notes | None = None,
    with_contended: bool = True,
) -> str:
    """``value (ratio ±interval)`` for ``result`` plus its marks (``~``, ``contended``), or why it
    has no value (inline, or ``skipped [1]`` with ``notes``); ``-`` when not run."""
    if result is None:
        return NOT_RUN
    value = result.value(metric.key)
    if value is None:
        return _why(metric, result, notes)
    text = format_value(metric, value)
    compared = compared_text(metric, result, reference)
    if compared is not None:
        text = f"{text} ({compared})"
    return text + marks(metric, result, with_contended)


# ---------------------------------------------------------------------------------------
# building


_ANY = METRICS["samples_per_s"]  # for cells of results that did not run: any metric says why


@dataclass(frozen=True)
class _Group:
    """The rows of one family, size and phase (on one machine, at one world size)."""

    family: str
    size: str
    phase: str
    machine: str
    world_size: int


def _groups(runs: Sequence[Run]) -> dict[_Group, dict[str, Result]]:
    """Results by row group and variant, groups in table order."""
    index = result_index(runs)
    machines = list(dict.fromkeys(run.label for run in runs))

    def order(item: tuple[tuple[str, int, str], Result]) -> tuple[Any, ...]:
        (machine, world_size, _), result = item
        return (result.order[:2], phase_rank(result.phase), machines.index(machine), world_size)

    groups: dict[_Group, dict[str, Result]] = {}
    for (machine, world_size, _), result in sorted(index.items(), key=order):
        group = _Group(result.family, result.size, result.phase, machine, world_size)
        groups.setdefault(group, {})[result.variant] = result
    return groups


@dataclass
class _Layout:
    """What every table of one input shares: row groups, variant columns, key columns."""

    groups: dict[_Group, dict[str, Result]]
    variants: list[str]
    show_machine: bool
    show_world_size: bool
    show_phase: bool

    @property
    def headers(self) -> list[str]:
        headers = ["family", "size"] + ["phase"] * self.show_phase + ["machine"] * self.show_machine
        return headers + ["world size"] * self.show_world_size + ["metric"] + list(self.variants)

    @property
    def results(self) -> list[Result]:
        return [r for by_variant in self.groups.values() for r in by_variant.values()]

    def key(self, group: _Group) -> list[str]:
        key = [group.family, group.size] + [group.phase] * self.show_phase + [group.machine] * self.show_machine
        return key + [str(group.world_size)] * self.show_world_size

    def where(self, group: _Group) -> str:
        where = f"{group.family}-{group.size}" + f" ({group.phase})" * self.show_phase
        where += f" on {group.machine}" * self.show_machine
        return where + f" at world size {group.world_size}" * self.show_world_size


def _caption(layout: _Layout) -> str:
    caption = (
        f"In parentheses: the ratio to {REFERENCE_VARIANT} in the same row (x), or the"
        " difference in percentage points (pp). A cell without a number names why in a note;"
        f" {NOT_RUN} means not run."
    )
    if layout.show_phase:
        caption += f" Each row compares a phase (train or infer) with {REFERENCE_VARIANT} in that phase."
    return caption


def _build_table(name: TableName, layout: _Layout) -> Table:
    rows: list[list[str]] = []
    notes = Notes()
    left_out: dict[tuple[str, str], list[str]] = {}  # (metric, reasons) -> groups
    metrics = table_metrics(name)
    for group, by_variant in layout.groups.items():
        if TABLE_PHASES.get(name, group.phase) != group.phase:
            continue  # Compression: inference rows only; Time to accuracy: training rows only
        reference = by_variant.get(REFERENCE_VARIANT)
        cells = [by_variant.get(v) for v in layout.variants]
        ran = [r for r in cells if r is not None]
        if not any(r.status == "ok" for r in ran):  # one row says why nothing was measured
            rows.append(layout.key(group) + [NOTHING_MEASURED] + [format_cell(_ANY, r, notes=notes) for r in cells])
            continue
        for metric in metrics:
            absent = [r for r in ran if r.status == "ok" and r.value(metric.key) is None]
            if absent and not any(r.value(metric.key) is not None for r in ran):
                # measured nowhere in this row although some variants ran: a note, not a row
                reasons = "; ".join(dict.fromkeys(r.absent_reason(metric.key) for r in absent))
                left_out.setdefault((metric.label, reasons), []).append(layout.where(group))
                continue
            row = [format_cell(metric, r, reference, notes, with_contended=False) for r in cells]
            rows.append(layout.key(group) + [metric.label] + row)
        if name == "throughput" and has_timing_facts(ran):
            rows.append(layout.key(group) + [TIMING_ROW] + [timing_cell(r) if r else NOT_RUN for r in cells])
    timing_row = name == "throughput" and has_timing_facts(layout.results)
    lines = notes.lines() + mark_notes(layout.results, metrics, with_contended=timing_row)
    if any(m.timing is not None and m.ratio == "ratio" for m in metrics) and has_intervals(layout.results):
        lines.append(INTERVAL_NOTE)
    if timing_row:
        lines.append(TIMING_NOTE)
    for (label, reasons), where_list in left_out.items():
        scope = "in every row" if len(where_list) == len(layout.groups) else ", ".join(where_list)
        lines.append(f"{label} left out ({scope}): absent, {shorten(reasons, 2 * MAX_REASON)}")
    return Table(TABLE_TITLES[name], layout.headers, rows, _caption(layout), lines)


def build_tables(runs: Sequence[Run]) -> list[Table]:
    """The tables of ``runs``: Throughput, Accuracy, Efficiency; Compression with inference
    results, Time to accuracy with time-to-accuracy results (``OPTIONAL_TABLES``)."""
    groups = _groups(runs)
    results = [r for by_variant in groups.values() for r in by_variant.values()]
    variants = sorted({r.variant for r in results}, key=variant_rank)
    layout = _Layout(
        groups,
        variants,
        show_machine=len({g.machine for g in groups}) > 1,
        show_world_size=len({g.world_size for g in groups}) > 1,
        show_phase=len({g.phase for g in groups}) > 1,
    )
    tables = []
    for name in TABLES:
        keys = [m.key for m in table_metrics(name)]
        if name in OPTIONAL_TABLES and not any(r.value(k) is not None for r in results for k in keys):
            continue  # no inference results: no Compression table; no --time-to-accuracy: no such table
        tables.append(_build_table(name, layout))
    return tables


# ---------------------------------------------------------------------------------------
# rendering


def _latex_escape(text: str) -> str:
    replacements = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "±": r"$\pm$",
    }
    return re.sub(r"[\\&%$#_{}~^±]", lambda m: replacements[m.group()], text)


@dataclass(frozen=True)
class _Style:
    heading: Callable[[str], str]
    paragraph: Callable[[str], str]
    notes: Callable[[list[str]], str]
    cell: Callable[[str], str] = str


def _markdown_notes(notes: list[str]) -> str:
    return "\n".join(f"- {note}" for note in notes)


_MARKDOWN = _Style(
    heading=lambda title: f"## {title}",
    paragraph=lambda text: text,
    notes=_markdown_notes,
    cell=lambda text: text.replace("|", "\\|"),
)
_STYLES: dict[str, _Style] = {
    "github": _MARKDOWN,
    "pipe": _MARKDOWN,
    "plain": _Style(
        heading=lambda title: f"{title}\n{'=' * len(title)}",
        paragraph=lambda text: text,
        notes=_markdown_notes,
    ),
    "html": _Style(
        heading=lambda title: f"<h2>{html.escape(title)}</h2>",
        paragraph=lambda text: f'<p class="caption">{html.escape(text)}</p>',
        notes=lambda notes: (
            '<ul class="notes">\n' + "\n".join(f"<li>{html.escape(note)}</li>" for note in notes) + "\n</ul>"
        ),
    ),
    "latex": _Style(
        heading=lambda title: f"\\subsection*{{{_latex_escape(title)}}}",
        paragraph=lambda text: _latex_escape(text),
        notes=lambda notes: (
            "\\begin{itemize}\n" + "\n".join(f"\\item {_latex_escape(note)}" for note in notes) + "\n\\end{itemize}"
        ),
    ),
}


def check_format(fmt: str) -> _Style:
    if fmt not in _STYLES:
        raise ReportError(f"format {fmt!r}: expected one of {', '.join(FORMATS)}")
    return _STYLES[fmt]


def render(table: Table, fmt: str = "github") -> str:
    """One table with its heading, caption and notes, in ``fmt``."""
    style = check_format(fmt)
    rows = [[style.cell(cell) for cell in row] for row in table.rows]
    headers = [style.cell(header) for header in table.headers]
    body = tabulate(rows, headers=headers, tablefmt=fmt, disable_numparse=True)
    if fmt == "html":  # tabulate pads HTML cells like text columns
        body = re.sub(r" +</t([dh])>", r"</t\1>", body)
    parts = [style.heading(table.title)]
    if table.caption:
        parts.append(style.paragraph(table.caption))
    parts.append(body)
    if table.notes:
        parts.append(style.notes(table.notes))
    return "\n\n".join(parts) + "\n"


def render_all(tables: Sequence[Table], fmt: str = "github") -> str:
    return "\n".join(render(table, fmt) for table in tables)


def _as_runs(
    results: Sequence[Mapping[str, Any]] | Run | Sequence[Run],
    label: str | None,
    machine_info: Mapping[str, Any] | None,
) -> list[Run]:
    if isinstance(results, Run):
        return [results]
    if all(isinstance(item, Run) for item in results):
        return [item for item in results if isinstance(item, Run)]
    if any(isinstance(item, Run) for item in results):
        raise TypeError("render_tables: give extra_info dicts or Runs, not both")
    return [run_from_extra_info(results, machine_info, label)]  # type: ignore[arg-type]


def render_tables(
    results: Sequence[Mapping[str, Any]] | Run | Sequence[Run],
    fmt: str = "github",
    *,
    label: str | None = None,
    machine_info: Mapping[str, Any] | None = None,
) -> str:
    """The Throughput, Accuracy and Efficiency tables of ``results`` in ``fmt``.

    ``results``: archbench ``extra_info`` dicts of one session (``label`` and
    ``machine_info`` name its machine), a Run, or a list of Runs. Raises ReportError for
    input that does not follow the schema or holds no result.
    """
    check_format(fmt)
    runs = _as_runs(results, label, machine_info)
    if not any(run.results for run in runs):
        raise ReportError(f"{runs[0].source if runs else '<session>'}: no benchmark results")
    return render_all(build_tables(runs), fmt)
