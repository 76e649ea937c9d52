"""A self-contained HTML report: contents, machines, before/after, the tables, the hardware
comparison with its chart, the scaling plots and every case's telemetry and step times.

Everything is inline (CSS in a ``<style>`` element, plots as base64 PNG ``data:`` URIs), so
the file opens anywhere without network access. Sections:

- **Machines**: each run's machine and software, the session's matmul peaks, rounded;
- **Before and after** (when two or more runs come from one machine, e.g. ``html before.json
  after.json``): every metric of each benchmark in every run, with the later runs' ratios to the
  first (``reports.beforeafter``);
- **Throughput, Accuracy, Efficiency**: the tables (of the last run of each machine), with
  intervals and marks (``~`` unstable, ``contended``) as ``reports.table`` writes them;
- **Hardware comparison** (runs from more than one machine): the samples/s table and a chart
  of it across machines, each bar with its 95% interval;
- **Scaling**: ``reports.plot``'s curves;
- **Cases**: per case that ran, its telemetry (memory in MiB, power in W where measured,
  utilization in %) over the timed window and the histogram of its step times (ms), with the
  median and its interval, titled with the machine (``reports.charts``).

API::

    render_html(runs, title="archbench report") -> str
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from reports.beforeafter import before_after, same_machine_runs
from reports.charts import case_png, machines_png
from reports.compare import build_comparison, machine_columns
from reports.load import ReportError, Result, Run
from reports.metrics import format_time
from reports.plot import render_pngs
from reports.table import Table, build_tables, render
from reports.trust import contended, contention_text, step_interval, unstable

MAX_CASES = 80  # case figures in one report; more are left out, with a note

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2em; }
nav ul { columns: 2; max-width: 700px; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
.caption, .notes, .case { color: #555; font-size: 0.9em; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""

_MACHINE_FACTS = (
    ("torch", "torch"),
    ("cuda", "CUDA"),
    ("deepspeed", "DeepSpeed"),
    ("driver", "driver"),
    ("gpu_name", "GPU"),
    ("gpu_count", "GPUs"),
    ("cpu_model", "CPU"),
    ("cpu_cores", "cores"),
    ("torch_threads", "torch threads"),
)


def slug(text: str) -> str:
    """An element id for a heading: ``Hardware comparison: samples/s`` -> ``hardware-comparison-samples-s``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _round(value: object) -> str:
    """A fact as text; a float with the three significant digits it can carry."""
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _machine_rows(run: Run) -> list[tuple[str, str]]:
    facts: Mapping[str, Any] = run.facts
    when = re.sub(r"(\d\d:\d\d:\d\d)\.\d+", r"\1", run.datetime or "unknown")  # no microseconds
    rows = [("machine", run.label), ("source", run.source), ("date", when)]
    rows += [(label, _round(facts[key])) for key, label in _MACHINE_FACTS if facts.get(key) is not None]
    peak = facts.get("peak_tflops")
    if isinstance(peak, Mapping) and peak:
        rows.append(("matmul peak", ", ".join(f"{k} {_round(float(v))} TFLOP/s" for k, v in peak.items())))
    rows.append(("results", str(len(run.results))))
    return rows


def _machine_section(runs: Sequence[Run]) -> str:
    parts = []
    for run in runs:
        cells = "\n".join(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in _machine_rows(run)
        )
        parts.append(f"<table>\n{cells}\n</table>")
    return "\n".join(parts)


def _img(name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    return f'<p class="notes">{html.escape(text)}</p>'


def _plot_section(runs: Sequence[Run]) -> str:
    try:
        pngs = render_pngs(runs)
    except ReportError as error:  # matplotlib missing: the report without plots
        return _note(str(error))
    return "\n".join(
        f"<figure>{_img(name, png)}<figcaption>{html.escape(name)}</figcaption></figure>" for name, png in pngs.items()
    )


def _comparison(runs: Sequence[Run]) -> tuple[str, str] | None:
    """The hardware comparison table and its chart, or None for runs of one machine."""
    labels = list(dict.fromkeys(run.label for run in runs))
    if len(labels) < 2:
        return None
    columns = machine_columns([(label, [run for run in runs if run.label == label]) for label in labels])
    try:
        table = build_comparison(columns)
    except ReportError as error:
        return "Hardware comparison", _note(str(error))
    body = _table_body(table)
    try:
        png = machines_png(columns)
    except ReportError as error:
        return table.title, body + _note(str(error))
    chart = "" if png is None else f"<figure>{_img(table.title, png)}</figure>"
    return table.title, body + "\n" + chart


def _case_summary(result: Result) -> str:
    parts = []
    median, ci = result.value("step_time_s"), step_interval(result)
    if median is not None:
        text = f"median step {format_time(median)}"
        if ci is not None:
            text += f", 95% CI {format_time(ci[0])} to {format_time(ci[1])}"
        parts.append(text)
    rounds = len(result.extra_info.get("step_times_s") or [])
    if rounds:
        parts.append(f"{rounds} rounds")
    stop = result.extra_info.get("timing_stop")
    if isinstance(stop, str):
        parts.append(f"timing stopped: {stop}")
    if unstable(result):
        parts.append("unstable")
    if contended(result):
        parts.append(f"contended ({contention_text(result)})")
    return "; ".join(parts)


def _cases_section(runs: Sequence[Run]) -> str:
    cases = [(run.label, r) for run in runs for r in sorted(run.results, key=lambda r: r.order) if r.status == "ok"]
    parts = []
    for label, result in cases[:MAX_CASES]:
        try:
            png = case_png(result, label)
        except ReportError as error:
            return _note(str(error))
        name = f"{result.id} on {label}" + (f" (world size {result.world_size})" if result.world_size > 1 else "")
        parts.append(f'<h3 id="case-{slug(name)}">{html.escape(name)}</h3>')
        parts.append(f'<p class="case">{html.escape(_case_summary(result))}</p>')
        parts.append(_note("no telemetry and no step times") if png is None else _img(name, png))
    if len(cases) > MAX_CASES:
        parts.append(_note(f"{len(cases) - MAX_CASES} more cases left out (at most {MAX_CASES} per report)"))
    return "\n".join(parts) or _note("no case ran")


def _table_body(table: Table) -> str:
    """A rendered table without its heading (the section gives it)."""
    return render(table, "html").split("\n\n", 1)[1]


def _latest_per_machine(runs: Sequence[Run]) -> list[Run]:
    """The last run of every machine, in the order the machines first appear."""
    latest = {run.label: run for run in runs}
    return [latest[label] for label in dict.fromkeys(run.label for run in runs)]


def sections(runs: Sequence[Run]) -> list[tuple[str, str]]:
    """``(title, html)`` of every section, in report order."""
    shown = _latest_per_machine(runs)
    found = [("Machines", _machine_section(runs))]
    for label, group in same_machine_runs(runs).items():
        table = before_after(group)
        found.append((table.title, _table_body(table)))
        note = f"The tables below show the last run of {label} ({group[-1].source})."
        found[-1] = (found[-1][0], found[-1][1] + "\n" + _note(note))
    found += [(table.title, _table_body(table)) for table in build_tables(shown)]
    comparison = _comparison(shown)
    if comparison is not None:
        found.append(comparison)
    found.append(("Scaling", _plot_section(shown)))
    found.append(("Cases", _cases_section(shown)))
    return found


def render_html(runs: Sequence[Run], title: str = "archbench report") -> str:
    """The whole report as one HTML document."""
    found = sections(runs)
    toc = "\n".join(f'<li><a href="#{slug(name)}">{html.escape(name)}</a></li>' for name, _ in found)
    body = "\n".join(f'<h2 id="{slug(name)}">{html.escape(name)}</h2>\n{content}' for name, content in found)
    machines = ", ".join(dict.fromkeys(run.label for run in runs))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n<p>{html.escape(machines)}</p>\n"
        f"<nav><h2>Contents</h2>\n<ul>\n{toc}\n</ul></nav>\n{body}\n</body>\n</html>\n"
    )
