"""A self-contained HTML report: machine facts, the three tables, the scaling plots.

Everything is inline (CSS in a ``<style>`` element, plots as base64 PNG ``data:`` URIs),
so the file opens anywhere without network access. When the runs come from more than
one machine, a hardware comparison of samples/s follows the tables.

API::

    render_html(runs, title="archbench report") -> str
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from typing import Any

from reports.compare import build_comparison, machine_columns
from reports.load import ReportError, Run
from reports.plot import render_pngs
from reports.table import build_tables, render

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
.caption, .notes { color: #555; font-size: 0.9em; }
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
)


def _machine_rows(run: Run) -> list[tuple[str, str]]:
    archbench: Mapping[str, Any] = run.machine_info.get("archbench") or {}
    rows = [("machine", run.label), ("source", run.source), ("date", run.datetime or "unknown")]
    rows += [(label, str(archbench[key])) for key, label in _MACHINE_FACTS if archbench.get(key) is not None]
    peak = archbench.get("peak_tflops")
    if isinstance(peak, Mapping) and peak:
        rows.append(("peak TFLOP/s", ", ".join(f"{k} {v}" for k, v in peak.items())))
    rows.append(("results", str(len(run.results))))
    return rows


def _machine_section(runs: Sequence[Run]) -> str:
    parts = ["<h2>Machines</h2>"]
    for run in runs:
        cells = "\n".join(
            f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>" for name, value in _machine_rows(run)
        )
        parts.append(f"<table>\n{cells}\n</table>")
    return "\n".join(parts)


def _plot_section(runs: Sequence[Run]) -> str:
    parts = ["<h2>Scaling</h2>"]
    try:
        pngs = render_pngs(runs)
    except ReportError as error:  # matplotlib missing: the report without plots
        return f'{parts[0]}\n<p class="notes">{html.escape(str(error))}</p>'
    for name, png in pngs.items():
        data = base64.b64encode(png).decode("ascii")
        parts.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
        parts.append(f"<figcaption>{html.escape(name)}</figcaption></figure>")
    return "\n".join(parts)


def render_html(runs: Sequence[Run], title: str = "archbench report") -> str:
    """The whole report as one HTML document."""
    sections = [_machine_section(runs)]
    sections += [render(table, "html") for table in build_tables(runs)]
    labels = list(dict.fromkeys(run.label for run in runs))
    if len(labels) > 1:
        columns = machine_columns([(label, [run for run in runs if run.label == label]) for label in labels])
        try:
            sections.append(render(build_comparison(columns), "html"))
        except ReportError as error:
            sections.append(f'<h2>Hardware comparison</h2>\n<p class="notes">{html.escape(str(error))}</p>')
    sections.append(_plot_section(runs))
    body = "\n".join(sections)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body>\n</html>\n"
    )
