"""Cases that did not end ok (skipped, timeout, oom, error), from jsonl lines and from a
pytest-benchmark JSON file's ``archbench.not_ok``: every command shows them with their reason,
and ``check`` judges ok -> timeout, oom or error as a regression."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from reports.cli import main
from reports.inputs import load_input
from reports.schema import FAILED_STATUSES
from reports.synthetic import make_extra_info, write_benchmark_json, write_jsonl
from tests.reports_fixtures import cited, find_row, parse_notes, parse_tables

REASONS = {
    "skipped": "needs DeepSpeed",
    "timeout": "watchdog: 60 s in warm-up",
    "oom": "CUDA out of memory",
    "error": "RuntimeError: shape mismatch",
}
VARIANTS = {"skipped": "zero3", "timeout": "zero2", "oom": "amp-fp16", "error": "zero1"}


def session() -> list[dict[str, Any]]:
    """fp32 and amp-bf16 ran; one case of every other status."""
    results = [make_extra_info("dense", "xs", "fp32"), make_extra_info("dense", "xs", "amp-bf16")]
    for status, reason in REASONS.items():
        results.append(make_extra_info("dense", "xs", VARIANTS[status], status=status, reason=reason))
    return results


@pytest.fixture(params=[".json", ".jsonl"])
def results_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    writer = write_benchmark_json if request.param == ".json" else write_jsonl
    return writer(tmp_path / f"results{request.param}", session())


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_json_keeps_not_ok_cases_out_of_pytest_benchmarks_list(tmp_path: Path) -> None:
    path = write_benchmark_json(tmp_path / "run.json", session())
    doc = json.loads(path.read_text())
    assert [b["extra_info"]["status"] for b in doc["benchmarks"]] == ["ok", "ok"]
    not_ok = doc["archbench"]["not_ok"]
    assert [entry["extra_info"]["status"] for entry in not_ok] == list(REASONS)
    assert all("stats" not in entry for entry in not_ok)
    run_ = load_input(path)
    assert {r.status for r in run_.results} == {"ok", *REASONS}
    timeout = run_.get("dense-xs-zero2")
    assert timeout is not None and timeout.stats is None and timeout.reason == REASONS["timeout"]


def test_table_shows_every_status_with_its_reason(results_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "table", str(results_file))
    assert status == 0, err
    row = find_row(parse_tables(out)["Throughput"], family="dense", size="xs", metric="samples/s")
    notes = parse_notes(out)["Throughput"]
    for case_status, reason in REASONS.items():
        assert cited(row[VARIANTS[case_status]], notes) == (case_status, reason)


def test_html_shows_every_status(results_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    report = tmp_path / "report.html"
    status, _, err = run(capsys, "html", str(results_file), "--output", str(report))
    assert status == 0, err
    text = report.read_text()
    throughput = text[text.index('<h2 id="throughput">') : text.index('<h2 id="accuracy">')]
    for case_status, reason in REASONS.items():
        number = re.search(rf"<td>{case_status} (\[\d+\])</td>", throughput)
        assert number is not None, case_status
        assert f"<li>{number[1]} {reason}</li>" in throughput


def test_plot_panel_says_why_nothing_was_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from reports.plot import _draw, figure_groups

    reason = "watchdog: 90 s at $x^{2"  # not TeX: drawn as it is, no mathtext error
    path = write_benchmark_json(
        tmp_path / "run.json", [make_extra_info("cnn", "xs", "fp32", status="timeout", reason=reason)]
    )
    (results,) = figure_groups([load_input(path)]).values()
    figure = Figure()
    _draw(figure, "cnn", results)
    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert texts == [f"no data\ntimeout: {reason}"] * 4  # throughput, memory, MFU, quality
    figure.savefig(io.BytesIO(), format="png", dpi=20)


@pytest.mark.parametrize("failure", FAILED_STATUSES)
@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_check_ok_to_failure_is_a_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], failure: str, suffix: str
) -> None:
    writer = write_benchmark_json if suffix == ".json" else write_jsonl
    base = writer(tmp_path / f"base{suffix}", [make_extra_info(), make_extra_info("cnn", "xs", "fp32")])
    failed = make_extra_info("cnn", "xs", "fp32", status=failure, reason=REASONS[failure])
    new = writer(tmp_path / f"new{suffix}", [make_extra_info(), failed])
    report = tmp_path / "report.json"
    status, out, _ = run(capsys, "check", "--baseline", str(base), str(new), "--json", str(report))
    assert status == 1, out
    (row,) = [r for r in json.loads(report.read_text())["rows"] if r["benchmark"] == "cnn-xs-fp32"]
    assert (row["metric"], row["verdict"]) == ("status", "REGRESSED")
    assert (row["baseline"], row["new"]) == ("ok", f"{failure}: {REASONS[failure]}")
    assert f"regression: cnn-xs-fp32 status: ok -> {failure}: {REASONS[failure]}" in out
    status, _, _ = run(capsys, "check", "--baseline", str(new), str(base), "--json", str(report))
    assert status == 0  # the way back is a fix
    (row,) = [r for r in json.loads(report.read_text())["rows"] if r["benchmark"] == "cnn-xs-fp32"]
    assert row["verdict"] == "fixed"


def test_check_newly_skipped_is_missing_not_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = write_benchmark_json(tmp_path / "base.json", [make_extra_info(), make_extra_info("cnn", "xs", "fp32")])
    skipped = make_extra_info("cnn", "xs", "fp32", status="skipped", reason="needs CUDA")
    new = write_benchmark_json(tmp_path / "new.json", [make_extra_info(), skipped])
    status, out, _ = run(capsys, "check", "--baseline", str(base), str(new))
    assert status == 0, out
    assert "ran in BASE, skipped in NEW" in out
    status, _, _ = run(capsys, "check", "--baseline", str(base), str(new), "--fail-on-missing")
    assert status == 1
