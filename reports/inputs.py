"""What a command-line input names: a results file, a directory or a pytest-benchmark storage id.

Every command that takes inputs (``table``, ``compare``, ``plot``, ``html``, ``check``)
reads one run per input:

- a file: ``*.jsonl`` streamed results, anything else pytest-benchmark JSON;
- a **directory: its newest run**. Its runs are its ``*.jsonl`` files (``--results-dir``
  writes one ``results-<stamp>-<pid>.jsonl`` per session); without any, the runs
  pytest-benchmark saved there or one machine folder down (``.benchmarks``,
  ``NNNN_<commit>_<YYYYMMDD_HHMMSS>.json``). Newest means the latest ``datetime`` of a
  jsonl file's machine line, else the timestamp in the file name, else the file's
  modification time (ties: the later name). When the directory holds more than one run, a
  warning says how many older runs were ignored; give a file to pick another;
- anything else: a storage id such as ``0001``, ``0001_<commit>_<date>`` or
  ``<machine-dir>/0001``, looked up as ``<storage>/*/0001_*.json``.

API::

    load_input(text, storage=".benchmarks") -> Run
    load_inputs(inputs, storage=".benchmarks") -> list[Run]   # what the CLI calls
    newest_run(directory) -> tuple[Path, int]                 # the file, how many runs
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from reports.errors import ReportError, ReportWarning
from reports.files import path_kind
from reports.load import Run, load_file, warn_mixed_corpora

DEFAULT_STORAGE = Path(".benchmarks")

_STORAGE_ID = re.compile(r"^(?:(?P<machine>[^/\\]+)[/\\])?(?P<name>\d{4}(?:_[^/\\]*)?)$")
_SAVED_RUN = re.compile(r"^(?P<counter>\d{4})_.*\.json$")
_NAME_STAMP = re.compile(r"(?<!\d)(\d{8})[T_](\d{6})(?!\d)")
_MACHINE_LINE_LIMIT = 1 << 20  # bytes read to find a jsonl file's datetime


def _entries(directory: Path, strict: bool = True) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as scan:
            return sorted(scan, key=lambda entry: entry.name)
    except OSError as error:
        if not strict:
            return []
        raise ReportError(f"{directory}: cannot read directory ({error.strerror or error})") from None


def _is_file(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _runs_in(directory: Path) -> list[Path]:
    """A directory's jsonl files, else the runs pytest-benchmark saved in it or one folder down."""
    entries = _entries(directory)
    streamed = [Path(e.path) for e in entries if e.name.endswith(".jsonl") and _is_file(e)]
    if streamed:
        return streamed
    folders = [Path(e.path) for e in entries if _is_folder(e)]
    candidates = entries + [e for folder in folders for e in _entries(folder, strict=False)]
    return [Path(e.path) for e in candidates if _SAVED_RUN.match(e.name) and _is_file(e)]


def _as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)


def _machine_line_time(path: Path) -> dt.datetime | None:
    """The ``datetime`` of a jsonl file's first line, if it is a machine line that has one."""
    try:
        with path.open("rb") as file:
            record = json.loads(file.readline(_MACHINE_LINE_LIMIT))
        return _as_utc(dt.datetime.fromisoformat(record["datetime"]))
    except (OSError, ValueError, TypeError, KeyError, IndexError, RecursionError, OverflowError):
        return None  # not readable here: the name or mtime decides; loading it says what is wrong


def _name_time(path: Path) -> dt.datetime | None:
    match = _NAME_STAMP.search(path.name)
    try:
        return None if match is None else _as_utc(dt.datetime.strptime("".join(match.groups()), "%Y%m%d%H%M%S"))
    except ValueError:
        return None


def _mtime(path: Path) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
    except (OSError, OverflowError, ValueError):
        return dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def _run_time(path: Path) -> tuple[dt.datetime, str]:
    recorded = _machine_line_time(path) if path.suffix == ".jsonl" else None
    return (recorded or _name_time(path) or _mtime(path), path.name)


def newest_run(directory: Path) -> tuple[Path, int]:
    """The newest run in ``directory`` and how many runs it holds (see the module docstring)."""
    runs = _runs_in(directory)
    if not runs:
        raise ReportError(f"{directory}: directory has no *.jsonl results files and no saved runs (NNNN_*.json)")
    return max(runs, key=_run_time), len(runs)


def _storage_file(text: str, storage: Path) -> Path:
    match = _STORAGE_ID.match(text)
    if match is None:
        raise ReportError(f"{text}: no such file or directory")
    machine = match["machine"] or "*"
    name = match["name"].removesuffix(".json")
    try:
        found = sorted(set(storage.glob(f"{machine}/{name}.json")) | set(storage.glob(f"{machine}/{name}_*.json")))
    except OSError as error:
        raise ReportError(f"{storage}: cannot read pytest-benchmark storage ({error.strerror or error})") from None
    if not found:
        raise ReportError(f"{text}: no such file, and no {storage}/{machine}/{name}_*.json in pytest-benchmark storage")
    if len(found) > 1:
        names = ", ".join(str(p) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ReportError(f"{text}: ambiguous storage id, matches {names}")
    return found[0]


def load_input(text: str | Path, storage: str | Path = DEFAULT_STORAGE) -> Run:
    """One command-line input's run: a file, a directory's newest run or a storage id."""
    path = Path(text)
    kind = path_kind(path)
    if kind == "directory":
        newest, count = newest_run(path)
        if count > 1:
            message = (
                f"{path}: holds {count} runs; using the newest, {newest.name}"
                f" ({count - 1} older ignored: give a file to pick one)"
            )
            warnings.warn(message, ReportWarning, stacklevel=2)
        return load_file(newest)
    if kind is not None:
        return load_file(path)  # a FIFO or device too: reading it refuses it in one line
    return load_file(_storage_file(str(text), Path(storage)))


def load_inputs(inputs: Sequence[str | Path], storage: str | Path = DEFAULT_STORAGE) -> list[Run]:
    """Every input's run. Runs without results are dropped with a warning; an error if all are."""
    if not inputs:
        raise ReportError("no input: give a results JSON/jsonl file, directory or storage id")
    runs = [load_input(text, storage) for text in inputs]
    with_results = [run for run in runs if run.results]
    if not with_results:
        raise ReportError(f"{runs[0].source}: no benchmark results")
    for run in runs:
        if not run.results:
            warnings.warn(f"{run.source}: no benchmark results, ignored", ReportWarning, stacklevel=2)
    warn_mixed_corpora(with_results)
    return with_results
