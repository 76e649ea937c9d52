"""The Throughput, Accuracy and Efficiency tables: every cell traced to its input."""

from __future__ import annotations

import re
from typing import Any

import pytest

from reports.load import ReportError, Result, Run, run_from_extra_info
from reports.metrics import METRICS, format_ratio, format_value
from reports.schema import case_id
from reports.synthetic import machine_info, make_extra_info
from reports.table import FORMATS, MAX_REASON, NOT_RUN, NOTHING_MEASURED, render_tables, shorten
from tests.reports_fixtures import find_row, parse_tables, session_results

LABELS = {metric.label: metric for metric in METRICS.values()}


@pytest.fixture
def tables() -> dict[str, list[dict[str, str]]]:
    return parse_tables(render_tables(session_results(), label="AMD EPYC 7B13"))


def test_three_tables_headed_in_order() -> None:
    text = render_tables(session_results())
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## Throughput", "## Accuracy", "## Efficiency"]


def test_exact_cells_and_ratios(tables: dict[str, list[dict[str, str]]]) -> None:
    samples = find_row(tables["Throughput"], family="dense", size="xs", phase="train", metric="samples/s")
    assert samples["fp32"] == "1k"
    assert samples["amp-bf16"] == "1.23k (1.23x)"  # 1234 / 1000
    assert samples["zero1"] == "520 (0.52x)"
    # int8 infers: its row is the infer phase's, with no fp32 inference in it to compare with
    infer = find_row(tables["Throughput"], family="dense", size="xs", phase="infer", metric="samples/s")
    assert infer["int8"] == "5k" and samples["int8"] == NOT_RUN
    step = find_row(tables["Throughput"], family="dense", size="xs", phase="train", metric="step time")
    assert step["fp32"] == "32 ms"
    assert step["amp-bf16"] == "26 ms (0.81x)"
    tokens = find_row(tables["Throughput"], family="transformer", size="xs", phase="train", metric="tokens/s")
    assert tokens["amp-bf16"] == "38.4k (1.50x)"

    accuracy = find_row(tables["Accuracy"], family="dense", size="xs", phase="train", metric="accuracy")
    assert accuracy["fp32"] == "97.0%"
    assert accuracy["amp-bf16"] == "96.8% (-0.2 pp)"
    infer = find_row(tables["Accuracy"], family="dense", size="xs", phase="infer", metric="accuracy")
    assert infer["int8"] == "95.5%"  # compared within its phase only

    memory = find_row(tables["Efficiency"], family="dense", size="xs", phase="train", metric="peak memory")
    assert memory["fp32"] == "512 MiB"
    assert memory["amp-bf16"] == "256 MiB (0.50x)"
    mfu = find_row(tables["Efficiency"], family="dense", size="xs", phase="train", metric="MFU")
    assert mfu["fp32"] == "25%"
    state = find_row(tables["Efficiency"], family="dense", size="xs", phase="train", metric="model state")
    assert state["amp-bf16"] == "1.53 MiB (1.00x)"


def test_missing_cells_show_their_reason(tables: dict[str, list[dict[str, str]]]) -> None:
    samples = find_row(tables["Throughput"], family="dense", size="xs", phase="train", metric="samples/s")
    assert samples["amp-fp16"] == "oom: CUDA out of memory | tried 2 GiB"
    assert samples["zero3"] == "skipped: needs DeepSpeed"
    mfu = find_row(tables["Efficiency"], family="dense", size="xs", phase="train", metric="MFU")
    assert mfu["amp-bf16"] == "absent: no peak probe for bfloat16"
    # not run at all
    row = find_row(tables["Throughput"], family="dense", size="s", phase="train", metric="samples/s")
    assert row["zero1"] == NOT_RUN
    # a row group where nothing ran gets one row with the reason
    failed = find_row(tables["Efficiency"], family="cnn", size="m", phase="train")
    assert failed["metric"] == NOTHING_MEASURED
    assert failed["fp32"] == "error: RuntimeError: shape mismatch"


def _expected_cell(metric_key: str, result: Result | None, reference: Result | None) -> str:
    if result is None:
        return NOT_RUN
    raw = result.extra_info.get(metric_key) if result.status == "ok" else None
    if raw is None:
        return shorten(result.missing_reason(metric_key))
    metric = METRICS[metric_key]
    text = format_value(metric, raw)
    ref = reference.extra_info.get(metric_key) if reference is not None else None
    if result is reference or ref is None:
        return text
    compared = format_ratio(metric, raw, ref)
    return text if compared is None else f"{text} ({compared})"


def test_every_cell_traces_to_an_input_field() -> None:
    run = run_from_extra_info(session_results())
    tables = parse_tables(render_tables(run))
    checked = 0
    for rows in tables.values():
        for row in rows:
            if row["metric"] == NOTHING_MEASURED:
                continue
            metric = LABELS[row["metric"]]
            for header, cell in row.items():
                if header in ("family", "size", "phase", "metric"):
                    continue
                result = run.get(case_id(row["family"], row["size"], header, row["phase"]))
                reference = run.get(case_id(row["family"], row["size"], "fp32", row["phase"]))
                assert cell == _expected_cell(metric.key, result, reference), (row, header)
                checked += 1
    assert checked > 50


def test_absent_metric_never_renders_as_zero() -> None:
    results = [
        make_extra_info("dense", "xs", "fp32", power_w=None, samples_per_j=None),
        make_extra_info("dense", "xs", "amp-bf16", power_w=40.0, samples_per_j=None, absent={}),
    ]
    text = render_tables(results)
    efficiency = parse_tables(text)["Efficiency"]
    power = find_row(efficiency, family="dense", size="xs", metric="power (W)")
    assert power["fp32"] == "absent: RAPL not readable"
    assert power["amp-bf16"] == "40"  # no ratio against a reference that has no value
    # absent in every variant: no row of blanks or zeros, a note with the reasons
    assert not [row for row in efficiency if row["metric"] == "samples/J"]
    assert "samples/J left out (in every row): absent, RAPL not readable; no reason given" in text
    for rows in parse_tables(text).values():
        for row in rows:
            for cell in list(row.values())[3:]:
                assert not re.match(r"^-?0(\.0+)?(?![\d.])", cell), row


def test_metric_absent_in_a_whole_row_becomes_a_note() -> None:
    text = render_tables(session_results())
    rows = parse_tables(text)["Throughput"]
    assert not [r for r in rows if r["family"] == "dense" and r["metric"] == "tokens/s"]
    assert (
        "tokens/s left out (dense-xs (train), dense-xs (infer), dense-s (train)): absent, not a sequence model" in text
    )


def test_rows_sorted_by_family_then_size_order() -> None:
    results = [
        make_extra_info(family, size, "fp32")
        for family in ("transformer", "dense", "cnn")
        for size in ("xl", "s", "xs", "m", "l")
    ]
    rows = parse_tables(render_tables(results))["Throughput"]
    keys = list(dict.fromkeys((r["family"], r["size"]) for r in rows))
    sizes = ["xs", "s", "m", "l", "xl"]
    assert keys == [(f, s) for f in ("cnn", "dense", "transformer") for s in sizes]


def test_variants_as_columns_fp32_first() -> None:
    variants = ["zero2+bf16", "distill", "zero2", "amp-bf16", "fp32", "amp-fp16"]
    text = render_tables([make_extra_info("dense", "xs", v) for v in variants])
    header = parse_tables(text)["Throughput"][0].keys()
    assert list(header)[3:] == ["fp32", "amp-bf16", "amp-fp16", "zero2", "zero2+bf16", "distill"]


def test_world_sizes_are_not_mixed() -> None:
    results = [
        make_extra_info("dense", "xs", "fp32", world_size=1, samples_per_s=100.0),
        make_extra_info("dense", "xs", "zero1", world_size=2, samples_per_s=150.0),
        make_extra_info("dense", "xs", "fp32", world_size=2, samples_per_s=180.0),
    ]
    run = Run(machine_info(), [Result(info, info["id"]) for info in results], "<test>")
    rows = parse_tables(render_tables(run))["Throughput"]
    one = find_row(rows, family="dense", size="xs", metric="samples/s", **{"world size": "1"})
    two = find_row(rows, family="dense", size="xs", metric="samples/s", **{"world size": "2"})
    assert (one["fp32"], one["zero1"]) == ("100", NOT_RUN)
    assert (two["fp32"], two["zero1"]) == ("180", "150 (0.83x)")


def test_several_machines_get_a_machine_column() -> None:
    cpu = run_from_extra_info([make_extra_info(samples_per_s=100.0)], machine_info("EPYC"))
    gpu_results = [make_extra_info(samples_per_s=9000.0)]
    gpu = run_from_extra_info(gpu_results, machine_info("NVIDIA H100", gpu_name="NVIDIA H100"))
    rows = parse_tables(render_tables([cpu, gpu]))["Throughput"]
    assert find_row(rows, machine="EPYC", metric="samples/s")["fp32"] == "100"
    assert find_row(rows, machine="NVIDIA H100", metric="samples/s")["fp32"] == "9k"


def test_same_benchmark_twice_on_one_machine_is_an_error() -> None:
    first = run_from_extra_info([make_extra_info()], source="a.json")
    second = run_from_extra_info([make_extra_info()], source="b.json")
    with pytest.raises(ReportError, match=r"^b\.json: dense-xs-fp32 .* is also in a\.json"):
        render_tables([first, second])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_renders_the_same_table(fmt: str) -> None:
    text = render_tables(session_results(), fmt)
    for title in ("Throughput", "Accuracy", "Efficiency"):
        assert title in text
    assert "1.23k (1.23x)" in text
    marker = {"html": "<table>", "latex": "\\begin{tabular}", "github": "|---", "pipe": "|:--"}
    assert marker.get(fmt, "samples/s") in text


def test_markdown_escapes_pipes_in_reasons() -> None:
    text = render_tables(session_results(), "github")
    assert "oom: CUDA out of memory \\| tried 2 GiB" in text


def test_long_reasons_are_shortened() -> None:
    reason = "Traceback: " + "x" * 300
    text = render_tables([make_extra_info(status="error", reason=reason)])
    cell = find_row(parse_tables(text)["Throughput"], family="dense")["fp32"]
    assert cell.startswith("error: Traceback: xxx") and cell.endswith("...")
    assert len(cell) == MAX_REASON


def test_render_tables_accepts_dicts_run_or_runs() -> None:
    results = session_results()
    run = run_from_extra_info(results)
    assert render_tables(results) == render_tables(run) == render_tables([run])


def test_render_tables_rejects_bad_input() -> None:
    bad: dict[str, Any] = make_extra_info(samples_per_s="fast")
    with pytest.raises(ReportError, match="samples_per_s: expected a number or null, got str"):
        render_tables([bad])
    with pytest.raises(ReportError, match="no benchmark results"):
        render_tables([])
    with pytest.raises(ReportError, match="format 'rst'"):
        render_tables(session_results(), "rst")
