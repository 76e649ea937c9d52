"""Machine info that compares cleanly: what varies from session to session (the matmul peaks,
torch's threads, the CPU's current clock) stays out of pytest-benchmark's machine_info, so
``--benchmark-compare`` warns only about real differences of the machine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from reports.inputs import load_input
from tests.bench_runs import QUICK

BENCH = Path(__file__).resolve().parents[1] / "bench"
CASE = ("--family", "dense", "--size", "xs", "--variant", "fp32", "--no-accuracy", "--results-dir", "", *QUICK)
WARNING = "machine_info is different"


def bench(tmp: Path, *args: str) -> str:
    cmd = [sys.executable, "-m", "pytest", str(BENCH), "--benchmark-only", "-p", "no:cacheprovider", *CASE, *args]
    done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.nightly
def test_benchmark_compare_warns_only_about_machine_differences(tmp_path: Path) -> None:
    bench(tmp_path, "--benchmark-autosave")
    out = bench(tmp_path, "--benchmark-autosave", "--benchmark-compare")
    assert "Comparing against benchmarks from" in out
    assert WARNING not in out, out[-3000:]

    saved = sorted((tmp_path / ".benchmarks").rglob("0*.json"))
    assert len(saved) == 2
    data = json.loads(saved[-1].read_text())
    assert "peak_tflops" not in data["machine_info"]["archbench"]
    assert data["archbench"]["session"]["peak_tflops"]["cpu:float32"] > 0
    assert data["benchmarks"][0]["extra_info"]["peak_tflops"] > 0  # every benchmark keeps its own
    run = load_input(saved[-1])  # reports find the peaks where they are now
    assert run.facts["peak_tflops"]["cpu:float32"] > 0

    # a real difference of the machine is still reported
    data["machine_info"]["archbench"]["cpu_cores"] = 999
    saved[-1].write_text(json.dumps(data))
    assert WARNING in bench(tmp_path, "--benchmark-compare")
