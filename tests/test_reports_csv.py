"""``--format csv`` in every command that prints a table: one row per result and metric, raw
numbers in the unit the ``unit`` column names, read back with Python's csv module."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from reports.cli import main
from reports.synthetic import machine_info, make_extra_info, write_benchmark_json
from tests.reports_fixtures import session_results


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> list[dict[str, str]]:
    assert main(list(argv)) in (0, 1)
    return list(csv.DictReader(io.StringIO(capsys.readouterr().out)))


@pytest.fixture
def cpu(tmp_path: Path) -> Path:
    return write_benchmark_json(tmp_path / "cpu.json", session_results())


def test_table_csv_has_a_row_per_result_and_metric(cpu: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(capsys, "table", str(cpu), "--format", "csv")
    metrics = {row["metric"] for row in rows}
    assert {"samples_per_s", "step_time_s", "accuracy", "peak_mem_bytes", "mfu"} <= metrics
    assert len(rows) == len(session_results()) * len(metrics)
    bf16 = next(r for r in rows if r["id"] == "dense-xs-amp-bf16" and r["metric"] == "samples_per_s")
    assert (bf16["unit"], float(bf16["value"]), bf16["reference"]) == ("samples/s", 1234.0, "dense-xs-fp32")
    assert float(bf16["ratio (x)"]) == pytest.approx(1.234)
    low, high = float(bf16["ratio_ci_low (x)"]), float(bf16["ratio_ci_high (x)"])
    assert low < 1.234 < high and high / low < 1.15
    assert bf16["stable"] == "true" and bf16["contended"] == "false" and bf16["status"] == "ok"
    memory = next(r for r in rows if r["id"] == "dense-xs-amp-bf16" and r["metric"] == "peak_mem_bytes")
    assert (memory["unit"], memory["value"], memory["stable"]) == ("bytes", repr(float(256 * 2**20)), "")
    accuracy = next(r for r in rows if r["id"] == "dense-xs-amp-bf16" and r["metric"] == "accuracy")
    assert float(accuracy["delta (pp)"]) == pytest.approx(-0.2)
    oom = next(r for r in rows if r["id"] == "dense-xs-amp-fp16" and r["metric"] == "samples_per_s")
    assert (oom["value"], oom["status"], oom["reason"]) == ("", "oom", "CUDA out of memory | tried 2 GiB")
    absent = next(r for r in rows if r["id"] == "dense-xs-amp-bf16" and r["metric"] == "mfu")
    assert (absent["value"], absent["reason"]) == ("", "no peak probe for bfloat16")


def test_table_csv_header_names_units(cpu: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["table", str(cpu), "--format", "csv"])
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert {"unit", "value", "ci_low", "ci_high", "ratio (x)", "delta (pp)", "stable", "contended"} <= set(header)


def test_compare_csv(cpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gpu = [make_extra_info("dense", "xs", "fp32", samples_per_s=3000.0, contended=True)]
    h100 = write_benchmark_json(tmp_path / "h100.json", gpu, machine_info("NVIDIA H100", gpu_name="NVIDIA H100"))
    rows = run(capsys, "compare", str(cpu), str(h100), "--format", "csv")
    h100_row = next(r for r in rows if r["machine"] == "NVIDIA H100")
    assert (h100_row["id"], h100_row["metric"], h100_row["unit"]) == ("dense-xs-fp32", "samples_per_s", "samples/s")
    assert float(h100_row["ratio (x)"]) == pytest.approx(3.0) and h100_row["reference"] == "AMD EPYC 7B13"
    assert h100_row["contended"] == "true"
    assert {r["machine"] for r in rows} == {"AMD EPYC 7B13", "NVIDIA H100"}


def test_check_csv(cpu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slower = [make_extra_info("dense", "xs", "fp32", samples_per_s=800.0, unstable=True)]
    new = write_benchmark_json(tmp_path / "new.json", slower)
    rows = run(capsys, "check", "--baseline", str(cpu), str(new), "--format", "csv")
    samples = next(r for r in rows if r["benchmark"] == "dense-xs-fp32" and r["metric"] == "samples_per_s")
    assert (samples["unit"], float(samples["baseline"]), float(samples["new"])) == ("samples/s", 1000.0, 800.0)
    assert (float(samples["change"]), samples["change_unit"]) == (pytest.approx(-20.0), "%")
    assert samples["new_marks"] == "~"
    accuracy = next(r for r in rows if r["benchmark"] == "dense-xs-fp32" and r["metric"] == "accuracy")
    assert accuracy["change_unit"] == "pp"
    missing = [r for r in rows if r["verdict"] == "missing"]
    assert missing and all(r["baseline"] == "" for r in missing)
