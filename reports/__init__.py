"""archbench reports: what the user reads (tables, comparison, plots, HTML).

Reads pytest-benchmark JSON and streamed ``results-*.jsonl`` files only; never imports
torch. matplotlib is imported only by ``reports.plot`` when a plot is drawn.

Modules: ``schema`` (the vocabulary: statuses, phases, the id format), ``metrics`` (the
one metrics table and number formats), ``errors`` (``ReportError``, one-line messages),
``files`` (bytes on disk -> strict JSON), ``validate`` (every field reports read),
``load`` (JSON and jsonl files -> ``Run``/``Result``), ``inputs`` (what a command-line
input names; a directory means its newest run), ``trust`` (intervals of ratios, the ``~`` and
``contended`` marks), ``table`` (the three tables, ``render_tables``), ``compare`` (hardware
comparison), ``beforeafter`` (runs of one machine side by side), ``csvout`` (``--format
csv``), ``plot`` (scaling curves), ``charts`` (per-case telemetry and step times, a metric
across machines), ``html`` (report), ``check`` (regression gate: ``thresholds``, ``gate``,
``check_output``), ``cli``; ``synthetic`` builds schema-shaped fake results for tests and
``bench_render`` (which times the tables of 500 benchmarks: ``python -m reports.bench_render``).
"""

from reports.inputs import load_inputs
from reports.load import ReportError, Result, Run
from reports.metrics import METRICS, SCHEMA, Metric
from reports.table import render_tables

__all__ = [
    "METRICS",
    "SCHEMA",
    "Metric",
    "ReportError",
    "Result",
    "Run",
    "load_inputs",
    "render_tables",
]
