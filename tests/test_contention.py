"""Tests of the sampler's contention measurement: real processes on the CPU path, the fake
NVML for foreign GPU processes."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import proc
from bench.telemetry import CONTENTION_CORES, CONTENTION_STEAL_PCT, Contention, Sampler, contention
from tests.fake_pynvml import NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_NOT_SUPPORTED, FakeGPU

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="no /proc/stat on this system")

# Spins for ``sys.argv[1]`` wall seconds.
_SPIN_WALL = "import sys, time\nend = time.perf_counter() + float(sys.argv[1])\nwhile time.perf_counter() < end: pass"
# Burns ``sys.argv[1]`` CPU seconds, however long that takes on a shared machine.
_BURN_CPU = "import sys, time\nwhile time.process_time() < float(sys.argv[1]): pass"


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args])


@pytest.fixture
def outsider_root() -> Iterator[int]:
    """The pid of an idle child: as a session root, its tree holds nothing else, so the
    test process and its other children are outside it."""
    sleeper = _python("import time; time.sleep(60)")
    yield sleeper.pid
    sleeper.kill()
    sleeper.wait(timeout=10)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _burn_in_two_windows(outsider_root: int, reaped: bool) -> tuple[Contention, Contention, float]:
    """A busy child of this process, measured at once by a sampler whose session is this
    process (the burner is inside) and one whose session is ``outsider_root`` (outside).
    Returns (inside, outside, CPU cores this process and its children used in the window)."""
    self_cpu, children_cpu = time.process_time(), _children_cpu_s()
    t0 = time.perf_counter()
    with Sampler("cpu", interval_s=0.01) as inside, Sampler("cpu", session_root=outsider_root) as outside:
        if reaped:  # exits and is waited for within the window: its time moves into our cutime
            burner = _python(_BURN_CPU, "0.6")
            burner.wait(timeout=30)
            time.sleep(0.2)
            burner_cpu = 0.0  # in RUSAGE_CHILDREN now
        else:  # still running when the window closes
            burner = _python(_SPIN_WALL, "5")
            time.sleep(1.0)
            burner_cpu = proc.cpu_seconds(burner.pid)
    window = time.perf_counter() - t0
    own_cpu = time.process_time() - self_cpu + _children_cpu_s() - children_cpu + burner_cpu
    if not reaped:
        burner.kill()
        burner.wait(timeout=10)
    return inside.result.contention, outside.result.contention, own_cpu / window


@pytest.mark.parametrize("reaped", [False, True], ids=["running", "reaped"])
def test_busy_process_outside_the_tree_is_foreign_inside_it_is_own(outsider_root: int, reaped: bool) -> None:
    inside, outside, own_cores = _burn_in_two_windows(outsider_root, reaped)
    # (a) outside the session's tree the burner is foreign, and the window was contended
    assert outside.foreign_cores is not None and outside.foreign_cores >= 0.5
    assert outside.contended is True
    # (b) inside the tree it is own: the two samplers differ by this process tree's CPU use,
    # whatever else the shared machine runs (the same for both, in the same window)
    assert inside.foreign_cores is not None
    assert own_cores > 0.3  # the burner ran
    assert outside.foreign_cores - inside.foreign_cores == pytest.approx(own_cores, abs=0.15)
    assert inside.foreign_cores < outside.foreign_cores - 0.5 * own_cores
    for result in (inside, outside):
        assert result.reason is None and result.foreign_gpu_processes is None and not result.gpu


def test_steal_is_a_percentage_and_the_thresholds_are_reported() -> None:
    with Sampler("cpu", interval_s=0.01) as sampler:
        time.sleep(0.3)
    result = sampler.result
    # (c)
    assert isinstance(result.contention.steal_pct, float) and 0.0 <= result.contention.steal_pct <= 100.0
    info = result.to_extra_info(samples=1)["contention"]
    assert set(info) == {
        "foreign_cores",
        "steal_pct",
        "foreign_gpu_processes",
        "contended",
        "threshold_cores",
        "threshold_steal_pct",
    }
    assert info["threshold_cores"] == CONTENTION_CORES == 0.25
    assert info["threshold_steal_pct"] == CONTENTION_STEAL_PCT == 5.0
    assert info["contended"] in (True, False) and info["foreign_gpu_processes"] is None
    assert "contention" not in result.absent


def test_unreadable_proc_stat_means_absent_with_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # (d)
    missing = tmp_path / "no-such-stat"
    monkeypatch.setattr(contention, "PROC_STAT", str(missing))
    with Sampler("cpu", interval_s=0.01) as sampler:
        time.sleep(0.05)
    result = sampler.result
    c = result.contention
    assert c.foreign_cores is None and c.steal_pct is None and c.contended is None
    assert str(missing) in result.absent["contention"]
    info = result.to_extra_info(samples=1)
    assert info["contention"]["foreign_cores"] is None and info["contention"]["contended"] is None
    assert info["absent"]["contention"] == result.absent["contention"]
    assert result.peak_mem_bytes is not None  # the rest carries on


def _write_stat(path: Path, user: int, idle: int, steal: int) -> None:
    path.write_text(f"cpu  {user} 0 0 {idle} 0 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")


def test_steal_over_threshold_is_contention(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    _write_stat(stat, user=0, idle=100_000, steal=0)
    monkeypatch.setattr(contention, "PROC_STAT", str(stat))
    with Sampler("cpu", interval_s=10.0) as sampler:
        _write_stat(stat, user=0, idle=109_000, steal=1000)  # 10 % steal; no busy time
    c = sampler.result.contention
    assert c.steal_pct == pytest.approx(10.0)
    assert c.foreign_cores == 0.0  # clamped: the tree's own CPU time exceeds the (fake) busy time
    assert c.contended is True
    assert contention.read_machine_ticks(str(stat)) == (0, 1000, 110_000)


def test_contended_is_true_when_a_known_figure_exceeds_else_none_when_unknown() -> None:
    assert Contention(0.0, 0.0, reason=None).contended is False
    assert Contention(0.3, 0.0, reason=None).contended is True
    assert Contention(None, None, 2, gpu=True, reason="x").contended is True
    assert Contention(0.0, 0.0, None, gpu=True, reason="x").contended is None
    assert Contention(0.0, 0.0, 0, gpu=True, reason=None).contended is False


# --------------------------------------------------------------------------------------
# Foreign GPU processes, through the fake NVML


def _gpu_contention(fake_nvml, gpu: FakeGPU, **kwargs) -> tuple[Contention, dict[str, str]]:
    fake_nvml(gpu, **kwargs)
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.05)
    return sampler.result.contention, sampler.result.absent


def test_foreign_gpu_process_counts_and_contends(fake_nvml) -> None:
    c, absent = _gpu_contention(fake_nvml, FakeGPU(processes=[(os.getpid(), 2**30), (999_999, 2**30)]))
    assert c.gpu and c.foreign_gpu_processes == 1 and c.contended is True
    assert "contention" not in absent


def test_only_own_gpu_processes_are_not_foreign(fake_nvml) -> None:
    c, absent = _gpu_contention(fake_nvml, FakeGPU(processes=[(os.getpid(), 2**30)]))
    assert c.foreign_gpu_processes == 0 and "contention" not in absent


def test_foreign_gpu_process_seen_mid_window_counts(fake_nvml) -> None:
    gpu = FakeGPU(processes=[(os.getpid(), 2**30)])
    fake_nvml(gpu)
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.05)
        gpu.processes.append((999_998, 2**30))
        time.sleep(0.05)
        gpu.processes.pop()
        time.sleep(0.05)
    assert sampler.result.contention.foreign_gpu_processes == 1


def test_gpu_process_of_the_session_tree_is_own(fake_nvml, outsider_root: int) -> None:
    """The session root's tree decides what is own, not this process."""
    fake_nvml(FakeGPU(processes=[(outsider_root, 2**30), (os.getpid(), 2**30)]))
    with Sampler("cuda:0", interval_s=0.01, session_root=outsider_root) as sampler:
        time.sleep(0.05)
    assert sampler.result.contention.foreign_gpu_processes == 1  # this test process


@pytest.mark.parametrize(
    ("gpu", "init_error", "why"),
    [
        (FakeGPU(processes=[(999_999, 2**30)]), None, "PID namespace"),
        (FakeGPU(errors={"nvmlDeviceGetComputeRunningProcesses": NVML_ERROR_NOT_SUPPORTED}), None, "Not Supported"),
        (FakeGPU(), NVML_ERROR_LIBRARY_NOT_FOUND, "need NVML"),
    ],
    ids=["no-own-pid-listed", "listing-not-supported", "no-nvml"],
)
def test_unknown_foreign_gpu_processes_are_absent_with_reason(fake_nvml, gpu, init_error, why) -> None:
    c, absent = _gpu_contention(fake_nvml, gpu, init_error=init_error)
    assert c.foreign_gpu_processes is None
    assert why in c.reason and absent["contention"] == c.reason
    assert c.contended is not False  # unknown, unless the CPU figures already say contended


def test_the_trust_figures_a_a_block_joins_only_a_file_of_this_machine(tmp_path, capsys, monkeypatch) -> None:
    """``python -m bench.figures.trust --a-a-only --json F`` replaces F's A/A block when F was
    measured here, and refuses in one line, F untouched, when it was not."""
    from bench.figures import trust
    from bench.machine import machine_facts

    monkeypatch.setattr(trust, "a_a", lambda trials: {"trials": trials, "contains_1": 0, "share": None, "records": []})

    here = machine_facts("cpu")
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    ours.write_text(json.dumps({"machine": here, "a_a": {"trials": 40}, "contended": [0, 32]}))
    other = here | {
        "cpu_model": "another CPU",
        "cpu_features": {**here["cpu_features"], "avx512_bf16": not here["cpu_features"]["avx512_bf16"]},
    }
    theirs.write_text(text := json.dumps({"machine": other, "a_a": {"trials": 40}}))
    assert trust.main(["--a-a-only", "--trials", "0", "--json", str(theirs)]) == 2
    assert theirs.read_text() == text
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"--a-a-only: {theirs} was measured on another machine (cpu_model, cpu_features differ); pass a new --json"
    ]
    assert trust.main(["--a-a-only", "--trials", "0", "--json", str(ours)]) == 0
    merged = json.loads(ours.read_text())
    assert merged["contended"] == [0, 32] and merged["a_a"]["trials"] == 0 and merged["a_a"]["machine"] == here
