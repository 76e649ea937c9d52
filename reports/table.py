"""The Throughput, Accuracy and Efficiency tables, and Time to accuracy when the results have it.

Rows are a family and a size (plus the machine and the world size when the input holds
more than one), one row per metric of the table (``reports.metrics.METRICS``); columns are
variants, ``fp32`` first. A cell is the value and, in parentheses, how it compares with
``fp32`` in the same row (``1.23k (0.52x)``, ``97.0% (-1.2 pp)``); a cell without a
number says why (``oom: ...``, ``skipped: ...``, ``absent: ...``) and ``-`` means the
benchmark was not run. A metric row with no value in any variant and a metric absent in
some (``tokens/s`` of a CNN) is left out and named in a note under the table.

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
    TABLE_TITLES,
    TABLES,
    Metric,
    format_ratio,
    format_value,
    table_metrics,
)
from reports.schema import REFERENCE_VARIANT, variant_rank

FORMATS = ("github", "pipe", "html", "latex", "plain")
NOT_RUN = "-"
NOTHING_MEASURED = "(all metrics)"
MAX_REASON = 60


@dataclass
class Table:
    """A titled table of strings: what every output format renders."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# cells


def shorten(text: str, width: int = MAX_REASON) -> str:
    """One line of at most ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def format_cell(metric: Metric, result: Result | None, reference: Result | None = None) -> str:
    """``value (ratio)`` for ``result``, or why it has no value; ``-`` when not run."""
    if result is None:
        return NOT_RUN
    value = result.value(metric.key)
    if value is None:
        return shorten(result.missing_reason(metric.key))
    text = format_value(metric, value)
    if reference is None or reference is result:
        return text
    reference_value = reference.value(metric.key)
    if reference_value is None or not (metric.across_phases or reference.phase == result.phase):
        return text
    compared = format_ratio(metric, value, reference_value)
    return text if compared is None else f"{text} ({compared})"


# ---------------------------------------------------------------------------------------
# building


_ANY = METRICS["samples_per_s"]  # for cells of results that did not run: any metric says why


@dataclass(frozen=True)
class _Group:
    """The rows of one family and size (on one machine, at one world size)."""

    family: str
    size: str
    machine: str
    world_size: int


def _groups(runs: Sequence[Run]) -> dict[_Group, dict[str, Result]]:
    """Results by row group and variant, groups in table order."""
    index = result_index(runs)
    machines = list(dict.fromkeys(run.label for run in runs))

    def order(item: tuple[tuple[str, int, str], Result]) -> tuple[Any, ...]:
        (machine, world_size, _), result = item
        return (result.order[:2], machines.index(machine), world_size)

    groups: dict[_Group, dict[str, Result]] = {}
    for (machine, world_size, _), result in sorted(index.items(), key=order):
        group = _Group(result.family, result.size, machine, world_size)
        groups.setdefault(group, {})[result.variant] = result
    return groups


def _variant_headers(results: Sequence[Result], variants: Sequence[str]) -> list[str]:
    """Variant names, with the phase when the results mix train and infer."""
    if len({r.phase for r in results}) <= 1:
        return list(variants)
    headers = []
    for variant in variants:
        phases = {r.phase for r in results if r.variant == variant}
        headers.append(f"{variant} ({phases.pop()})" if len(phases) == 1 else variant)
    return headers


def build_tables(runs: Sequence[Run]) -> list[Table]:
    """The three tables for all results of ``runs``."""
    groups = _groups(runs)
    results = [r for by_variant in groups.values() for r in by_variant.values()]
    variants = sorted({r.variant for r in results}, key=variant_rank)
    show_machine = len({g.machine for g in groups}) > 1
    show_world_size = len({g.world_size for g in groups}) > 1
    headers = ["family", "size"] + ["machine"] * show_machine
    headers += ["world size"] * show_world_size + ["metric"] + _variant_headers(results, variants)
    caption = (
        f"In parentheses: the ratio to {REFERENCE_VARIANT} in the same row (x), or the"
        " difference in percentage points (pp). A cell without a number says why;"
        f" {NOT_RUN} means not run."
    )
    if len({r.phase for r in results}) > 1:
        caption += " Per-step costs are compared only within the same phase (train or infer)."

    tables = []
    for name in TABLES:
        if name in OPTIONAL_TABLES and not any(m.key in r.extra_info for r in results for m in table_metrics(name)):
            continue
        rows: list[list[str]] = []
        left_out: dict[tuple[str, str], list[str]] = {}  # (metric, reasons) -> groups
        for group, by_variant in groups.items():
            key = [group.family, group.size] + [group.machine] * show_machine
            key += [str(group.world_size)] * show_world_size
            reference = by_variant.get(REFERENCE_VARIANT)
            cells = [by_variant.get(v) for v in variants]
            ran = [r for r in cells if r is not None]
            if not any(r.status == "ok" for r in ran):  # one row says why nothing was measured
                rows.append(key + [NOTHING_MEASURED] + [format_cell(_ANY, r) for r in cells])
                continue
            for metric in table_metrics(name):
                absent = [r for r in ran if r.status == "ok" and r.value(metric.key) is None]
                measured = [r for r in ran if r.value(metric.key) is not None]
                if absent and not measured:
                    # measured nowhere in this row although some variants ran: a note, not a row
                    reasons = "; ".join(dict.fromkeys(r.absent_reason(metric.key) for r in absent))
                    where = f"{group.family}-{group.size}" + f" on {group.machine}" * show_machine
                    where += f" at world size {group.world_size}" * show_world_size
                    left_out.setdefault((metric.label, reasons), []).append(where)
                    continue
                rows.append(key + [metric.label] + [format_cell(metric, r, reference) for r in cells])
        notes = []
        for (label, reasons), where_list in left_out.items():
            scope = "in every row" if len(where_list) == len(groups) else ", ".join(where_list)
            notes.append(f"{label} left out ({scope}): absent, {shorten(reasons, 2 * MAX_REASON)}")
        tables.append(Table(TABLE_TITLES[name], headers, rows, caption, notes))
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
    }
    return re.sub(r"[\\&%$#_{}~^]", lambda m: replacements[m.group()], text)


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
