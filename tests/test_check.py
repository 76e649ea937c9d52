"""``python -m reports check``: the regression gate on hand-built inputs.

Inputs are pytest-benchmark-shaped JSON (and streamed jsonl) with ``extra_info`` per
``docs/schema.md``, raw ``step_times_s`` included; step times are drawn with a fixed seed so
every expected verdict below follows from the numbers built here.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reports import check
from reports.errors import ReportWarning
from reports.stats import compare_samples, min_p_value, proportion_interval
from reports.synthetic import machine_info, make_extra_info, write_benchmark_json, write_jsonl
from tests.reports_fixtures import run_reports

STEP_S = 0.010  # median step time of the baseline


def step_times(median_s: float, seed: int, n: int = 40, spread: float = 0.04) -> list[float]:
    """``n`` step times scattered log-normally (``spread``) around ``median_s``."""
    rng = np.random.default_rng(seed)
    return [float(t) for t in median_s * np.exp(rng.normal(0.0, spread, n))]


def result(
    family: str = "dense",
    size: str = "xs",
    variant: str = "fp32",
    *,
    step_s: float = STEP_S,
    seed: int = 0,
    n: int = 40,
    spread: float = 0.04,
    **overrides: Any,
) -> dict[str, Any]:
    """One ok benchmark whose throughput metrics follow from its raw step times."""
    info = make_extra_info(family, size, variant)
    times = step_times(step_s, seed, n, spread)
    median = statistics.median(times)
    info.update(
        step_times_s=times,
        step_time_s=median,
        samples_per_s=info["samples_per_step"] / median,
        tflops=info["flops_per_step"] / median / 1e12,
        mfu=info["flops_per_step"] / median / 1e12 / 0.18,
    )
    if info["tokens_per_s"] is not None:
        info["tokens_per_s"] = info["samples_per_s"] * info["seq_len"]
    info.update(overrides)
    return info


def write(path: Path, *infos: dict[str, Any], machine: dict[str, Any] | None = None) -> Path:
    return write_benchmark_json(path, list(infos), machine)


def run_check(*args: str | Path) -> tuple[int, str, str, dict[str, Any]]:
    """``reports.check.main`` in process: exit code, stdout, stderr and the JSON report."""
    import contextlib
    import io
    import tempfile

    out, err = io.StringIO(), io.StringIO()
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        with contextlib.redirect_stderr(err):
            code = check.main([*map(str, args), "--json", str(report)], stdout=out)
        data = json.loads(report.read_text()) if report.exists() else {}
    return code, out.getvalue(), err.getvalue(), data


def row(report: dict[str, Any], benchmark: str, metric: str) -> dict[str, Any]:
    rows = [r for r in report["rows"] if r["benchmark"] == benchmark and r["metric"] == metric]
    assert len(rows) == 1, f"{len(rows)} rows for {benchmark} {metric}"
    return rows[0]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(tmp_path / "base.json", result(seed=1), result("transformer", "xs", seed=2))


# ---------------------------------------------------------------------------------------
# figure (3): 15% slower, 5 points less accurate, faster


def test_fifteen_percent_slower_fails(base: Path, tmp_path: Path) -> None:
    new = write(
        tmp_path / "new.json",
        result(step_s=STEP_S * 1.15, seed=11),
        result("transformer", "xs", seed=12),
    )
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 1, out
    step = row(report, "dense-xs-fp32", "step_time_s")
    assert step["verdict"] == "REGRESSED"
    assert 0.10 < step["change"] < 0.20
    assert step["p_value"] < 1e-6
    assert step["common_language"] > 0.9  # nearly every new step slower than every old one
    assert 0.10 < step["hodges_lehmann_rel"] < 0.20
    # throughput carries the same evidence: same test, not a second chance of noise
    throughput = row(report, "dense-xs-fp32", "samples_per_s")
    assert throughput["verdict"] == "REGRESSED"
    assert throughput["p_value"] == pytest.approx(step["p_value"])
    assert throughput["change"] == pytest.approx(1 / (1 + step["change"]) - 1)
    assert row(report, "transformer-xs-fp32", "step_time_s")["verdict"] == "ok"
    assert "FAIL: 3 regression(s) in 1 of 2 compared benchmark(s)" in out


def test_accuracy_drop_of_five_points_fails(base: Path, tmp_path: Path) -> None:
    new = write(
        tmp_path / "new.json",
        result(seed=1, accuracy=0.97 - 0.05),
        result("transformer", "xs", seed=2),
    )
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 1, out
    accuracy = row(report, "dense-xs-fp32", "accuracy")
    assert accuracy["verdict"] == "REGRESSED"
    assert accuracy["change"] == pytest.approx(-0.05)
    assert "-5.0 pp" in out
    assert row(report, "dense-xs-fp32", "step_time_s")["verdict"] == "ok"  # same step times


def test_faster_run_passes(base: Path, tmp_path: Path) -> None:
    new = write(
        tmp_path / "new.json",
        result(step_s=STEP_S * 0.8, seed=21),
        result("transformer", "xs", step_s=STEP_S * 0.9, seed=22),
    )
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 0, out
    assert row(report, "dense-xs-fp32", "step_time_s")["verdict"] == "improved"
    assert row(report, "dense-xs-fp32", "samples_per_s")["verdict"] == "improved"
    assert "PASS: no regression in 2 compared benchmark(s)" in out


def test_cli_exit_codes_in_a_subprocess(base: Path, tmp_path: Path) -> None:
    slower = write(tmp_path / "slower.json", result(step_s=STEP_S * 1.15, seed=11))
    done = run_reports("check", "--baseline", str(base), str(slower))
    assert done.returncode == 1, done.stderr
    assert "REGRESSED" in done.stdout
    faster = write(tmp_path / "faster.json", result(step_s=STEP_S * 0.85, seed=11))
    assert run_reports("check", "--baseline", str(base), str(faster)).returncode == 0


# ---------------------------------------------------------------------------------------
# noise, thresholds, raw times


def test_noise_alone_does_not_fail(tmp_path: Path) -> None:
    # A/A: the same distribution, new draws
    base = write(tmp_path / "a1.json", result(seed=31))
    same = write(tmp_path / "a2.json", result(seed=32))
    code, _, _, report = run_check("--baseline", base, same)
    assert code == 0
    assert abs(row(report, "dense-xs-fp32", "step_time_s")["change"]) < 0.05
    # a 12% higher median from 5 very noisy rounds: beyond the threshold, not significant
    noisy_base = write(tmp_path / "n1.json", result(seed=33, n=5, spread=0.5))
    noisy_new = write(tmp_path / "n2.json", result(seed=34, n=5, spread=0.5))
    code, out, _, report = run_check("--baseline", noisy_base, noisy_new)
    step = row(report, "dense-xs-fp32", "step_time_s")
    assert step["change"] > 0.05
    assert step["verdict"] == "not significant"
    assert step["p_value"] >= 0.01
    assert code == 0, out


def test_threshold_only_without_raw_times(tmp_path: Path) -> None:
    base = write(tmp_path / "old.json", result(seed=1))
    data = json.loads(base.read_text())
    del data["benchmarks"][0]["extra_info"]["step_times_s"]  # an old file: only the median
    del data["benchmarks"][0]["stats"]["data"]  # (saved with --benchmark-save-data)
    base.write_text(json.dumps(data))
    new = write(tmp_path / "new.json", result(step_s=STEP_S * 1.08, seed=1))
    code, out, _, report = run_check("--baseline", base, new)
    step = row(report, "dense-xs-fp32", "step_time_s")
    assert step["verdict"] == "REGRESSED (threshold only)"
    assert step["note"] == "threshold only: no raw step times in BASE"
    assert step["p_value"] is None
    assert code == 1, out
    # pytest-benchmark's own raw data serves when extra_info has none
    del data["benchmarks"][0]["stats"]  # the stats as written, with "data"
    data["benchmarks"][0]["stats"] = json.loads(new.read_text())["benchmarks"][0]["stats"]
    base.write_text(json.dumps(data))
    code, _, _, report = run_check("--baseline", base, new)
    step = row(report, "dense-xs-fp32", "step_time_s")
    assert step["p_value"] is not None and step["verdict"] != "REGRESSED (threshold only)"


def test_thresholds_per_metric_and_per_benchmark_pattern(base: Path, tmp_path: Path) -> None:
    new = write(
        tmp_path / "new.json",
        result(step_s=STEP_S * 1.15, seed=11, accuracy=0.962),
        result("transformer", "xs", step_s=STEP_S * 1.15, seed=12),
    )
    code, _, _, report = run_check("--baseline", base, new)
    assert code == 1
    assert row(report, "dense-xs-fp32", "accuracy")["verdict"] == "REGRESSED"  # -0.8 pp
    # a global step-time threshold also covers the throughput derived from it
    code, _, _, report = run_check(
        "--baseline", base, new, "--threshold", "step_time_s=20%", "--threshold", "accuracy=1pp"
    )
    assert code == 0
    assert row(report, "dense-xs-fp32", "samples_per_s")["threshold"] == pytest.approx(0.2)
    assert row(report, "dense-xs-fp32", "accuracy")["threshold"] == pytest.approx(0.01)
    # a pattern relaxes only the benchmarks it matches
    code, _, _, report = run_check(
        "--baseline", base, new, "--threshold", "transformer-*:step_time_s=0.2",
        "--threshold", "accuracy=0.01",
    )  # fmt: skip
    assert code == 1
    assert row(report, "transformer-xs-fp32", "step_time_s")["verdict"] == "ok"
    assert row(report, "dense-xs-fp32", "step_time_s")["verdict"] == "REGRESSED"
    # "off": step time and the throughput derived from it are not gated (other machines)
    code, _, _, report = run_check(
        "--baseline", base, new, "--threshold", "step_time_s=off", "--threshold", "accuracy=1pp"
    )
    assert code == 0
    assert {r["metric"] for r in report["rows"]} & {"step_time_s", "samples_per_s"} == set()


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        ("speed=0.1", "unknown metric 'speed'; allowed: step_time_s, samples_per_s"),
        ("power_w=0.1", "has no direction, so it cannot regress 'power_w'"),
        ("accuracy=5%", "accuracy is in points; give 0.5pp or the fraction 0.005"),
        ("step_time_s=-1", "the threshold must be a number >= 0"),
        ("step_time_s", "expected [ID_PATTERN:]METRIC=VALUE"),
    ],
)
def test_bad_threshold_exits_2(base: Path, threshold: str, message: str) -> None:
    code, out, err, _ = run_check("--baseline", base, base, "--threshold", threshold)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: --threshold {threshold}: ")
    assert message in err
    assert err.count("\n") == 1


def test_absent_metric_is_not_compared_never_zero(tmp_path: Path) -> None:
    base = write(tmp_path / "base.json", result(seed=1))
    reason = "no /sys/class/powercap zones"
    absent = {**make_extra_info()["absent"], "peak_mem_bytes": reason}
    new = write(tmp_path / "new.json", result(seed=1, peak_mem_bytes=None, absent=absent))
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 0, out
    mem = row(report, "dense-xs-fp32", "peak_mem_bytes")
    assert mem["verdict"] == "not compared"
    assert mem["change"] is None
    assert mem["note"] == f"absent in NEW: {reason}"
    energy = row(report, "dense-xs-fp32", "energy_j_per_sample")
    assert (energy["verdict"], energy["note"]) == ("not compared", "absent: RAPL not readable")


def test_timings_from_different_timers_are_not_compared(tmp_path: Path) -> None:
    base = write(tmp_path / "base.json", result(seed=1, timer="perf_counter"))
    new = write(tmp_path / "new.json", result(step_s=STEP_S * 1.5, seed=2, timer="cuda-event"))
    code, _, _, report = run_check("--baseline", base, new)
    assert code == 0
    step = row(report, "dense-xs-fp32", "step_time_s")
    assert (step["verdict"], step["note"]) == ("not compared", "timed differently (perf_counter -> cuda-event)")


def test_memory_and_energy_thresholds(tmp_path: Path) -> None:
    base = write(tmp_path / "base.json", result(seed=1, energy_j_per_sample=1.0))
    new = write(
        tmp_path / "new.json",
        result(seed=1, peak_mem_bytes=2 * result()["peak_mem_bytes"], energy_j_per_sample=1.09),
    )
    code, _, _, report = run_check("--baseline", base, new)
    assert code == 1
    assert row(report, "dense-xs-fp32", "peak_mem_bytes")["verdict"] == "REGRESSED"
    assert row(report, "dense-xs-fp32", "energy_j_per_sample")["verdict"] == "ok"  # +9% < 10%


# ---------------------------------------------------------------------------------------
# status, missing benchmarks


@pytest.mark.parametrize("status", ["error", "oom"])
def test_status_ok_to_error_or_oom_fails(tmp_path: Path, status: str) -> None:
    base = write_jsonl(tmp_path / "base.jsonl", [result(seed=1), result("cnn", "xs", seed=2)])
    failed = make_extra_info("cnn", "xs", "fp32", status=status, reason="out of memory | 2 GiB")
    new = write_jsonl(tmp_path / "new.jsonl", [result(seed=1), failed])
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 1, out
    status_row = row(report, "cnn-xs-fp32", "status")
    assert status_row["verdict"] == "REGRESSED"
    assert (status_row["baseline"], status_row["new"]) == ("ok", f"{status}: out of memory | 2 GiB")
    # the way back is not a regression
    code, _, _, report = run_check("--baseline", new, base)
    assert code == 0
    assert row(report, "cnn-xs-fp32", "status")["verdict"] == "fixed"


def test_disappeared_benchmark_is_reported(base: Path, tmp_path: Path) -> None:
    new = write(tmp_path / "new.json", result(seed=1), result("cnn", "xs", seed=3))
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 0, out
    missing = row(report, "transformer-xs-fp32", "benchmark")
    assert missing["verdict"] == "missing"
    assert "in BASE, not in NEW" in missing["note"]
    assert row(report, "cnn-xs-fp32", "benchmark")["verdict"] == "added"
    assert "1 missing in NEW" in out
    code, _, _, _ = run_check("--baseline", base, new, "--fail-on-missing")
    assert code == 1


# ---------------------------------------------------------------------------------------
# inputs: unusable files, machines, pytest-benchmark storage


def test_unusable_input_exits_2_with_one_line_naming_the_file(base: Path, tmp_path: Path) -> None:
    not_json = tmp_path / "broken.json"
    not_json.write_text("{not json")
    wrong_schema = write(tmp_path / "old-schema.json", result(schema="archbench/0"))
    cases = [
        (not_json, f"error: {not_json}: not JSON"),
        (wrong_schema, f"error: {wrong_schema}: benchmarks[0] (test_train[dense-xs-fp32]):"),
        (tmp_path / "nowhere.json", "error: "),
    ]
    for path, start in cases:
        code, out, err, _ = run_check("--baseline", base, path)
        assert code == 2, err
        assert out == ""
        assert err.startswith(start)
        assert str(path.name) in err
        assert err.count("\n") == 1  # one line, no traceback
    done = run_reports("check", "--baseline", str(not_json), str(base))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {not_json}: not JSON")
    assert "Traceback" not in done.stderr


def test_other_machine_is_refused_unless_cross_machine(base: Path, tmp_path: Path) -> None:
    other = write(tmp_path / "gpu.json", result(seed=1), machine=machine_info("NVIDIA H100", "NVIDIA H100"))
    code, out, err, _ = run_check("--baseline", base, other)
    assert code == 2
    assert out == ""
    assert err.startswith(f"error: {other}: not the machine of {base} (label 'AMD EPYC 7B13'")
    assert err.rstrip().endswith("pass --cross-machine to compare anyway")
    assert err.count("\n") == 1
    code, out, _, report = run_check("--baseline", base, other, "--cross-machine")
    assert code == 0
    assert any(n.startswith("cross-machine comparison: label") for n in report["notes"])


def test_software_change_is_reported_not_refused(base: Path, tmp_path: Path) -> None:
    upgraded = machine_info()
    upgraded["archbench"]["torch"] = "2.6.0"
    new = write(tmp_path / "new.json", result(seed=1), machine=upgraded)
    code, out, _, _ = run_check("--baseline", base, new)
    assert code == 0
    assert "software changed: torch '2.5.1' vs '2.6.0'" in out


def test_pytest_benchmark_storage_as_baseline(base: Path, tmp_path: Path) -> None:
    storage = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    storage.mkdir(parents=True)
    old = write(storage / "0001_abc_20250101_000000.json", result(step_s=STEP_S * 0.8, seed=5))
    newest = write(storage / "0002_def_20250102_000000.json", result(seed=1))
    slower = write(tmp_path / "slower.json", result(step_s=STEP_S * 1.15, seed=11))
    # a storage id, looked up under --storage
    code, out, _, report = run_check("--baseline", "0002", slower, "--storage", tmp_path / ".benchmarks")
    assert code == 1, out
    assert report["baseline"]["source"] == str(newest)
    # the storage directory: its newest saved run
    with pytest.warns(ReportWarning, match=r"holds 2 runs; using the newest, 0002_def_20250102_000000\.json"):
        code, _, _, report = run_check("--baseline", tmp_path / ".benchmarks", base)
    assert code == 0
    assert report["baseline"]["source"] == str(newest)
    # and from the working directory, the way CI calls it
    done = run_reports("check", "--baseline", "0001", str(base), cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # 0001 ran 20% faster than base
    assert str(old.name) in done.stdout


def test_markdown_summary(base: Path, tmp_path: Path) -> None:
    new = write(
        tmp_path / "new.json",
        result(step_s=STEP_S * 1.15, seed=11),
        result("transformer", "xs", seed=2, accuracy=0.9),
    )
    code, out, _, _ = run_check("--baseline", base, new, "--markdown")
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == "## archbench check: regression"
    assert "**FAIL: 4 regression(s) in 2 of 2 compared benchmark(s)**" in lines
    header = "| benchmark | metric | baseline | new | change | threshold | p | effect | verdict | note |"
    assert any(line.replace("  ", " ").replace("  ", " ") == header for line in lines) or any(
        line.split() == header.split() for line in lines
    )
    regressed = [line for line in lines if "**REGRESSED**" in line]
    # notable rows first, then every row again inside <details>
    assert len(regressed) == 8
    assert "<details><summary>All " in out and out.rstrip().endswith("</details>")
    assert any("step_time_s" in line and "+1" in line for line in regressed)


# ---------------------------------------------------------------------------------------
# statistics


def test_rank_test_and_effect_sizes() -> None:
    baseline = [1.0, 2.0, 3.0, 4.0, 5.0]
    shifted = [x + 10 for x in baseline]
    test = compare_samples(baseline, shifted, "greater")
    assert test.p_value == pytest.approx(1 / math.comb(10, 5))  # exact: the extreme outcome
    assert test.min_p_value == pytest.approx(test.p_value)
    assert test.common_language == 1.0 and test.rank_biserial == 1.0
    assert test.hodges_lehmann == pytest.approx(10.0)
    assert test.hodges_lehmann_rel == pytest.approx(10.0 / 3.0)
    reverse = compare_samples(shifted, baseline, "greater")
    assert reverse.p_value == pytest.approx(1.0)
    assert reverse.common_language == 0.0
    # lower is worse (throughput): the same data seen from the other side
    assert compare_samples(shifted, baseline, "less").p_value == pytest.approx(test.p_value)
    assert not compare_samples([1, 2], [3, 4], "greater").can_reach(0.01)
    assert min_p_value(40, 40) < 1e-20


def test_proportion_intervals() -> None:
    low, high = proportion_interval(38, 40, method="wilson")
    assert low == pytest.approx(0.8349, abs=1e-3) and high == pytest.approx(0.9862, abs=1e-3)
    low, high = proportion_interval(0, 40, method="exact")
    assert low == 0.0 and high == pytest.approx(0.0881, abs=1e-3)
    assert all(math.isnan(x) for x in proportion_interval(0, 0))


# ---------------------------------------------------------------------------------------
# results to be wary of


def test_unstable_and_contended_values_are_marked(base: Path, tmp_path: Path) -> None:
    shaky = {**result(seed=11), "stable": False, "stable_threshold": 0.05}
    busy = result("transformer", "xs", seed=12, contention={"contended": True, "foreign_cores": 1.2})
    code, out, _, report = run_check("--baseline", base, write(tmp_path / "new.json", shaky, busy))
    assert code == 0, out
    assert row(report, "dense-xs-fp32", "step_time_s")["new_marks"] == "~"
    assert row(report, "dense-xs-fp32", "accuracy")["new_marks"] == ""  # not a timing: no mark
    assert row(report, "transformer-xs-fp32", "samples_per_s")["new_marks"] == " contended"
    line = next(line for line in out.splitlines() if line.startswith("dense-xs-fp32") and " step_time_s " in line)
    assert "~" in line
    assert "~: unstable, the 95% interval of its median step is wider than its stable_threshold" in out
    assert "contended: other work ran on the machine while it was timed" in out


def test_thread_count_change_is_read_from_the_session(tmp_path: Path) -> None:
    from reports.synthetic import session_facts

    base = write_benchmark_json(tmp_path / "base.json", [result(seed=1)], None, {**session_facts(), "torch_threads": 2})
    new = write_benchmark_json(tmp_path / "new.json", [result(seed=2)], None, {**session_facts(), "torch_threads": 4})
    code, out, _, report = run_check("--baseline", base, new)
    assert code == 0, out
    assert "software changed: torch_threads 2 vs 4" in report["notes"]
