"""Checks on every field ``reports`` reads from a result, its machine and its stats.

Each check takes the parsed JSON value and ``where`` (``"<file>: benchmarks[3] (name)"``)
and returns the value, or raises :class:`ReportError` with one line
``"<where>: <field>: expected <what>, got <type> <value>"``. Numbers must be finite (the
parser already refuses NaN, Infinity and literals beyond a float's range); quantities that
cannot be negative (times, bytes, rates, counts) must not be. Fields reports do not read
are left as they are.

API::

    validate_extra_info(value, where) -> dict      # an archbench result (``docs/schema.md``)
    validate_stats(value, where, required) -> dict | None    # pytest-benchmark's stats
    validate_machine_info(value, where) -> dict
    validate_session(value, where) -> dict          # the per-session measurements
    is_archbench(extra_info, where) -> bool         # False, with a warning, for other suites
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

from reports.errors import ReportError, ReportWarning
from reports.metrics import METRICS
from reports.schema import PHASES, SCHEMA, STATUSES, case_id, parse_case_id

# The parts of a benchmark id (``reports.schema.case_id``) are names: no space, no path separator.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_NAMES = ("family", "size", "variant")
_STRINGS = (
    "phase",
    "device",
    "dtype",
    "reason",
    "mem_source",
    "energy_source",
    "energy_reason",
    "accuracy_metric",
    "accuracy_task",
    "accuracy_corpus",
    "accuracy_corpus_sha256",
    "tta_metric",
    "timer",
    "timing",
)
# Numbers besides the metrics that reports read or show; none of them can be negative.
_QUANTITIES = ("samples_per_step", "flops_per_step", "peak_tflops", "accuracy_reference", "util_pct")
# pytest-benchmark's `compare` reads these from every benchmark's stats.
_PYTEST_BENCHMARK_STATS = ("min", "max", "mean", "stddev", "median", "iqr", "rounds", "iterations")
_MACHINE_STRINGS = ("torch", "cuda", "deepspeed", "torchao", "driver", "cpu_model", "gpu_name", "label", "device")
_MACHINE_COUNTS = ("cpu_cores", "gpu_count", "torch_threads")


# ---------------------------------------------------------------------------------------
# values


def is_number(value: object) -> bool:
    """A JSON number a float holds: int or float, not bool, finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond a float's range
        return False


def _shown(value: object) -> str:
    """A short description of a value for an error line: ``null``, ``list of 3 items``,
    ``str 'fast'``, ``int 3``."""
    if value is None:
        return "null"
    if isinstance(value, list | dict):
        kind = "object" if isinstance(value, dict) else "list"
        return f"{kind} of {len(value)} item{'s' * (len(value) != 1)}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"int of {len(str(abs(value)))} digits"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def mistyped(where: str, name: str, value: object, expected: str) -> ReportError:
    return ReportError(f"{where}: {name}: expected {expected}, got {_shown(value)}")


def expect_object(value: object, where: str, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise mistyped(where, name, value, "an object")
    return value


def _optional_string(data: dict[str, Any], key: str, where: str, name: str) -> None:
    if data.get(key) is not None and not isinstance(data[key], str):
        raise mistyped(where, name, data[key], "a string or null")


def _quantity(value: object, where: str, name: str, signed: bool = False) -> None:
    """``value`` is null or a finite number, not negative unless ``signed``."""
    if value is None:
        return
    if not is_number(value):
        raise mistyped(where, name, value, "a number or null")
    if not signed and value < 0:  # type: ignore[operator]
        raise mistyped(where, name, value, "a number >= 0 or null")


def _numbers(value: object, where: str, name: str, positive: bool = False, nulls: bool = False) -> None:
    """``value`` is null or a list of numbers >= 0 (> 0 if ``positive``; null items if ``nulls``)."""
    if value is None:
        return
    if not isinstance(value, list):
        raise mistyped(where, name, value, "a list of numbers or null")
    for i, item in enumerate(value):
        if item is None and nulls:
            continue
        if not is_number(item) or item < 0 or (positive and item == 0):
            expected = "a number > 0" if positive else "a number >= 0"
            raise mistyped(where, f"{name}[{i}]", item, expected + " or null" * nulls)


# ---------------------------------------------------------------------------------------
# records


def unsupported_schema(schema: object) -> str:
    shown = repr(schema) if isinstance(schema, str) else _shown(schema)
    return f"schema {shown} is not supported (expected {SCHEMA!r})"


def _identity(info: dict[str, Any], where: str) -> None:
    """id, family, size, variant, status and phase: present, names, and one consistent id."""
    for key in ("id", *_NAMES, "status"):
        if key not in info:
            raise ReportError(f"{where}: extra_info: missing field {key!r}")
        if not isinstance(info[key], str) or not info[key]:
            raise mistyped(where, key, info[key], "a non-empty string")
    for key in _NAMES:
        if not _NAME.fullmatch(info[key]):
            raise ReportError(f"{where}: {key} {info[key]!r}: expected a name of letters, digits and . _ + -")
    if info["status"] not in STATUSES:
        raise ReportError(f"{where}: status {info['status']!r} is not one of {', '.join(STATUSES)}")
    _optional_string(info, "phase", where, "phase")
    phase = info.get("phase") or "train"
    if phase not in PHASES:
        raise ReportError(f"{where}: phase {phase!r} is not one of {', '.join(PHASES)}")
    try:
        parsed = parse_case_id(info["id"])
    except ValueError as error:
        raise ReportError(f"{where}: {error}") from None
    expected = (info["family"], info["size"], info["variant"], phase)
    if parsed != expected:
        shown = case_id(*expected)
        raise ReportError(f"{where}: id {info['id']!r} does not match family, size, variant and phase {shown!r}")


def validate_extra_info(extra_info: object, where: str) -> dict[str, Any]:
    """Check the archbench fields reports use; return the dict or raise ReportError."""
    info = expect_object(extra_info, where, "extra_info")
    if "schema" not in info:
        raise ReportError(f"{where}: extra_info has no 'schema' (not an archbench result)")
    if info["schema"] != SCHEMA:
        raise ReportError(f"{where}: {unsupported_schema(info['schema'])}")
    _identity(info, where)
    for key in _STRINGS:
        _optional_string(info, key, where, key)
    world_size = info.get("world_size", 1)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise mistyped(where, "world_size", world_size, "a positive integer")
    for key, metric in METRICS.items():
        _quantity(info.get(key), where, key, metric.signed)
    for key in _QUANTITIES:
        _quantity(info.get(key), where, key)
    absent = info.get("absent")
    if absent is not None and not (
        isinstance(absent, dict) and all(v is None or isinstance(v, str) for v in absent.values())
    ):
        raise mistyped(where, "absent", absent, "an object of metric -> reason")
    _numbers(info.get("step_times_s"), where, "step_times_s", positive=True)
    _timing_trust(info, where)
    telemetry = info.get("telemetry")
    if telemetry is not None:
        for name, series in expect_object(telemetry, where, "telemetry").items():
            _numbers(series, where, f"telemetry.{name}", nulls=True)
    return info


def _timing_trust(info: dict[str, Any], where: str) -> None:
    """``step_time_ci_s``, ``step_time_ci_rel``, ``stable``, ``stable_threshold`` and
    ``contention``, which the tables' intervals and marks read."""
    ci = info.get("step_time_ci_s")
    if ci is not None:
        _numbers(ci, where, "step_time_ci_s")
        if len(ci) != 2 or ci[0] > ci[1]:
            raise mistyped(where, "step_time_ci_s", ci, "[low, high] with low <= high")
    for key in ("step_time_ci_rel", "stable_threshold"):
        _quantity(info.get(key), where, key)
    if info.get("stable") is not None and not isinstance(info["stable"], bool):
        raise mistyped(where, "stable", info["stable"], "true, false or null")
    contention = info.get("contention")
    if contention is not None:
        contention = expect_object(contention, where, "contention")
        if contention.get("contended") is not None and not isinstance(contention["contended"], bool):
            raise mistyped(where, "contention.contended", contention["contended"], "true, false or null")
        for key in ("foreign_cores", "steal_pct"):
            _quantity(contention.get(key), where, f"contention.{key}", signed=True)


def validate_stats(value: object, where: str, required: bool) -> dict[str, Any] | None:
    """pytest-benchmark's stats: required in its JSON files, null allowed in jsonl lines."""
    if value is None and not required:
        return None
    stats = expect_object(value, where, "stats")
    for key in _PYTEST_BENCHMARK_STATS:
        if key not in stats:
            if required:
                raise ReportError(f"{where}: stats: missing field {key!r}")
            continue
        if not is_number(stats[key]) or stats[key] < 0:
            raise mistyped(where, f"stats.{key}", stats[key], "a number >= 0")
    _numbers(stats.get("data"), where, "stats.data")
    return stats


def validate_machine_info(value: object, where: str) -> dict[str, Any]:
    """pytest-benchmark's machine_info and the ``archbench`` block the bench adds to it."""
    machine_info = expect_object(value, where, "machine_info")
    archbench = machine_info.get("archbench")
    if archbench is None:
        return machine_info
    archbench = expect_object(archbench, where, "machine_info.archbench")
    for key in _MACHINE_STRINGS:
        _optional_string(archbench, key, where, f"machine_info.archbench.{key}")
    for key in _MACHINE_COUNTS:
        count = archbench.get(key)
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
            raise mistyped(where, f"machine_info.archbench.{key}", count, "an integer >= 0 or null")
    _peaks(archbench.get("peak_tflops"), where, "machine_info.archbench.peak_tflops")
    return machine_info


def _peaks(value: object, where: str, name: str) -> None:
    if value is not None:
        for key, tflops in expect_object(value, where, name).items():
            _quantity(tflops, where, f"{name}.{key}")


def validate_session(value: object, where: str, name: str = "session") -> dict[str, Any]:
    """The per-session measurements the bench keeps apart from machine_info (``peak_tflops``,
    ``torch_threads``); ``{}`` when absent (older files)."""
    if value is None:
        return {}
    session = expect_object(value, where, name)
    _peaks(session.get("peak_tflops"), where, f"{name}.peak_tflops")
    threads = session.get("torch_threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise mistyped(where, f"{name}.torch_threads", threads, "an integer >= 0 or null")
    return session


def is_archbench(extra_info: object, where: str) -> bool:
    """False, with a warning, for another suite's benchmark: an extra_info without 'schema'."""
    if isinstance(extra_info, dict) and "schema" not in extra_info:
        message = f"{where}: no 'schema' in extra_info, not an archbench result: ignored"
        warnings.warn(message, ReportWarning, stacklevel=3)
        return False
    return True
