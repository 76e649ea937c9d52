"""``pytest bench`` end to end in a subprocess: the JSON it writes, streaming, refusals."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.bench_runs import QUICK

BENCH = Path(__file__).resolve().parents[1] / "bench"

SCHEMA_KEYS = {
    "schema", "id", "family", "size", "variant", "phase", "device", "dtype", "world_size",
    "batch_size", "seq_len", "status", "params", "samples_per_step", "flops_per_step",
    "step_time_s", "step_times_s", "samples_per_s", "tokens_per_s", "tflops", "peak_tflops",
    "mfu", "peak_mem_bytes", "power_w", "energy_j_per_sample", "samples_per_j",
    "energy_source", "accuracy", "accuracy_metric", "accuracy_reference", "accuracy_delta",
    "model_bytes", "model_state_bytes", "telemetry", "absent",
}  # fmt: skip


def run_bench(pytester: pytest.Pytester, *args: str):
    return pytester.runpytest_subprocess(str(BENCH), "--benchmark-only", "-p", "no:cacheprovider", *QUICK, *args,
                                         timeout=300)  # fmt: skip


def read_jsonl(directory: Path) -> list[dict]:
    (path,) = directory.glob("results-*.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One tiny real run shared by the assertions below."""
    import subprocess
    import sys

    tmp = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable, "-m", "pytest", str(BENCH), "--benchmark-only", "-p", "no:cacheprovider", *QUICK,
        "--family", "dense,transformer", "--size", "xs", "--variant", "fp32,amp-bf16",
        "--telemetry-interval", "0.01", "--benchmark-json", str(tmp / "out.json"), "--case-timeout", "300",
        "-k", "not transformer-xs-amp-bf16",  # bf16 training is slow on CPUs without AVX-512
        "--results-dir", str(tmp / "results"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, json.loads((tmp / "out.json").read_text()), proc.stdout


def test_every_case_writes_the_schema(smoke_run):
    _, data, _ = smoke_run
    ids = sorted(b["extra_info"]["id"] for b in data["benchmarks"])
    assert ids == ["dense-xs-amp-bf16", "dense-xs-fp32", "transformer-xs-fp32"]
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert SCHEMA_KEYS <= set(info), SCHEMA_KEYS - set(info)
        assert info["schema"] == "archbench/1" and info["status"] == "ok"
        assert bench["group"] == f"{info['family']}-{info['size']}"


def test_figures_recompute_from_the_json(smoke_run):
    _, data, _ = smoke_run
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        times = info["step_times_s"]
        assert len(times) == bench["stats"]["rounds"]
        assert info["step_time_s"] == pytest.approx(statistics.median(times))
        assert info["step_time_s"] == pytest.approx(bench["stats"]["median"])
        assert info["samples_per_step"] == info["batch_size"] * info["world_size"]
        assert info["samples_per_s"] == pytest.approx(info["samples_per_step"] / info["step_time_s"])
        assert info["tflops"] == pytest.approx(info["flops_per_step"] / info["step_time_s"] / 1e12)
        assert info["mfu"] == pytest.approx(info["tflops"] / info["peak_tflops"])
        if info["family"] == "transformer":
            assert info["tokens_per_s"] == pytest.approx(info["samples_per_s"] * info["seq_len"])
        else:
            assert info["tokens_per_s"] is None and info["seq_len"] is None


def test_accuracy_and_reference(smoke_run):
    _, data, _ = smoke_run
    by_id = {b["extra_info"]["id"]: b["extra_info"] for b in data["benchmarks"]}
    dense, transformer = by_id["dense-xs-fp32"], by_id["transformer-xs-fp32"]
    assert dense["accuracy"] > 0.5 and dense["accuracy_metric"] == "top1" and dense["bits_per_byte"] is None
    assert transformer["accuracy_metric"] == "next_byte_top1" and transformer["bits_per_byte"] < 6.0
    assert len(transformer["accuracy_corpus_sha256"]) == 64 and transformer["accuracy_budget"] == "smoke"
    assert "_correct" not in dense and "_correct" not in transformer  # per-sample verdicts stay in the worker
    fp32, bf16 = dense, by_id["dense-xs-amp-bf16"]
    assert fp32["accuracy_delta"] == 0 and fp32["accuracy_steps"] == bf16["accuracy_steps"]
    assert bf16["accuracy_reference"] == fp32["accuracy"]
    assert bf16["accuracy_delta"] == pytest.approx(bf16["accuracy"] - fp32["accuracy"])
    assert bf16["dtype"] == "bfloat16" and fp32["dtype"] == "float32"


def test_absent_metrics_are_null_with_reason_never_zero(smoke_run):
    _, data, _ = smoke_run
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        for key, value in info.items():
            if value is None and key not in ("reason", "seq_len", "energy_reason"):
                assert info["absent"].get(key), f"{info['id']}: {key} is null without a reason"
        if info["energy_source"] == "none":
            assert info["power_w"] is None and info["samples_per_j"] is None
            assert info["energy_reason"]


def test_machine_info_and_memory(smoke_run):
    _, data, _ = smoke_run
    facts = data["machine_info"]["archbench"]
    assert facts["torch"] and facts["cpu_cores"] >= 1 and facts["label"]
    # what varies from session to session is kept out of what --benchmark-compare compares
    assert "peak_tflops" not in facts and "torch_threads" not in facts
    assert "hz_actual" not in data["machine_info"].get("cpu", {})
    session = data["archbench"]["session"]
    assert session["peak_tflops"]["cpu:float32"] > 0 and session["peak_tflops"]["cpu:bfloat16"] > 0
    assert session["torch_threads"] >= 1 and session["settings"]["tier"] == "smoke"
    for bench in data["benchmarks"]:  # every benchmark keeps its own peak
        info = bench["extra_info"]
        assert info["peak_tflops"] > 0 and f"cpu:{info['dtype']}" in session["peak_tflops"]
        assert info["wall_s"] > 0
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert info["peak_mem_bytes"] > 50e6  # a process with torch loaded
        assert info["model_state_bytes"] >= 16 * info["params"]


def test_results_stream_and_tables(smoke_run):
    tmp, data, stdout = smoke_run
    lines = read_jsonl(tmp / "results")
    assert lines[0]["type"] == "machine" and lines[0]["schema"] == "archbench/1"
    assert "peak_tflops" not in lines[0]["machine_info"]["archbench"]
    assert lines[0]["session"]["peak_tflops"]["cpu:float32"] > 0  # probed before the first result
    streamed = {rec["extra_info"]["id"]: rec for rec in lines[1:]}
    assert set(streamed) == {b["extra_info"]["id"] for b in data["benchmarks"]}
    for bench in data["benchmarks"]:
        rec = streamed[bench["extra_info"]["id"]]
        assert rec["extra_info"]["samples_per_s"] == bench["extra_info"]["samples_per_s"]
        assert rec["stats"]["rounds"] == bench["stats"]["rounds"]
    for title in ("## Throughput", "## Accuracy", "## Efficiency"):
        assert title in stdout
    assert "## Throughput" in (tmp / "out.md").read_text()


def test_unsupported_device_is_skipped_with_reason(pytester):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    out = pytester.path / "r"
    result = run_bench(pytester, "--family", "dense", "--size", "xs", "--variant", "fp32", "--device", "cuda",
                       "--results-dir", str(out), "-rs")  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*CUDA is not available*"])
    (rec,) = read_jsonl(out)[1:]
    assert rec["extra_info"]["status"] == "skipped" and "CUDA is not available" in rec["extra_info"]["reason"]
    assert rec["stats"] is None


def test_case_timeout_skips_with_the_estimate(pytester):
    result = run_bench(pytester, "--family", "dense", "--size", "s", "--variant", "fp32",
                       "--case-timeout", "0.0001", "--results-dir", "", "-rs")  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*estimated at least*GFLOP/s on cpu, over --case-timeout 0.0001s*"])


def test_case_timeout_projects_from_the_measured_step(pytester):
    """The peak-based estimate (13 steps of dense-s) passes; the projection from the warm-up
    step (40 s of rounds, or the standard tier's 10,000, plus the accuracy task) is over the
    limit, and the case is skipped before its timing starts, well before the watchdog's deadline.
    The limit leaves the build and the warm-up room on a busy machine: at 5 s, with one busy
    process beside it, the warm-up itself ran past it (a timeout)."""
    result = run_bench(pytester, "--tier", "standard", "--family", "dense", "--size", "s", "--variant", "fp32",
                       "--phase", "train", "--case-timeout", "10", "--round-budget", "40",
                       "--results-dir", "", "-rs")  # fmt: skip
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*projected *s from the measured warm-up step of*and the accuracy stage*"])


def test_time_to_accuracy_end_to_end(pytester):
    """``--time-to-accuracy``: three seeded runs of dense-xs to an easy target, every run in the
    result, the trimmed mean, and the Time to accuracy table."""
    out = pytester.path / "r"
    result = run_bench(pytester, "--family", "dense", "--size", "xs", "--variant", "fp32", "--no-accuracy",
                       "--time-to-accuracy", "--tta-runs", "3", "--tta-target", "dense=0.5",
                       "--results-dir", str(out))  # fmt: skip
    result.assert_outcomes(passed=1)
    info = read_jsonl(out)[1]["extra_info"]
    assert info["tta_target"] == 0.5 and info["tta_metric"] == "accuracy" and len(info["tta_runs"]) == 3
    assert all(run["reached"] and run["time_s"] > 0 for run in info["tta_runs"])
    middle = sorted(run["time_s"] for run in info["tta_runs"])[1]
    assert info["time_to_accuracy_s"] == pytest.approx(middle)  # 3 runs: the fastest and slowest dropped
    result.stdout.fnmatch_lines(["*## Time to accuracy*", "*time to target*"])


def test_results_measured_before_a_failure_stay_on_disk(pytester):
    """The second case fails; the first one's result is already streamed, and the failure too."""
    out = pytester.path / "r"
    result = run_bench(pytester, "--family", "dense", "--size", "xs", "--variant", "fp32,amp-bf16",
                       "--no-accuracy", "--results-dir", str(out),
                       "--inject-fault", "dense-xs-amp-bf16=raise")  # fmt: skip
    result.assert_outcomes(passed=1, failed=1)
    recs = read_jsonl(out)[1:]
    assert [r["extra_info"]["status"] for r in recs] == ["ok", "error"]
    assert "InjectedFault: injected fault: the step raised (stage timing" in recs[1]["extra_info"]["reason"]
    assert recs[0]["extra_info"]["accuracy"] is None
    assert recs[0]["extra_info"]["absent"]["accuracy"] == "disabled with --no-accuracy"
