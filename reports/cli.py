"""``python -m reports``: table, compare, plot, html and check.

Exit status: 0 done, 2 unusable input: one line on stderr, ``error: <file>: <problem>``,
no traceback, and no warning besides it. Warnings (``warning: ...``, one line each) are
printed after a command that succeeded. ``check`` belongs to ``reports.check``, imported
only when asked for; it is called as ``reports.check.main(argv, stdout) -> int`` with the
arguments after ``check`` (exit 0 ok, 1 regression, 2 unusable input). Inputs are read by
``reports.inputs`` (a directory means its newest run).

Malformed input is refused where it is read (``reports.files``, ``reports.validate``,
``reports.load``); the guard in :func:`main` only keeps a bug in reports to one line too
(``REPORTS_TRACEBACK=1`` shows its traceback).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from reports.errors import ReportError, ReportWarning, one_line
from reports.inputs import DEFAULT_STORAGE, load_inputs
from reports.metrics import METRICS
from reports.table import FORMATS

TABLE_FORMATS = (*FORMATS, "csv")  # csv: the numbers, a row per result and metric (reports.csvout)

EXIT_OK = 0
EXIT_UNUSABLE = 2
INPUT_HELP = (
    "pytest-benchmark JSON file, results-*.jsonl file, results directory (its newest run),"
    " or pytest-benchmark storage id such as 0001"
)


def _add_inputs(parser: argparse.ArgumentParser, nargs: str = "+") -> None:
    parser.add_argument("inputs", nargs=nargs, metavar="INPUT", help=INPUT_HELP)
    parser.add_argument(
        "--storage",
        default=str(DEFAULT_STORAGE),
        help="pytest-benchmark storage to look storage ids up in (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reports", description="archbench reports")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    table = commands.add_parser("table", help="Throughput, Accuracy and Efficiency tables")
    _add_inputs(table)
    table.add_argument(
        "--format", choices=TABLE_FORMATS, default="github", help="table format, or csv (default: %(default)s)"
    )
    table.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")

    compare = commands.add_parser("compare", help="hardware comparison, one column per machine")
    _add_inputs(compare)
    compare.add_argument("--metric", choices=list(METRICS), default="samples_per_s", help="default: %(default)s")
    compare.add_argument(
        "--format", choices=TABLE_FORMATS, default="github", help="table format, or csv (default: %(default)s)"
    )
    compare.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")

    plot = commands.add_parser("plot", help="scaling curves as PNG files")
    _add_inputs(plot)
    plot.add_argument("--output-dir", "-o", default="plots", metavar="DIR", help="default: %(default)s")

    report = commands.add_parser("html", help="self-contained HTML report")
    _add_inputs(report)
    report.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    report.add_argument("--title", default="archbench report")

    commands.add_parser(
        "check",
        help="regression gate: check --baseline BASE.json NEW.json (reports.check)",
        add_help=False,
    )
    return parser


def _emit(text: str, output: str | None, stdout: TextIO) -> None:
    if output is None:
        stdout.write(text)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as error:
        raise ReportError(f"{output}: cannot write ({error.strerror})") from None
    print(f"wrote {output}", file=sys.stderr)


def _run_check(argv: list[str], stdout: TextIO) -> int:
    try:
        check = importlib.import_module("reports.check")
    except ModuleNotFoundError as error:
        if error.name != "reports.check":
            raise
        print("error: check is not available: reports/check.py is not installed", file=sys.stderr)
        return EXIT_UNUSABLE
    if not hasattr(check, "main"):
        print("error: check is not available: reports.check has no main(argv)", file=sys.stderr)
        return EXIT_UNUSABLE
    return int(check.main(argv, stdout=stdout))


def _dispatch(argv: list[str], stdout: TextIO) -> int:
    if argv[:1] == ["check"]:
        return _run_check(argv[1:], stdout)
    args = build_parser().parse_args(argv)
    if args.command == "table":
        from reports.csvout import results_csv
        from reports.table import build_tables, render_all

        runs = load_inputs(args.inputs, args.storage)
        text = results_csv(runs) if args.format == "csv" else render_all(build_tables(runs), args.format)
        _emit(text, args.output, stdout)
    elif args.command == "compare":
        from reports.compare import build_comparison, machine_columns
        from reports.csvout import comparison_csv
        from reports.table import render

        loaded = [(text, load_inputs([text], args.storage)) for text in args.inputs]
        columns = machine_columns(loaded)
        table = build_comparison(columns, args.metric)  # also checks the inputs, for csv too
        _emit(comparison_csv(columns, args.metric) if args.format == "csv" else render(table, args.format),
              args.output, stdout)  # fmt: skip
    elif args.command == "plot":
        from reports.plot import write_plots

        for path in write_plots(load_inputs(args.inputs, args.storage), args.output_dir):
            print(path, file=stdout)
    elif args.command == "html":
        from reports.html import render_html

        _emit(render_html(load_inputs(args.inputs, args.storage), args.title), args.output, stdout)
    return EXIT_OK


def _bug(argv: Sequence[str], error: Exception) -> str:
    """The one line for an exception reports did not expect: a bug, whatever the input."""
    inputs = " ".join(arg for arg in argv[1:] if not arg.startswith("-")) or "(no input)"
    return (
        f"error: {inputs}: {type(error).__name__}: {one_line(error)[:200]}"
        " (a bug in reports, not an answer about the input: please report it;"
        " REPORTS_TRACEBACK=1 shows the traceback)"
    )


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """Run one command; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            status = _dispatch(argv, stdout or sys.stdout)
        except ReportError as error:
            print(f"error: {one_line(error)}", file=sys.stderr)
            return EXIT_UNUSABLE
        except BrokenPipeError:  # `python -m reports table ... | head`
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except Exception as error:  # last resort, see the module docstring
            if os.environ.get("REPORTS_TRACEBACK"):
                raise
            print(_bug(argv, error), file=sys.stderr)
            return EXIT_UNUSABLE
    if status != EXIT_UNUSABLE:  # on unusable input, the error line alone
        for warning in caught:
            prefix = "" if issubclass(warning.category, ReportWarning) else f"{warning.category.__name__}: "
            print(f"warning: {prefix}{one_line(warning.message)}", file=sys.stderr)
    return status
