"""Load archbench results into typed records.

Inputs (see ``docs/schema.md``):

- a pytest-benchmark JSON file (``--benchmark-json`` output or an autosaved run): its
  ``benchmarks`` (results that ran, with stats) and, under the top-level ``archbench`` key,
  ``not_ok`` (skipped, timed out, out of memory, failed: no stats);
- a pytest-benchmark storage id such as ``0001``, ``0001_<commit>_<date>`` or
  ``<machine-dir>/0001``, looked up as ``<storage>/*/0001_*.json``;
- a streamed results file ``results-<session>.jsonl``;
- a directory: its newest run (``reports.inputs``).

API::

    load_json(path) -> Run
    load_jsonl(path) -> Run
    load_file(path) -> Run                 # by suffix: .jsonl or JSON
    run_from_extra_info(dicts, machine_info=None, label=None) -> Run
    result_index(runs) -> dict[(machine, world_size, id), Result]
    warn_mixed_corpora(runs)               # a warning when results used different text corpora

Unusable input raises :class:`ReportError` with the message ``"<file>: <problem>"``.
Dropped with a :class:`ReportWarning` instead: a truncated last line of a jsonl file (a
run killed mid-write) and benchmarks of other suites (no ``schema`` in ``extra_info``).
Results read together whose text task used different corpora get a warning too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reports.errors import ReportError, ReportWarning
from reports.files import NotJson, decode, parse_json, read_bytes
from reports.schema import SCHEMA, size_rank, variant_rank
from reports.validate import (
    expect_object,
    is_archbench,
    mistyped,
    unsupported_schema,
    validate_extra_info,
    validate_machine_info,
    validate_session,
    validate_stats,
)

__all__ = [  # ReportError and ReportWarning are re-exported: callers catch them from here
    "ReportError",
    "ReportWarning",
    "Result",
    "Run",
    "load_file",
    "load_json",
    "load_jsonl",
    "machine_label",
    "result_index",
    "run_from_extra_info",
    "warn_mixed_corpora",
]


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
    """The results of one session on one machine.

    ``machine_info`` is pytest-benchmark's (what ``--benchmark-compare`` compares: facts of
    the machine); ``session`` holds what the bench measured once in this session (the matmul
    peaks ``peak_tflops``, ``torch_threads``: the JSON's ``archbench.session``, a jsonl
    machine line's ``session``). ``facts`` merges the two; older files kept the peaks in
    ``machine_info["archbench"]``, and ``facts`` finds them there too."""

    machine_info: Mapping[str, Any]
    results: list[Result]
    source: str
    label: str = ""
    datetime: str | None = None
    session: Mapping[str, Any] = field(default_factory=dict)
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

    @property
    def facts(self) -> dict[str, Any]:
        """The machine's facts (``machine_info["archbench"]``) and this session's measurements."""
        archbench = self.machine_info.get("archbench")
        return {**(archbench if isinstance(archbench, Mapping) else {}), **self.session}


def _text(value: object) -> str:
    """A name from the input on one line, or "" for anything but a string."""
    return " ".join(value.split()) if isinstance(value, str) else ""


def machine_label(machine_info: Mapping[str, Any]) -> str:
    """``machine_info["archbench"]["label"]``, else the GPU name, CPU brand or host name."""
    archbench = machine_info.get("archbench")
    if isinstance(archbench, Mapping):
        for key in ("label", "gpu_name", "cpu_model"):
            if _text(archbench.get(key)):
                return _text(archbench[key])
    cpu = machine_info.get("cpu")
    if isinstance(cpu, Mapping) and _text(cpu.get("brand_raw")):
        return _text(cpu["brand_raw"])
    return _text(machine_info.get("node")) or "unknown machine"


# ---------------------------------------------------------------------------------------
# records


def _string_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _named(value: object, where: str) -> tuple[dict[str, Any], str]:
    """A benchmark record and its ``where`` with the benchmark's name."""
    entry = expect_object(value, where, "benchmark")
    name = entry.get("name")
    if not isinstance(name, str):
        raise mistyped(where, "name", name, "a string")
    shown = _text(name)
    return entry, f"{where} ({shown if len(shown) <= 80 else shown[:77] + '...'})"


def _result(value: object, where: str, stats_required: bool) -> Result | None:
    """The benchmark record, or None for a benchmark that is not archbench's."""
    entry, where = _named(value, where)
    for key in ("extra_info", "stats") if stats_required else ("extra_info",):
        if key not in entry:
            raise ReportError(f"{where}: missing field {key!r}")
    if not is_archbench(entry["extra_info"], where):
        return None
    extra_info = validate_extra_info(entry["extra_info"], where)
    stats = validate_stats(entry.get("stats"), where, stats_required)
    return Result(extra_info, entry["name"], stats, _string_or_none(entry.get("fullname")))


def _not_ok_results(block: object, where: str, measured: list[Result]) -> list[Result]:
    """The results under ``archbench.not_ok`` of a pytest-benchmark JSON file: cases that
    did not end ``ok``, so have no stats (pytest-benchmark's loader needs stats in every
    entry of ``benchmarks``)."""
    if block is None:
        return []
    block = expect_object(block, where, "archbench")
    if block.get("schema") != SCHEMA:
        raise ReportError(f"{where}: archbench: {unsupported_schema(block.get('schema'))}")
    entries = block.get("not_ok", [])
    if not isinstance(entries, list):
        raise mistyped(where, "archbench.not_ok", entries, "a list")
    ran = {(r.id, r.world_size) for r in measured}
    results = []
    for i, value in enumerate(entries):
        entry, at = _named(value, f"{where}: archbench.not_ok[{i}]")
        if "extra_info" not in entry:
            raise ReportError(f"{at}: missing field 'extra_info'")
        fullname = entry.get("fullname")
        result = Result(validate_extra_info(entry["extra_info"], at), entry["name"], None, _string_or_none(fullname))
        if result.status == "ok":
            raise ReportError(f"{at}: status 'ok' under not_ok (a result that ran belongs in benchmarks)")
        if (result.id, result.world_size) in ran:
            raise ReportError(f"{at}: id {result.id!r} is also in benchmarks (one outcome per case)")
        results.append(result)
    return results


def _datetime(value: object, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise mistyped(where, "datetime", value, "a string")
    return value


# ---------------------------------------------------------------------------------------
# readers


def load_json(path: str | Path) -> Run:
    """A pytest-benchmark JSON file (``--benchmark-json`` or a saved run)."""
    path = Path(path)
    where = str(path)
    data = expect_object(parse_json(decode(read_bytes(path), where), where), where, "top level")
    for key in ("machine_info", "benchmarks"):
        if key not in data:
            raise ReportError(f"{where}: missing field {key!r} (not a pytest-benchmark JSON file)")
    machine_info = validate_machine_info(data["machine_info"], where)
    benchmarks = data["benchmarks"]
    if not isinstance(benchmarks, list):
        raise mistyped(where, "benchmarks", benchmarks, "a list")
    records = (_result(entry, f"{where}: benchmarks[{i}]", True) for i, entry in enumerate(benchmarks))
    results = [result for result in records if result is not None]
    results += _not_ok_results(data.get("archbench"), where, results)
    block = data.get("archbench")
    session = validate_session(block.get("session") if isinstance(block, dict) else None, where, "archbench.session")
    return Run(machine_info, results, where, datetime=_datetime(data.get("datetime"), where), session=session)


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for every non-empty line; a last line cut short (no newline
    after it, not JSON) is dropped with a warning: the writer was killed mid-line."""
    data = read_bytes(path)
    if not data.strip():
        raise ReportError(f"{path}: empty, not a results file")
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            record = parse_json(decode(line, where), where)
        except NotJson:
            if number < len(lines):
                raise
            warnings.warn(f"{where}: truncated last line ignored", ReportWarning, stacklevel=3)
            return
        yield where, expect_object(record, where, "line")


def _machine_line(record: dict[str, Any], where: str) -> tuple[dict[str, Any], str | None, dict[str, Any]]:
    if record.get("schema") != SCHEMA:
        raise ReportError(f"{where}: {unsupported_schema(record.get('schema'))}")
    if "machine_info" not in record:
        raise ReportError(f"{where}: missing field 'machine_info'")
    machine_info = validate_machine_info(record["machine_info"], where)
    return machine_info, _datetime(record.get("datetime"), where), validate_session(record.get("session"), where)


def load_jsonl(path: str | Path) -> Run:
    """A streamed ``results-<session>.jsonl`` file: a machine line, then benchmark lines."""
    path = Path(path)
    machine: tuple[dict[str, Any], str | None, dict[str, Any]] | None = None
    results: list[Result] = []
    for where, record in _jsonl_records(path):
        kind = record.get("type")
        if kind == "machine":
            if machine is not None:
                raise ReportError(f"{where}: a second machine line (one session per results file)")
            machine = _machine_line(record, where)
        elif kind == "benchmark":
            if machine is None:
                raise ReportError(f"{where}: benchmark line before the machine line")
            result = _result(record, where, False)
            if result is not None:
                results.append(result)
        else:
            shown = repr(kind) if isinstance(kind, str | None) else f"of type {type(kind).__name__}"
            raise ReportError(f"{where}: type {shown} is neither 'machine' nor 'benchmark'")
    if machine is None:
        raise ReportError(f"{path}: no machine line (not an archbench results file)")
    return Run(machine[0], results, str(path), datetime=machine[1], session=machine[2])


def load_file(path: str | Path) -> Run:
    """A results file: ``*.jsonl`` streamed results, anything else pytest-benchmark JSON."""
    path = Path(path)
    return load_jsonl(path) if path.suffix == ".jsonl" else load_json(path)


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
        if is_archbench(info, where):
            extra_info = validate_extra_info(dict(info) if isinstance(info, Mapping) else info, where)
            records.append(Result(extra_info, str(extra_info["id"])))
    return Run(dict(machine_info or {}), records, source, label=label or "")


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


def warn_mixed_corpora(runs: Sequence[Run]) -> None:
    """One warning when the results of ``runs`` scored the text task on different corpora
    (``accuracy_corpus_sha256``): their bits per byte and next-byte accuracy do not compare."""
    corpora: dict[str, str] = {}  # hash -> the first source that used it
    for run in runs:
        for result in run.results:
            digest = result.extra_info.get("accuracy_corpus_sha256")
            if isinstance(digest, str):
                corpora.setdefault(digest, run.source)
    if len(corpora) > 1:
        shown = ", ".join(f"{digest[:12]} ({source})" for digest, source in corpora.items())
        message = (
            f"results used {len(corpora)} different text corpora (sha256 {shown}):"
            " their bits per byte and next-byte accuracy are not comparable"
        )
        warnings.warn(message, ReportWarning, stacklevel=2)
