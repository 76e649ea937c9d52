"""A directory given as input means its newest run, for every command (``reports.inputs``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from reports.cli import main
from reports.inputs import newest_run
from reports.synthetic import jsonl_lines, make_extra_info, write_benchmark_json
from tests.reports_fixtures import find_row, parse_tables


def write_run(path: Path, samples_per_s: float, when: str | None) -> Path:
    """A jsonl run whose dense-xs-fp32 measured ``samples_per_s``, its machine line dated ``when``."""
    lines = jsonl_lines([make_extra_info(samples_per_s=samples_per_s), make_extra_info("dense", "s", "fp32")])
    head = json.loads(lines[0])
    if when is None:
        del head["datetime"]
    else:
        head["datetime"] = when
    path.write_text("".join(line + "\n" for line in [json.dumps(head), *lines[1:]]), encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def samples(out: str) -> str:
    return find_row(parse_tables(out)["Throughput"], family="dense", size="xs", metric="samples/s")["fp32"]


def test_two_runs_table_shows_the_newest_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the names sort the other way round: the machine lines' datetimes decide
    write_run(tmp_path / "results-b.jsonl", 100.0, "2025-01-15T10:00:00+00:00")
    newest = write_run(tmp_path / "results-a.jsonl", 200.0, "2025-01-16T09:00:00+01:00")
    status, out, err = run(capsys, "table", str(tmp_path))
    assert status == 0, err
    assert samples(out) == "200"
    assert err.splitlines() == [
        f"warning: {tmp_path}: holds 2 runs; using the newest, {newest.name} (1 older ignored: give a file to pick one)"
    ]


def test_one_run_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "results-a.jsonl", 100.0, "2025-01-15T10:00:00+00:00")
    (tmp_path / "results-a.md").write_text("tables")  # what the bench writes next to it
    status, out, err = run(capsys, "table", str(tmp_path))
    assert status == 0
    assert err == ""
    assert samples(out) == "100"


def test_without_datetime_the_name_then_the_mtime_decides(tmp_path: Path) -> None:
    older = write_run(tmp_path / "results-20250116T090000-7.jsonl", 1.0, None)
    newer = write_run(tmp_path / "results-20250117T090000-3.jsonl", 1.0, None)
    assert newest_run(tmp_path) == (newer, 2)
    unstamped = write_run(tmp_path / "results-x.jsonl", 1.0, None)
    stamp = older.stat().st_mtime
    os.utime(unstamped, (stamp, 2_000_000_000))  # 2033: later than both names
    assert newest_run(tmp_path) == (unstamped, 3)


def test_every_command_reads_the_newest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    results.mkdir()
    write_run(results / "results-1.jsonl", 100.0, "2025-01-15T10:00:00")
    write_run(results / "results-2.jsonl", 200.0, "2025-01-16T10:00:00")
    other = write_benchmark_json(tmp_path / "other.json", [make_extra_info(samples_per_s=150.0)])
    warning = f"warning: {results}: holds 2 runs; using the newest, results-2.jsonl"
    for argv in (
        ["compare", str(other), str(results)],
        ["plot", str(results), "--output-dir", str(tmp_path / "plots")],
        ["html", str(results), "--output", str(tmp_path / "report.html")],
        ["check", "--baseline", str(results), str(other)],
        ["check", "--baseline", str(other), str(results)],
    ):
        status, out, err = run(capsys, *argv)
        assert status in (0, 1), err
        assert [line for line in err.splitlines() if line.startswith("warning: ")] == [
            f"{warning} (1 older ignored: give a file to pick one)"
        ], argv
    status, out, _ = run(capsys, "check", "--baseline", str(results), str(other))
    assert f"baseline: {results / 'results-2.jsonl'}" in out


def test_storage_directory_means_its_newest_saved_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / ".benchmarks"
    (storage / "Linux-CPython-3.11-64bit").mkdir(parents=True)
    (storage / "Darwin-CPython-3.12-64bit").mkdir()
    write_benchmark_json(storage / "Linux-CPython-3.11-64bit/0007_abc_20250101_000000.json", [make_extra_info()])
    write_benchmark_json(
        storage / "Darwin-CPython-3.12-64bit/0002_def_20250301_000000.json", [make_extra_info(samples_per_s=300.0)]
    )
    status, out, err = run(capsys, "table", str(storage))
    assert status == 0, err
    assert samples(out) == "300"
    assert "holds 2 runs; using the newest, 0002_def_20250301_000000.json" in err


def test_broken_newest_run_is_the_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "results-1.jsonl", 100.0, "2025-01-15T10:00:00")
    broken = tmp_path / "results-2.jsonl"
    broken.write_text('{"type": "machine", "schema": "archbench/1", "datetime": "2025-02-01T00:00:00"}\n[')
    status, _, err = run(capsys, "table", str(tmp_path))
    assert status == 2
    assert err == f"error: {broken}: line 1: missing field 'machine_info'\n"  # no warning besides the error
    empty = write_run(tmp_path / "results-3.jsonl", 1.0, "2025-03-01T00:00:00")
    empty.write_text(empty.read_text().splitlines()[0] + "\n")
    status, _, err = run(capsys, "table", str(tmp_path))
    assert (status, err) == (2, f"error: {empty}: no benchmark results\n")
