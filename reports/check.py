"""``python -m reports check --baseline BASE NEW``: the regression gate.

Compares every benchmark present in both runs (same id and world size), each metric in its
own direction (``reports.metrics.METRICS``), and exits 0 when nothing regressed, 1 on a
regression, 2 on unusable input (one line on stderr naming the file).

How a metric is judged (``RULES``):

- **Timing** (``step_time_s``; ``samples_per_s``, ``tokens_per_s``, ``tflops`` derived from
  it): the relative change of the value (the median step time, or the throughput computed
  from it) must pass the threshold in the worse direction **and** a one-sided Mann-Whitney
  U test on the raw step times (``extra_info["step_times_s"]``) must give ``p < alpha``.
  The derived metrics are tested on per-step values of the same step times, so they carry
  the same evidence, not extra chances of a false alarm. Without raw times (an old file)
  the threshold alone decides, and the verdict says so. ``mfu`` divides by each session's
  own peak probe and is not gated unless asked for (``--threshold mfu=...``): its change
  would add the probe's noise to the step time's.
- **Accuracy**: the difference in percentage points; bits per byte (the text task) the
  relative change (no test: one held-out score per run).
- **Memory and energy**: the relative change (one number per run).
- **Status**: ``ok`` -> ``timeout``, ``oom`` or ``error`` (``reports.schema.FAILED_STATUSES``)
  is a regression, read from jsonl lines or from a pytest-benchmark JSON file's
  ``archbench.not_ok``; a benchmark in BASE but not in NEW (a JSON file written before
  ``not_ok`` leaves out cases that did not end ok) or newly skipped is reported as missing,
  and fails the gate only with ``--fail-on-missing``.

A metric that is null on either side is not compared; the table says why (its ``absent``
reason), never treating it as 0. Results from different machines (``label``, CPU model,
core count, GPU name or count in ``machine_info["archbench"]``) are refused unless
``--cross-machine``; a software change (torch, CUDA, DeepSpeed, driver, threads) is what a
gate is for, so it is reported in the header, not refused.

Values of unstable results (their step-time interval wider than ``stable_threshold``) end in
``~``, of contended ones in ``contended``, as in the tables; a note under the table explains.
Output: ``--format text`` (default), ``markdown`` (a CI summary page; ``--markdown``) or ``csv``
(a row per benchmark and metric), and ``--json FILE``.

Modules: ``reports.thresholds`` (rules, ``--threshold``), ``reports.gate`` (the judgement),
``reports.check_output`` (text, Markdown, CSV, JSON), this one (the command line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from reports.check_output import check_csv, render_markdown, render_text, report_json
from reports.errors import ReportError, one_line
from reports.gate import DEFAULT_ALPHA, EXIT_UNUSABLE, compare_runs
from reports.inputs import DEFAULT_STORAGE, load_input
from reports.load import Run, warn_mixed_corpora
from reports.thresholds import Thresholds, parse_threshold

FORMATS = ("text", "markdown", "csv")

# ---------------------------------------------------------------------------------------
# inputs and command line


def load_run(text: str, storage: str | Path) -> Run:
    """One run for BASE or NEW (``reports.inputs``: a file, a storage id such as ``0003``, or
    a directory, meaning its newest run); it must hold results."""
    run = load_input(text, storage)
    if not run.results:
        raise ReportError(f"{run.source}: no benchmark results")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports check",
        description="Regression gate: exit 0 nothing regressed, 1 regression, 2 unusable input.",
    )
    parser.add_argument(
        "--baseline",
        required=True,
        metavar="BASE",
        help="baseline: pytest-benchmark JSON, results-*.jsonl, storage id (0001), or a directory"
        " (results/ or .benchmarks: its newest run)",
    )
    parser.add_argument("new", metavar="NEW", help="the run to judge (same forms as BASE)")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="[ID_PATTERN:]METRIC=VALUE",
        help="e.g. step_time_s=0.08 or 8%%, accuracy=0.5pp (or 0.005), step_time_s=off,"
        " 'transformer-*:step_time_s=0.1' (fnmatch on the benchmark id); repeatable, last wins."
        " Defaults: step time and throughput 5%%, accuracy 0.5pp, memory and energy 10%%",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help="significance level of the step-time test (default: %(default)s)",
    )
    parser.add_argument(
        "--cross-machine",
        action="store_true",
        help="compare results from different machines (otherwise refused, exit 2)",
    )
    parser.add_argument(
        "--fail-on-missing",
        action="store_true",
        help="exit 1 when a benchmark of BASE is missing from NEW or newly skipped",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="text", help="text, markdown (a CI summary page) or csv (default: text)"
    )
    parser.add_argument("--markdown", action="store_true", help="the same as --format markdown")
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON to FILE")
    parser.add_argument(
        "--storage",
        default=str(DEFAULT_STORAGE),
        help="pytest-benchmark storage for storage ids (default: %(default)s)",
    )
    return parser


def run_check(args: argparse.Namespace, stdout: TextIO) -> int:
    if not 0 < args.alpha < 1:
        raise ReportError(f"--alpha {args.alpha:g}: must be between 0 and 1")
    thresholds = Thresholds([parse_threshold(text) for text in args.threshold])
    base = load_run(args.baseline, args.storage)
    new = load_run(args.new, args.storage)
    warn_mixed_corpora([base, new])
    report = compare_runs(base, new, thresholds, args.alpha, args.cross_machine, args.fail_on_missing)
    fmt = "markdown" if args.markdown else args.format
    renderers = {"text": render_text, "markdown": render_markdown, "csv": check_csv}
    stdout.write(renderers[fmt](report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report_json(report), indent=2), encoding="utf-8")
        except OSError as error:
            raise ReportError(f"{args.json}: cannot write ({error.strerror})") from None
    return report.exit_code


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """``python -m reports check ...``; returns the exit status (0, 1 or 2)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run_check(args, stdout or sys.stdout)
    except ReportError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_UNUSABLE
