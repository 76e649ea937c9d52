"""The Throughput, Accuracy and Efficiency tables: every cell traced to its input."""

from __future__ import annotations

import re
from typing import Any

import pytest

from reports.load import ReportError, Result, Run, run_from_extra_info
from reports.metrics import METRICS, format_ratio, format_value
from reports.schema import case_id
from reports.synthetic import machine_info, make_extra_info
from reports.table import FORMATS, MAX_NOTE, NOT_RUN, NOTHING_MEASURED, TIMING_ROW, render_tables
from reports.trust import format_spread
from tests.reports_fixtures import find_row, parse_notes, parse_tables, session_results

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
    # 1234 / 1000; each step time within -2%..+3% of its median: the ratio within 1.23 * [0.95, 1.05]
    assert samples["amp-bf16"] == "1.23k (1.23x ±6%)"
    assert samples["zero1"] == "520 (0.52x ±6%)"
    # int8 infers: its row is the infer phase's, with no fp32 inference in it to compare with
    infer = find_row(tables["Throughput"], family="dense", size="xs", phase="infer", metric="samples/s")
    assert infer["int8"].startswith("5k") and samples["int8"] == NOT_RUN
    step = find_row(tables["Throughput"], family="dense", size="xs", phase="train", metric="step time")
    assert step["fp32"] == "32 ms"
    assert step["amp-bf16"] == "26 ms (0.81x ±6%)"
    tokens = find_row(tables["Throughput"], family="transformer", size="xs", phase="train", metric="tokens/s")
    assert tokens["amp-bf16"] == "38.4k (1.50x ±6%)"

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
    assert samples["amp-fp16"] == "oom [2]"
    assert samples["zero3"] == "skipped [3]"
    mfu = find_row(tables["Efficiency"], family="dense", size="xs", phase="train", metric="MFU")
    assert mfu["amp-bf16"] == "absent [2]"
    # not run at all
    row = find_row(tables["Throughput"], family="dense", size="s", phase="train", metric="samples/s")
    assert row["zero1"] == NOT_RUN
    # a row group where nothing ran gets one row with the reason
    failed = find_row(tables["Efficiency"], family="cnn", size="m", phase="train")
    assert failed["metric"] == NOTHING_MEASURED
    assert failed["fp32"] == "error [1]"
    notes = parse_notes(render_tables(session_results()))
    assert notes["Throughput"] == {
        "[1]": "RuntimeError: shape mismatch",
        "[2]": "CUDA out of memory | tried 2 GiB",
        "[3]": "needs DeepSpeed",
    }
    assert notes["Efficiency"]["[2]"] == "no peak probe for bfloat16"


def _interval(metric_key: str, result: Result, reference: Result) -> tuple[float, float] | None:
    """The ratio's interval, recomputed from both step-time intervals (ratio of the bounds)."""
    metric = METRICS[metric_key]
    if metric.timing is None:
        return None

    def bounds(r: Result) -> tuple[float, float]:
        low, high = r.extra_info["step_time_ci_s"]
        value, median = r.extra_info[metric_key], r.extra_info["step_time_s"]
        if metric.timing == "time":
            return value * low / median, value * high / median
        return value * median / high, value * median / low

    a, b = bounds(result), bounds(reference)
    return a[0] / b[1], a[1] / b[0]


def _expected_cell(
    metric_key: str, result: Result | None, reference: Result | None, cell: str, notes: dict[str, str]
) -> str:
    if result is None:
        return NOT_RUN
    raw = result.extra_info.get(metric_key) if result.status == "ok" else None
    if raw is None:  # the status in the cell, the reason in the note the cell cites
        status = result.status if result.status != "ok" else "absent"
        reason = result.reason if result.status != "ok" else result.absent_reason(metric_key)
        number = cell.removeprefix(f"{status} ")
        assert notes.get(number) == reason, (cell, notes)
        return f"{status} {number}"
    metric = METRICS[metric_key]
    text = format_value(metric, raw)
    ref = reference.extra_info.get(metric_key) if reference is not None else None
    if result is reference or ref is None:
        return text
    assert reference is not None
    compared = format_ratio(metric, raw, ref)
    interval = _interval(metric_key, result, reference) if metric.ratio == "ratio" else None
    if compared is not None and interval is not None:
        compared += " " + format_spread(raw / ref, interval)
    return text if compared is None else f"{text} ({compared})"


def test_every_cell_traces_to_an_input_field() -> None:
    run = run_from_extra_info(session_results())
    text = render_tables(run)
    tables, notes = parse_tables(text), parse_notes(text)
    checked = 0
    for title, rows in tables.items():
        for row in rows:
            if row["metric"] in (NOTHING_MEASURED, TIMING_ROW):  # the timing row: its own test
                continue
            metric = LABELS[row["metric"]]
            for header, cell in row.items():
                if header in ("family", "size", "phase", "metric"):
                    continue
                result = run.get(case_id(row["family"], row["size"], header, row["phase"]))
                reference = run.get(case_id(row["family"], row["size"], "fp32", row["phase"]))
                assert cell == _expected_cell(metric.key, result, reference, cell, notes[title]), (row, header)
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
    assert power["fp32"] == "absent [1]"
    assert "- [1] RAPL not readable" in text
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
    where = "dense-xs (train), dense-xs (infer), dense-s (train)"
    assert f"tokens/s left out ({where}): absent, not a sequence model" in text


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
    assert (two["fp32"], two["zero1"]) == ("180", "150 (0.83x ±6%)")


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
    assert {"latex": r"1.23k (1.23x ±6\%)"}.get(fmt, "1.23k (1.23x ±6%)") in text
    marker = {"html": "<table>", "latex": "\\begin{tabular}", "github": "|---", "pipe": "|:--"}
    assert marker.get(fmt, "samples/s") in text


def test_reasons_are_numbered_notes_not_repeated_in_rows() -> None:
    text = render_tables(session_results(), "github")
    throughput = text.split("## Accuracy")[0]
    assert "| oom [2] " in throughput and "CUDA out of memory" not in throughput.split("\n- ")[0]
    assert throughput.count("- [2] CUDA out of memory | tried 2 GiB") == 1  # a note, not a table row


def test_long_reasons_are_shortened_in_their_note() -> None:
    reason = "Traceback: " + "x" * 300
    text = render_tables([make_extra_info(status="error", reason=reason)])
    cell = find_row(parse_tables(text)["Throughput"], family="dense")["fp32"]
    assert cell == "error [1]"
    (note,) = [line for line in text.split("## Accuracy")[0].splitlines() if line.startswith("- [1] ")]
    assert note.startswith("- [1] Traceback: xxx") and note.endswith("...")
    assert len(note) == len("- [1] ") + MAX_NOTE


def test_unstable_and_contended_cells_are_marked() -> None:
    results = [
        make_extra_info("dense", "xs", "fp32", unstable=True),
        make_extra_info("dense", "xs", "amp-bf16", contended=True),
    ]
    text = render_tables(results)
    throughput, efficiency = parse_tables(text)["Throughput"], parse_tables(text)["Efficiency"]
    step = find_row(throughput, metric="step time")
    assert step["fp32"].endswith("~") and not step["amp-bf16"].endswith("~")
    # the ratio's interval covers both: fp32 ±12%, bf16 -2%..+3%; known to ±10% or worse: two digits
    assert re.fullmatch(r"\S+ [mu]s \(0\.62x ±1[5-9]%\)", step["amp-bf16"]), step
    # each result's step-time interval, and contention, once per result: the timing row
    timing = find_row(throughput, metric="timing")
    assert (timing["fp32"], timing["amp-bf16"]) == ("±12%~", "±3% contended")
    assert "~: unstable, CI half-width > 5% of the median step time" in text
    assert "contended: other work ran on the machine" in text.split("## Accuracy")[0]
    assert "contended" not in text.split("## Accuracy")[1]  # no cell there says it
    memory = find_row(efficiency, metric="peak memory")  # not timed: no marks
    assert "~" not in memory["fp32"]
    assert find_row(efficiency, metric="MFU")["fp32"].endswith("~")


def test_the_timing_cell_shows_the_half_width_that_decides_the_mark() -> None:
    """An interval of -2%..+7.4% has a half-width of 4.7%: stable at 5%, and read as ±5% (its larger
    side, 7.4%, would read over the threshold beside no mark); 5.2% reads ±6%~."""
    cells = []
    for low, high in ((0.98, 1.074), (0.97, 1.074)):
        info = make_extra_info("dense", "xs", "fp32", step_time_s=0.01)
        rel = (high - low) / 2
        info |= {"step_time_ci_s": [0.01 * low, 0.01 * high], "step_time_ci_rel": rel, "stable": rel <= 0.05}
        cells.append(find_row(parse_tables(render_tables([info]))["Throughput"], metric="timing")["fp32"])
    assert cells == ["±5%", "±6%~"]


def test_ratio_precision_follows_its_interval() -> None:
    from reports.trust import format_ratio_with_interval

    assert format_ratio_with_interval(11.44, (11.0, 11.9)) == "11.4x ±5%"
    assert format_ratio_with_interval(11.44, (8.5, 14.0)) == "11x ±26%"
    assert format_ratio_with_interval(0.52, (0.49, 0.55)) == "0.52x ±6%"
    assert format_ratio_with_interval(1.0, (0.8, 1.25)) == "1.0x ±25%"
    assert format_ratio_with_interval(2.0, None) == "2.00x"


def test_github_tables_of_the_smoke_tier_fit_in_120_columns() -> None:
    """The smoke tier's matrix (3 variants), at its widest: every result unstable and contended,
    ratios of two digits, MFU below 0.01%, long skip and timeout reasons."""
    results = []
    for family, sizes in {"dense": ("xs", "s"), "cnn": ("xs", "s"), "transformer": ("xs", "s", "m")}.items():
        for size in sizes:
            for variant in ("fp32", "amp-bf16", "amp-fp16"):
                results.append(_smoke_case(family, size, variant))
    text = render_tables(results, "github", label="AMD EPYC")
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len(rows) > 40 and max(map(len, rows)) <= 120, max(rows, key=len)
    assert "skipped [" in text and "timeout [" in text and "contended" in text and "~" in text


def _smoke_case(family: str, size: str, variant: str) -> dict[str, Any]:
    if size == "m":
        reason = "estimated at least 403s of compute at the measured float32 peak of 18.9 GFLOP/s on cpu, over 70s"
        return make_extra_info(family, size, variant, status="skipped", reason=reason)
    if size == "s" and variant == "amp-fp16":
        reason = "projected 106s from the measured warm-up step of 0.278s (5 timed rounds and the accuracy task)"
        return make_extra_info(family, size, variant, status="skipped", reason=reason)
    if (family, size, variant) == ("cnn", "s", "amp-bf16"):
        reason = "still running after --case-timeout 70s, in stage accuracy; killed with all its processes"
        return make_extra_info(family, size, variant, status="timeout", reason=reason)
    slower = 1.0 if variant == "fp32" else 18.3
    base = make_extra_info(family, size, variant)
    step = base["step_time_s"] * slower * 16
    tokens = base["samples_per_step"] / step * 128 if family == "transformer" else None
    return make_extra_info(
        family, size, variant, step_time_s=step, samples_per_s=base["samples_per_step"] / step,
        tflops=base["flops_per_step"] / step / 1e12, tokens_per_s=tokens, mfu=0.000912 / slower,
        unstable=True, contended=True,
    )  # fmt: skip


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
