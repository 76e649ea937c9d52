"""Hardware comparison: labels, ratios to the first machine, geomean rows, missing cells."""

from __future__ import annotations

import math

import pytest

from reports.compare import build_comparison, machine_columns
from reports.load import ReportError, Run, run_from_extra_info
from reports.metrics import METRICS
from reports.synthetic import machine_info, make_extra_info
from reports.table import render
from tests.reports_fixtures import cited, find_row, parse_notes, parse_tables

CPU = machine_info("AMD EPYC 7B13")
H100 = machine_info("NVIDIA H100 80GB HBM3", gpu_name="NVIDIA H100 80GB HBM3")


def cpu_run() -> Run:
    return run_from_extra_info(
        [
            make_extra_info("dense", "xs", "fp32", samples_per_s=1000.0, accuracy=0.97),
            make_extra_info("dense", "xs", "amp-bf16", samples_per_s=1500.0, accuracy=0.96),
            make_extra_info("dense", "s", "fp32", samples_per_s=100.0, accuracy=0.98),
            make_extra_info("cnn", "xs", "fp32", samples_per_s=50.0),
        ],
        CPU,
        source="cpu.json",
    )


def gpu_run(*extra: dict[str, object]) -> Run:
    return run_from_extra_info(
        [
            *extra,
            make_extra_info("dense", "xs", "fp32", samples_per_s=4000.0, accuracy=0.975),
            make_extra_info("dense", "xs", "amp-bf16", samples_per_s=24000.0, accuracy=0.965),
            make_extra_info("dense", "s", "fp32", status="oom", reason="CUDA out of memory"),
            make_extra_info("cnn", "xs", "fp32", samples_per_s=None, absent={"samples_per_s": "x"}),
        ],
        H100,
        source="h100.json",
    )


def compare_with_notes(metric: str = "samples_per_s", *runs: Run) -> tuple[list[dict[str, str]], dict[str, str]]:
    runs = runs or (cpu_run(), gpu_run())
    columns = machine_columns([(run.source, [run]) for run in runs])
    text = render(build_comparison(columns, metric), "github")
    title = f"Hardware comparison: {METRICS[metric].label}"
    return parse_tables(text)[title], parse_notes(text)[title]


def compare(metric: str = "samples_per_s", *runs: Run) -> list[dict[str, str]]:
    return compare_with_notes(metric, *runs)[0]


def test_columns_are_labelled_by_machine() -> None:
    rows = compare()
    assert list(rows[0]) == ["benchmark", "AMD EPYC 7B13", "NVIDIA H100 80GB HBM3"]


def test_label_falls_back_to_cpu_brand() -> None:
    bare = {"cpu": {"brand_raw": "Intel(R) Xeon(R) Platinum 8480+"}}
    other = run_from_extra_info([make_extra_info(samples_per_s=10.0)], bare, source="x.json")
    rows = compare("samples_per_s", cpu_run(), other)
    assert "Intel(R) Xeon(R) Platinum 8480+" in rows[0]


def test_cells_and_ratios_against_the_first_machine() -> None:
    rows = compare()
    fp32 = find_row(rows, benchmark="dense-xs-fp32")
    assert fp32["AMD EPYC 7B13"] == "1k"
    assert fp32["NVIDIA H100 80GB HBM3"] == "4k (4.00x ±6%)"  # each step time within -2%..+3%
    bf16 = find_row(rows, benchmark="dense-xs-amp-bf16")
    assert bf16["NVIDIA H100 80GB HBM3"] == "24k (16.0x ±6%)"


def test_missing_cells_show_why() -> None:
    rows, notes = compare_with_notes()
    assert cited(find_row(rows, benchmark="dense-s-fp32")["NVIDIA H100 80GB HBM3"], notes) == (
        "oom",
        "CUDA out of memory",
    )
    assert cited(find_row(rows, benchmark="cnn-xs-fp32")["NVIDIA H100 80GB HBM3"], notes) == ("absent", "x")
    rows = compare("samples_per_s", cpu_run(), gpu_run(make_extra_info("dense", "m", "fp32")))
    assert find_row(rows, benchmark="dense-m-fp32")["AMD EPYC 7B13"] == "missing: not run"


def test_geomean_row_per_family() -> None:
    rows = compare()
    dense = find_row(rows, benchmark="dense geomean")
    assert dense["AMD EPYC 7B13"] == "(reference)"
    # ratios 4.0 and 16.0 (dense-s-fp32 has no H100 value): geomean 8, and the geomean of the bounds
    assert dense["NVIDIA H100 80GB HBM3"] == f"{math.sqrt(4.0 * 16.0):.2f}x ±6% (n=2)"
    cnn = find_row(rows, benchmark="cnn geomean")
    assert cnn["NVIDIA H100 80GB HBM3"] == "n/a (no common values)"
    order = [row["benchmark"] for row in rows]
    assert order == [
        "cnn-xs-fp32",
        "cnn geomean",
        "dense-xs-fp32",
        "dense-xs-amp-bf16",
        "dense-s-fp32",
        "dense geomean",
    ]


def test_fractions_compare_as_differences() -> None:
    rows = compare("accuracy")
    assert find_row(rows, benchmark="dense-xs-fp32")["NVIDIA H100 80GB HBM3"] == "97.5% (+0.5 pp)"
    assert find_row(rows, benchmark="dense mean delta")["NVIDIA H100 80GB HBM3"] == "+0.5 pp (n=2)"


def test_same_label_twice_is_told_apart_by_input() -> None:
    before, after = cpu_run(), cpu_run()
    columns = machine_columns([("before.json", [before]), ("after.json", [after])])
    assert [c.label for c in columns] == [
        "AMD EPYC 7B13 (before.json)",
        "AMD EPYC 7B13 (after.json)",
    ]


def test_mismatched_runs_are_refused() -> None:
    other = run_from_extra_info([make_extra_info("cnn", "xl", "fp32")], H100, source="xl.json")
    columns = machine_columns([("cpu.json", [cpu_run()]), ("xl.json", [other])])
    with pytest.raises(ReportError, match=r"^xl\.json: no benchmark in common with cpu\.json"):
        build_comparison(columns)
    with pytest.raises(ReportError, match="two or more"):
        build_comparison(machine_columns([("cpu.json", [cpu_run()])]))
