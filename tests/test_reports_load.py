"""Loading pytest-benchmark JSON, storage ids and streamed jsonl results; validation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reports.inputs import load_input, load_inputs
from reports.load import (
    ReportError,
    ReportWarning,
    load_json,
    load_jsonl,
    machine_label,
)
from reports.synthetic import benchmark_json, machine_info, make_extra_info, write_jsonl
from tests.reports_fixtures import session_results

STORAGE_MACHINE = "Linux-CPython-3.11-64bit"


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_json_keeps_what_pytest_benchmark_recorded(tmp_path: Path) -> None:
    doc = benchmark_json(session_results(), machine_info("NVIDIA H100", gpu_name="NVIDIA H100"))
    run = load_json(write_json(tmp_path / "run.json", doc))
    ok = [info for info in session_results() if info["status"] == "ok"]
    not_ok = [info for info in session_results() if info["status"] != "ok"]
    assert [r.id for r in run.results] == [info["id"] for info in ok + not_ok]  # benchmarks, then not_ok
    assert run.label == "NVIDIA H100"
    assert run.datetime == doc["datetime"]
    assert run.source == str(tmp_path / "run.json")
    result = run.get("dense-xs-amp-bf16")
    assert result is not None
    assert result.name == "test_train[dense-xs-amp-bf16]"
    assert result.stats is not None and result.stats["rounds"] == 5
    assert result.extra_info == ok[1]  # raw extra_info kept as is
    assert result.value("samples_per_s") == 1234.0
    assert result.value("mfu") is None
    assert result.missing_reason("mfu") == "absent: no peak probe for bfloat16"
    oom = run.get("dense-xs-amp-fp16")
    assert oom is not None and oom.stats is None and oom.status == "oom"
    assert oom.missing_reason("samples_per_s") == "oom: CUDA out of memory | tried 2 GiB"


def test_load_jsonl_with_skipped_oom_and_error_lines(tmp_path: Path) -> None:
    run = load_jsonl(write_jsonl(tmp_path / "results-1.jsonl", session_results()))
    assert len(run.results) == len(session_results())
    oom = run.get("dense-xs-amp-fp16")
    assert oom is not None and oom.stats is None
    assert oom.value("samples_per_s") is None
    assert oom.missing_reason("samples_per_s") == "oom: CUDA out of memory | tried 2 GiB"
    assert run.datetime == "2025-01-15T10:00:00"


def test_truncated_last_jsonl_line_is_dropped_with_a_warning(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "results-killed.jsonl", session_results())
    whole = json.dumps({"type": "benchmark", "name": "x", "extra_info": make_extra_info()})
    with path.open("a", encoding="utf-8") as file:
        file.write(whole[: len(whole) // 2])  # killed mid-write: no newline
    with pytest.warns(ReportWarning, match=r"results-killed\.jsonl: line 13: truncated"):
        run = load_jsonl(path)
    assert len(run.results) == len(session_results())


def test_broken_line_followed_by_more_lines_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "results-bad.jsonl"
    lines = write_jsonl(path, session_results()).read_text().splitlines()
    lines[2] = lines[2][:20]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReportError, match=r"results-bad\.jsonl: line 3: not JSON"):
        load_jsonl(path)


def test_jsonl_needs_its_machine_line_first(tmp_path: Path) -> None:
    path = tmp_path / "results-x.jsonl"
    lines = write_jsonl(path, session_results()).read_text().splitlines()
    path.write_text("\n".join(lines[1:]) + "\n")
    with pytest.raises(ReportError, match="line 1: benchmark line before the machine line"):
        load_jsonl(path)


def test_runs_without_results_are_dropped_with_a_warning(tmp_path: Path) -> None:
    full = write_jsonl(tmp_path / "results-a.jsonl", session_results())
    empty = write_jsonl(tmp_path / "results-b.jsonl", [])
    with pytest.warns(ReportWarning, match=r"results-b\.jsonl: no benchmark results"):
        runs = load_inputs([full, empty])
    assert len(runs) == 1
    with pytest.raises(ReportError, match=r"results-b\.jsonl: no benchmark results"):
        load_inputs([empty])


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    """A pytest-benchmark storage with two saved runs, named as pytest-benchmark names them."""
    machine_dir = tmp_path / ".benchmarks" / STORAGE_MACHINE
    machine_dir.mkdir(parents=True)
    first = [make_extra_info(samples_per_s=100.0)]
    second = [make_extra_info(samples_per_s=200.0)]
    write_json(machine_dir / "0001_unversioned_20250115_100000.json", benchmark_json(first))
    write_json(machine_dir / "0002_3f2a9c1_20250116_100000.json", benchmark_json(second))
    return tmp_path / ".benchmarks"


@pytest.mark.parametrize(
    ("storage_id", "samples_per_s"),
    [
        ("0001", 100.0),
        ("0002", 200.0),
        ("0002_3f2a9c1_20250116_100000", 200.0),
        ("0002_3f2a9c1_20250116_100000.json", 200.0),
        (f"{STORAGE_MACHINE}/0001", 100.0),
    ],
)
def test_storage_id_lookup(storage: Path, storage_id: str, samples_per_s: float) -> None:
    run = load_input(storage_id, storage=storage)
    assert run.results[0].value("samples_per_s") == samples_per_s
    assert Path(run.source).parent.name == STORAGE_MACHINE


def test_storage_id_not_found_or_ambiguous(storage: Path) -> None:
    with pytest.raises(ReportError, match=r"^0003: no such file, and no .*0003_\*\.json"):
        load_input("0003", storage=storage)
    other = storage / "Darwin-CPython-3.12-64bit"
    other.mkdir()
    write_json(other / "0001_x_20250101_000000.json", benchmark_json([make_extra_info()]))
    with pytest.raises(ReportError, match="^0001: ambiguous storage id"):
        load_input("0001", storage=storage)


def test_machine_label_fallbacks() -> None:
    info = machine_info("NVIDIA A100-SXM4-80GB")
    assert machine_label(info) == "NVIDIA A100-SXM4-80GB"
    info["archbench"]["label"] = None
    info["archbench"]["gpu_name"] = "NVIDIA A100"
    assert machine_label(info) == "NVIDIA A100"
    del info["archbench"]
    assert machine_label(info) == "AMD EPYC 7B13"  # pytest-benchmark's cpu brand_raw


Mutation = Callable[[dict[str, Any]], object]


def _set(key: str, value: object) -> Mutation:
    return lambda doc: doc["benchmarks"][0]["extra_info"].__setitem__(key, value)


def _delete(key: str) -> Mutation:
    return lambda doc: doc["benchmarks"][0]["extra_info"].pop(key)


BAD_DOCUMENTS: list[tuple[str, Mutation, str]] = [
    ("wrong schema", _set("schema", "archbench/2"), "schema 'archbench/2' is not supported"),
    ("missing id", _delete("id"), "extra_info: missing field 'id'"),
    (
        "mistyped",
        _set("samples_per_s", "fast"),
        "samples_per_s: expected a number or null, got str",
    ),
    ("bool", _set("peak_mem_bytes", True), "peak_mem_bytes: expected a number or null, got bool"),
    ("nan", _set("mfu", math.nan), "benchmarks[0].extra_info.mfu: NaN is not a number"),
    ("negative", _set("step_time_s", -0.1), "step_time_s: expected a number >= 0 or null, got float -0.1"),
    ("world size", _set("world_size", 0), "world_size: expected a positive integer"),
    ("status", _set("status", "crashed"), "status 'crashed' is not one of ok, skipped, timeout, oom, error"),
    (
        "id",
        _set("id", "dense-xs-bf16"),
        "id 'dense-xs-bf16' does not match family, size, variant and phase 'dense-xs-fp32'",
    ),
    ("absent", _set("absent", ["mfu"]), "absent: expected an object of metric -> reason"),
    ("reason", _set("reason", 3), "reason: expected a string or null, got int"),
    ("stats", lambda doc: doc["benchmarks"][0]["stats"].pop("median"), "stats: missing 'median'"),
    ("no stats", lambda doc: doc["benchmarks"][0].__setitem__("stats", None), "stats: expected"),
    ("benchmarks", lambda doc: doc.__setitem__("benchmarks", {}), "benchmarks: expected a list"),
    ("machine", lambda doc: doc.pop("machine_info"), "missing field 'machine_info'"),
]


@pytest.mark.parametrize(("mutate", "message"), [case[1:] for case in BAD_DOCUMENTS], ids=[c[0] for c in BAD_DOCUMENTS])
def test_bad_documents_name_the_file_and_the_problem(tmp_path: Path, mutate: Mutation, message: str) -> None:
    doc = benchmark_json([make_extra_info()])
    mutate(doc)
    path = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(ReportError) as error:
        load_json(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ")
    assert message in text.replace("field 'median'", "'median'")
    assert "\n" not in text


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{ not json")
    with pytest.raises(ReportError, match=r"broken\.json: not JSON"):
        load_json(path)
    with pytest.raises(ReportError, match=r"nothing\.json: no such file"):
        load_input(tmp_path / "nothing.json")
    with pytest.raises(ReportError, match="directory has no \\*.jsonl results files and no saved runs"):
        load_input(tmp_path)


def test_duplicate_benchmark_in_one_run(tmp_path: Path) -> None:
    doc = benchmark_json([make_extra_info(), make_extra_info()])
    with pytest.raises(ReportError, match="duplicate benchmark id 'dense-xs-fp32'"):
        load_json(write_json(tmp_path / "dup.json", doc))


def test_other_suites_benchmarks_are_ignored_with_a_warning(tmp_path: Path) -> None:
    doc = benchmark_json([make_extra_info()])
    foreign = json.loads(json.dumps(doc["benchmarks"][0]))
    foreign.update(name="test_tokenizer_speed", extra_info={})
    doc["benchmarks"].append(foreign)
    path = write_json(tmp_path / "mixed.json", doc)
    with pytest.warns(ReportWarning, match=r"benchmarks\[1\] \(test_tokenizer_speed\): no 'schema'"):
        run = load_json(path)
    assert [r.id for r in run.results] == ["dense-xs-fp32"]
    doc["benchmarks"] = [foreign]
    write_json(path, doc)
    with pytest.warns(ReportWarning), pytest.raises(ReportError, match="no benchmark results"):
        load_inputs([path])
