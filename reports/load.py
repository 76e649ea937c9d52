"""Load archbench results into typed records.

Inputs (see ``docs/schema.md``):

- a pytest-benchmark JSON file (``--benchmark-json`` output or an autosaved run);
- a pytest-benchmark storage id such as ``0001``, ``0001_<commit>_<date>`` or
  ``<machine-dir>/0001``, looked up as ``<storage>/*/0001_*.json``;
- a streamed results file ``results-<session>.jsonl``, or a directory: then every
  ``*.jsonl`` file in it, each file one run.

API::

    load_inputs(inputs, storage=".benchmarks") -> list[Run]   # what the CLI calls
    load_input(input, storage=".benchmarks") -> list[Run]     # one argument
    load_json(path) -> Run
    load_jsonl(path) -> Run
    run_from_extra_info(dicts, machine_info=None, label=None) -> Run
    result_index(runs) -> dict[(machine, world_size, id), Result]

Unusable input raises :class:`ReportError` with the message ``"<file>: <problem>"``.
Dropped with a :class:`ReportWarning` instead: a truncated last line of a jsonl file (a
run killed mid-write) and benchmarks of other suites (no ``schema`` in ``extra_info``).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.metrics import METRICS
from reports.schema import (
    PHASES,
    SCHEMA,
    STATUSES,
    case_id,
    size_rank,
    variant_rank,
)

DEFAULT_STORAGE = Path(".benchmarks")


class ReportError(Exception):
    """Unusable input; ``str(error)`` is one line: ``"<file>: <problem>"``."""


class ReportWarning(UserWarning):
    """Input that is usable with a caveat (for example a truncated last jsonl line)."""


@dataclass(frozen=True)
class Result:
    """One benchmark: its archbench ``extra_info`` plus what pytest-benchmark recorded."""

    extra_info: Mapping[str, Any]
    name: str
    stats: Mapping[str, Any] | None = None
    fullname: str | None = None

    @property
    def id(self) -> str:
        return str(self.extra_info["id"])

    @property
    def family(self) -> str:
        return str(self.extra_info["family"])

    @property
    def size(self) -> str:
        return str(self.extra_info["size"])

    @property
    def variant(self) -> str:
        return str(self.extra_info["variant"])

    @property
    def phase(self) -> str:
        return str(self.extra_info.get("phase") or "train")

    @property
    def world_size(self) -> int:
        return int(self.extra_info.get("world_size", 1))

    @property
    def status(self) -> str:
        return str(self.extra_info["status"])

    @property
    def reason(self) -> str | None:
        reason = self.extra_info.get("reason")
        return None if reason is None else str(reason)

    @property
    def order(self) -> tuple[Any, ...]:
        """Sort key: family, then size (xs..xl), then variant (fp32 first), then world size."""
        return (self.family, size_rank(self.size), variant_rank(self.variant), self.world_size)

    def value(self, key: str) -> float | None:
        """The metric's value, or None when it is absent or the benchmark did not run."""
        if self.status != "ok":
            return None
        value = self.extra_info.get(key)
        return None if value is None else float(value)

    def absent_reason(self, key: str) -> str:
        """The ``absent`` entry for a metric the benchmark ran without measuring."""
        absent = self.extra_info.get("absent") or {}
        return str(absent.get(key) or "no reason given")

    def missing_reason(self, key: str) -> str:
        """Why ``value(key)`` is None: ``"oom: <reason>"``, ``"absent: <reason>"``, ..."""
        if self.status != "ok":
            return f"{self.status}: {self.reason or 'no reason given'}"
        return f"absent: {self.absent_reason(key)}"


@dataclass
class Run:
    """The results of one session on one machine."""

    machine_info: Mapping[str, Any]
    results: list[Result]
    source: str
    label: str = ""
    datetime: str | None = None
    _by_id: dict[tuple[str, int], Result] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.label:
            self.label = machine_label(self.machine_info)
        for result in self.results:
            key = (result.id, result.world_size)
            if key in self._by_id:
                raise ReportError(f"{self.source}: duplicate benchmark id {result.id!r} (world size {key[1]})")
            self._by_id[key] = result

    def get(self, benchmark_id: str, world_size: int = 1) -> Result | None:
        return self._by_id.get((benchmark_id, world_size))


def machine_label(machine_info: Mapping[str, Any]) -> str:
    """``machine_info["archbench"]["label"]``, else the GPU name, CPU brand or host name."""
    archbench = machine_info.get("archbench")
    if isinstance(archbench, Mapping):
        for key in ("label", "gpu_name", "cpu_model"):
            if isinstance(archbench.get(key), str) and archbench[key]:
                return str(archbench[key])
    cpu = machine_info.get("cpu")
    if isinstance(cpu, Mapping) and isinstance(cpu.get("brand_raw"), str) and cpu["brand_raw"]:
        return str(cpu["brand_raw"])
    node = machine_info.get("node")
    return str(node) if isinstance(node, str) and node else "unknown machine"


# ---------------------------------------------------------------------------------------
# validation


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mistyped(where: str, name: str, value: object, expected: str) -> ReportError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return ReportError(f"{where}: {name}: expected {expected}, got {_type_name(value)} {shown}")


def _object(value: object, where: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _mistyped(where, name, value, "an object")
    return value


def _unsupported_schema(schema: object) -> str:
    return f"schema {schema!r} is not supported (expected {SCHEMA!r})"


_REQUIRED_STR = ("id", "family", "size", "variant", "status")
_OPTIONAL_STR = ("phase", "device", "dtype", "reason", "mem_source", "energy_source")


def validate_extra_info(extra_info: object, where: str) -> dict[str, Any]:
    """Check the archbench fields reports use; return the dict or raise ReportError."""
    info = _object(extra_info, where, "extra_info")
    if "schema" not in info:
        raise ReportError(f"{where}: extra_info has no 'schema' (not an archbench result)")
    if info["schema"] != SCHEMA:
        raise ReportError(f"{where}: {_unsupported_schema(info['schema'])}")
    for key in _REQUIRED_STR:
        if key not in info:
            raise ReportError(f"{where}: extra_info: missing field {key!r}")
        if not isinstance(info[key], str) or not info[key]:
            raise _mistyped(where, key, info[key], "a non-empty string")
    for key in _OPTIONAL_STR:
        if info.get(key) is not None and not isinstance(info[key], str):
            raise _mistyped(where, key, info[key], "a string or null")
    if info["status"] not in STATUSES:
        raise ReportError(f"{where}: status {info['status']!r} is not one of {', '.join(STATUSES)}")
    phase = info.get("phase") or "train"
    if phase not in PHASES:
        raise ReportError(f"{where}: phase {phase!r} is not one of {', '.join(PHASES)}")
    expected_id = case_id(info["family"], info["size"], info["variant"], phase)
    if info["id"] != expected_id:
        raise ReportError(f"{where}: id {info['id']!r} does not match family, size, variant and phase {expected_id!r}")
    world_size = info.get("world_size", 1)
    if not _is_int(world_size) or world_size < 1:
        raise _mistyped(where, "world_size", world_size, "a positive integer")
    for key in METRICS:
        if info.get(key) is not None and not _is_number(info[key]):
            raise _mistyped(where, key, info[key], "a number or null")
    absent = info.get("absent")
    if absent is not None and not (
        isinstance(absent, dict) and all(v is None or isinstance(v, str) for v in absent.values())
    ):
        raise _mistyped(where, "absent", absent, "an object of metric -> reason")
    return info


# pytest-benchmark's `compare` reads these from every benchmark's stats.
_PYTEST_BENCHMARK_STATS = ("min", "max", "mean", "stddev", "median", "iqr", "rounds", "iterations")


def _validate_stats(value: object, where: str, required: bool) -> dict[str, Any] | None:
    """pytest-benchmark's stats: required in its JSON files, null allowed in jsonl lines."""
    if value is None and not required:
        return None
    stats = _object(value, where, "stats")
    for key in _PYTEST_BENCHMARK_STATS:
        if key not in stats:
            if required:
                raise ReportError(f"{where}: stats: missing field {key!r}")
        elif not _is_number(stats[key]):
            raise _mistyped(where, f"stats.{key}", stats[key], "a number")
    return stats


def _is_archbench(extra_info: object, where: str) -> bool:
    """False, with a warning, for another suite's benchmark: an extra_info without 'schema'."""
    if isinstance(extra_info, dict) and "schema" not in extra_info:
        message = f"{where}: no 'schema' in extra_info, not an archbench result: ignored"
        warnings.warn(message, ReportWarning, stacklevel=3)
        return False
    return True


def _result(value: object, where: str, stats_required: bool) -> Result | None:
    """The benchmark record, or None for a benchmark that is not archbench's."""
    entry = _object(value, where, "benchmark")
    name = entry.get("name")
    if not isinstance(name, str):
        raise _mistyped(where, "name", name, "a string")
    where = f"{where} ({name})"
    for key in ("extra_info", "stats") if stats_required else ("extra_info",):
        if key not in entry:
            raise ReportError(f"{where}: missing field {key!r}")
    if not _is_archbench(entry["extra_info"], where):
        return None
    extra_info = validate_extra_info(entry["extra_info"], where)
    stats = _validate_stats(entry.get("stats"), where, stats_required)
    fullname = entry.get("fullname")
    return Result(extra_info, name, stats, fullname if isinstance(fullname, str) else None)


def _machine_info(value: object, where: str) -> dict[str, Any]:
    machine_info = _object(value, where, "machine_info")
    if machine_info.get("archbench") is not None:
        _object(machine_info["archbench"], where, "machine_info.archbench")
    return machine_info


def _datetime(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _mistyped(where, "datetime", value, "a string")
    return value


# ---------------------------------------------------------------------------------------
# readers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not JSON (not UTF-8 text)") from None
    except OSError as error:
        raise ReportError(f"{path}: cannot read ({error.strerror})") from None


def load_json(path: str | Path) -> Run:
    """A pytest-benchmark JSON file (``--benchmark-json`` or a saved run)."""
    path = Path(path)
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ReportError(f"{path}: not JSON ({error.msg} at line {error.lineno} column {error.colno})") from None
    where = str(path)
    data = _object(data, where, "top level")
    for key in ("machine_info", "benchmarks"):
        if key not in data:
            raise ReportError(f"{where}: missing field {key!r} (not a pytest-benchmark JSON file)")
    machine_info = _machine_info(data["machine_info"], where)
    benchmarks = data["benchmarks"]
    if not isinstance(benchmarks, list):
        raise _mistyped(where, "benchmarks", benchmarks, "a list")
    records = (_result(entry, f"{where}: benchmarks[{i}]", True) for i, entry in enumerate(benchmarks))
    results = [result for result in records if result is not None]
    return Run(machine_info, results, where, datetime=_datetime(data.get("datetime"), where))


def load_jsonl(path: str | Path) -> Run:
    """A streamed ``results-<session>.jsonl`` file: a machine line, then benchmark lines."""
    path = Path(path)
    text = _read_text(path)
    lines = text.split("\n")
    machine_info: dict[str, Any] | None = None
    datetime: str | None = None
    results: list[Result] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: the writer was killed mid-line
                warnings.warn(f"{where}: truncated last line ignored", ReportWarning, stacklevel=2)
                break
            raise ReportError(f"{where}: not JSON ({error.msg} at column {error.colno})") from None
        record = _object(record, where, "line")
        kind = record.get("type")
        if kind == "machine":
            if machine_info is not None:
                raise ReportError(f"{where}: a second machine line (one session per results file)")
            if record.get("schema") != SCHEMA:
                raise ReportError(f"{where}: {_unsupported_schema(record.get('schema'))}")
            if "machine_info" not in record:
                raise ReportError(f"{where}: missing field 'machine_info'")
            machine_info = _machine_info(record["machine_info"], where)
            datetime = _datetime(record.get("datetime"), where)
        elif kind == "benchmark":
            if machine_info is None:
                raise ReportError(f"{where}: benchmark line before the machine line")
            result = _result(record, where, False)
            if result is not None:
                results.append(result)
        else:
            raise ReportError(f"{where}: type {kind!r} is neither 'machine' nor 'benchmark'")
    if machine_info is None:
        raise ReportError(f"{path}: no machine line (not an archbench results file)")
    return Run(machine_info, results, str(path), datetime=datetime)


def run_from_extra_info(
    results: Iterable[Mapping[str, Any]],
    machine_info: Mapping[str, Any] | None = None,
    label: str | None = None,
    source: str = "<session>",
) -> Run:
    """A Run from bare ``extra_info`` dicts (what the bench's conftest holds at session end)."""
    records = []
    for i, info in enumerate(results):
        where = f"{source}: result {i}"
        if _is_archbench(info, where):
            records.append(Result(validate_extra_info(dict(info), where), str(info.get("id", i))))
    return Run(dict(machine_info or {}), records, source, label=label or "")


_STORAGE_ID = re.compile(r"^(?:(?P<machine>[^/\\]+)[/\\])?(?P<name>\d{4}(?:_[^/\\]*)?)$")


def _storage_files(text: str, storage: Path) -> list[Path]:
    match = _STORAGE_ID.match(text)
    if match is None:
        raise ReportError(f"{text}: no such file or directory")
    machine = match["machine"] or "*"
    name = match["name"].removesuffix(".json")
    found = sorted(set(storage.glob(f"{machine}/{name}.json")) | set(storage.glob(f"{machine}/{name}_*.json")))
    if not found:
        raise ReportError(f"{text}: no such file, and no {storage}/{machine}/{name}_*.json in pytest-benchmark storage")
    if len(found) > 1:
        names = ", ".join(str(p) for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise ReportError(f"{text}: ambiguous storage id, matches {names}")
    return found


def _jsonl_files(directory: Path) -> list[Path]:
    files = sorted(p for p in directory.glob("*.jsonl") if p.is_file())
    if not files:
        raise ReportError(f"{directory}: directory has no *.jsonl results files")
    return files


def load_input(text: str | Path, storage: str | Path = DEFAULT_STORAGE) -> list[Run]:
    """One command-line input: a file, a results directory or a pytest-benchmark storage id."""
    path = Path(text)
    if path.is_dir():
        files = _jsonl_files(path)
    elif path.exists():
        files = [path]
    else:
        files = _storage_files(str(text), Path(storage))
    return [load_jsonl(f) if f.suffix == ".jsonl" else load_json(f) for f in files]


def load_inputs(inputs: Sequence[str | Path], storage: str | Path = DEFAULT_STORAGE) -> list[Run]:
    """Every input's runs. Runs without results are dropped with a warning; an error if all are."""
    if not inputs:
        raise ReportError("no input: give a results JSON/jsonl file, directory or storage id")
    runs = [run for text in inputs for run in load_input(text, storage)]
    with_results = [run for run in runs if run.results]
    if not with_results:
        raise ReportError(f"{runs[0].source}: no benchmark results")
    for run in runs:
        if not run.results:
            warnings.warn(f"{run.source}: no benchmark results, ignored", ReportWarning, stacklevel=2)
    return with_results


ResultKey = tuple[str, int, str]


def result_index(runs: Sequence[Run]) -> dict[ResultKey, Result]:
    """Results of all runs by ``(machine label, world size, id)``.

    Two runs holding the same benchmark on the same machine are mismatched input for a
    table (which one is meant?): that raises ReportError. Compare such runs instead.
    """
    index: dict[ResultKey, Result] = {}
    sources: dict[ResultKey, str] = {}
    for run in runs:
        for result in run.results:
            key = (run.label, result.world_size, result.id)
            if key in index:
                raise ReportError(
                    f"{run.source}: {result.id} (world size {key[1]}, {run.label})"
                    f" is also in {sources[key]}; give one run per machine, or use `compare`"
                )
            index[key] = result
            sources[key] = run.source
    return index
