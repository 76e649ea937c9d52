"""Tests of bench.telemetry: the CPU path for real, the NVML path through tests/fake_pynvml."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import torch

from bench import telemetry
from bench.telemetry import Contention, Sampler, TelemetryResult, decode_throttle_reasons
from tests.fake_pynvml import (
    NVML_ERROR_FUNCTION_NOT_FOUND,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    FakeGPU,
)

MB = 2**20
EXTRA_INFO_KEYS = {
    "peak_mem_bytes",
    "mem_source",
    "power_w",
    "energy_j_per_sample",
    "samples_per_j",
    "energy_source",
    "energy_reason",
    "telemetry",
    "util_pct",
    "gpu_telemetry",
    "telemetry_samples",
    "telemetry_requested_samples",
    "contention",
    "absent",
}


def _rss() -> int:
    return psutil.Process().memory_info().rss


def _hwm_resettable() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# CPU path, for real


def test_thread_allocation_inside_window_raises_peak() -> None:
    size = 200 * MB
    done = threading.Event()

    def allocate() -> None:
        block = torch.ones(size // 4, dtype=torch.float32)  # touches every page
        time.sleep(0.2)
        del block
        done.set()

    baseline = _rss()
    with Sampler("cpu", interval_s=0.01) as sampler:
        worker = threading.Thread(target=allocate)
        worker.start()
        worker.join()
    result = sampler.result
    assert done.is_set()
    assert result.mem_source == "rss-tree"
    grown = result.peak_mem_bytes - baseline
    assert 0.95 * size <= grown <= size + 40 * MB, grown / MB
    # the series shows the allocation too (its max per bucket keeps the peak)
    assert max(result.series["mem_bytes"]) - baseline >= 0.95 * size


def test_peak_before_window_does_not_inflate_it() -> None:
    block = torch.ones(300 * MB // 4)
    del block  # the process's lifetime peak (ru_maxrss) is now >= 300 MB above baseline
    baseline = _rss()
    with Sampler("cpu", interval_s=0.01) as sampler:
        time.sleep(0.1)
    assert sampler.result.peak_mem_bytes - baseline < 30 * MB


@pytest.mark.skipif(not _hwm_resettable(), reason="/proc/self/clear_refs is not writable")
def test_spike_shorter_than_interval_is_caught_by_high_water_mark() -> None:
    baseline = _rss()
    with Sampler("cpu", interval_s=1.0) as sampler:  # no periodic sample in this window
        block = torch.ones(200 * MB // 4)
        del block
    result = sampler.result
    assert result.n_samples == 0
    assert result.peak_mem_bytes - baseline >= 190 * MB
    assert max(result.series["mem_bytes"]) - baseline < 50 * MB  # sampling alone missed it


_GRANDCHILD = "import sys; b = bytearray(b'1') * (100 << 20); print('ready', flush=True); sys.stdin.read()"
_CHILD = f"""
import subprocess, sys
b = bytearray(b'1') * (100 << 20)
g = subprocess.Popen([sys.executable, '-c', {_GRANDCHILD!r}], stdout=subprocess.PIPE)
g.stdout.readline()
print('ready', flush=True)
sys.stdin.read()
g.wait()
"""


def test_child_and_grandchild_memory_counted_in_tree() -> None:
    baseline = _rss()
    with Sampler("cpu", interval_s=0.01) as sampler:
        child = subprocess.Popen([sys.executable, "-c", _CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(telemetry.CHILDREN_REFRESH_S + 0.3)  # a refresh, then samples
        child.stdin.close()  # both processes see EOF and exit
        assert child.wait(timeout=10) == 0
    grown = sampler.result.peak_mem_bytes - baseline
    # 2 x 100 MB of touched pages, plus two interpreters of ~10 MB each
    assert 200 * MB <= grown <= 280 * MB, grown / MB


def test_samples_delivered_near_requested_at_10ms() -> None:
    with Sampler("cpu", interval_s=0.01) as sampler:
        time.sleep(1.0)
    result = sampler.result
    assert result.requested_samples == math.floor(result.duration_s / 0.01)
    assert 0.9 * result.requested_samples <= result.n_samples <= result.requested_samples
    # the sampling thread's own cost is small: well under 10 % of one core at 10 ms
    assert result.sampler_cpu_s is not None and result.sampler_cpu_s < 0.1 * result.duration_s
    assert result.util_pct is not None and 0 <= result.util_pct < 50  # mostly asleep


@pytest.mark.parametrize("timerfd", [True, False], ids=["timerfd", "lock-wait"])
def test_wakeup_paths_deliver_and_stop_promptly(timerfd: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not timerfd:
        monkeypatch.setattr(telemetry.sampler, "_periodic_timerfd", lambda t0, interval_s: None)
    with Sampler("cpu", interval_s=0.01) as sampler:
        time.sleep(0.3)
    assert sampler.result.n_samples >= 0.9 * sampler.result.requested_samples
    start = time.perf_counter()
    with Sampler("cpu", interval_s=5.0):
        pass
    assert time.perf_counter() - start < 0.5  # leaving does not wait for the next tick


def test_cpu_utilization_of_a_busy_thread() -> None:
    def spin(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    cpu_start = time.process_time()
    with Sampler("cpu", interval_s=0.01) as sampler:
        spin(0.4)
    used_pct = (time.process_time() - cpu_start) / sampler.result.duration_s * 100
    # one core busy, as much as the machine grants it (other processes may share the cores)
    assert sampler.result.util_pct == pytest.approx(used_pct, rel=0.15)
    assert sampler.result.util_pct > 30
    # the per-sample series tells the same story (it is in the same unit)
    series = [u for u in sampler.result.series["util_pct"] if u is not None]
    assert sum(series) / len(series) == pytest.approx(sampler.result.util_pct, rel=0.25)


def test_series_downsampled_to_max_points() -> None:
    with Sampler("cpu", interval_s=0.01, max_points=20) as sampler:
        time.sleep(0.5)
    series = sampler.result.series
    assert set(series) == {"t", "mem_bytes", "power_w", "util_pct"}
    assert 10 <= len(series["t"]) <= 20
    assert all(len(v) == len(series["t"]) for v in series.values())
    assert series["t"] == sorted(series["t"]) and series["t"][-1] <= sampler.result.duration_s + 0.05
    assert all(isinstance(m, int) and m > 0 for m in series["mem_bytes"])


def test_energy_absent_with_reason_on_machine_without_rapl() -> None:
    if os.path.isdir(telemetry.RAPL_ROOT) and any(n.startswith("intel-rapl:") for n in os.listdir(telemetry.RAPL_ROOT)):
        pytest.skip("this machine has RAPL zones")
    with Sampler("cpu", interval_s=0.01) as sampler:
        time.sleep(0.05)
    result = sampler.result
    assert result.energy_source == "none"
    assert result.energy_j is None and result.power_w is None
    assert "intel-rapl" in result.energy_reason and "no " in result.energy_reason
    assert all(p is None for p in result.series["power_w"])
    info = result.to_extra_info(samples=256)
    assert set(info) == EXTRA_INFO_KEYS
    assert info["energy_j_per_sample"] is None and info["samples_per_j"] is None
    assert info["power_w"] is None
    assert set(info["absent"]) == {"power_w", "energy_j_per_sample", "samples_per_j"}
    assert all(reason for reason in info["absent"].values())
    assert info["peak_mem_bytes"] > 0 and info["mem_source"] == "rss-tree"
    assert info["telemetry_samples"] == result.n_samples
    assert info["telemetry_requested_samples"] == result.requested_samples
    assert info["gpu_telemetry"] == {} and info["util_pct"] == result.util_pct


def _write_zone(root: Path, name: str, kind: str, energy_uj: int, max_uj: int) -> Path:
    zone = root / name
    zone.mkdir()
    (zone / "name").write_text(kind + "\n")
    (zone / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    return zone / "energy_uj"


def test_rapl_energy_with_wraparound_ignores_psys_and_subzones(no_rapl: Path) -> None:
    max_uj = 262_143_328_850
    package = _write_zone(no_rapl, "intel-rapl:0", "package-0", max_uj - 1_000_000, max_uj)
    subzone = _write_zone(no_rapl, "intel-rapl:0:0", "core", 5, max_uj)
    psys = _write_zone(no_rapl, "intel-rapl:1", "psys", 0, max_uj)
    # a long interval: only the opening and closing readings, so the file edits cannot race
    with Sampler("cpu", interval_s=10.0) as sampler:
        package.write_text("4000000\n")  # wrapped: 1 J up to the wrap, then 4 J
        subzone.write_text("999999999\n")
        psys.write_text("999999999\n")
        time.sleep(0.05)
    result = sampler.result
    assert result.energy_source == "rapl" and result.energy_reason is None
    assert result.energy_j == pytest.approx(5.0)
    assert result.power_w == pytest.approx(5.0 / result.duration_s)
    info = result.to_extra_info(samples=10)
    assert info["energy_j_per_sample"] == pytest.approx(0.5)
    assert info["samples_per_j"] == pytest.approx(2.0)
    assert "energy_j_per_sample" not in info["absent"]


def test_rapl_counter_that_does_not_advance_is_absent_not_zero(no_rapl: Path) -> None:
    _write_zone(no_rapl, "intel-rapl:0", "package-0", 1000, 10**12)
    with Sampler("cpu", interval_s=10.0) as sampler:
        time.sleep(0.01)
    result = sampler.result
    assert result.energy_j is None and result.energy_source == "none"
    assert "did not advance" in result.energy_reason


def test_to_extra_info_divides_energy_by_samples() -> None:
    result = TelemetryResult(
        duration_s=2.0,
        n_samples=40,
        requested_samples=40,
        peak_mem_bytes=123,
        mem_source="rss-tree",
        power_w=5.0,
        energy_j=10.0,
        energy_source="rapl",
        energy_reason=None,
        util_pct=100.0,
        series={"t": [], "mem_bytes": [], "power_w": [], "util_pct": []},
        contention=Contention(foreign_cores=0.0, steal_pct=0.0, reason=None),
    )
    info = result.to_extra_info(samples=5)
    assert set(info) == EXTRA_INFO_KEYS
    assert info["energy_j_per_sample"] == 2.0 and info["samples_per_j"] == 0.5
    assert info["absent"] == {}
    with pytest.raises(ValueError):
        result.to_extra_info(samples=0)


@pytest.mark.parametrize("kwargs", [{"device": "gpu"}, {"device": "cuda:x"}, {"interval_s": 0}, {"max_points": 1}])
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Sampler(**kwargs)


# --------------------------------------------------------------------------------------
# NVML path, through the fake


def test_nvml_units_and_energy_from_counter(fake_nvml) -> None:
    gpu = FakeGPU(power_mw=250_000, processes=[(os.getpid(), 3 * 2**30), (999_999, 5 * 2**30)])
    fake = fake_nvml(gpu)
    with Sampler("cuda:0", interval_s=0.02) as sampler:
        time.sleep(0.3)
    result = sampler.result
    e_start, e_end = fake.energy_reads[0][1], fake.energy_reads[-1][1]
    assert result.energy_source == "nvml-energy" and result.energy_reason is None
    assert result.energy_j == (e_end - e_start) / 1000  # mJ -> J
    assert result.energy_j == pytest.approx(250.0 * result.duration_s, rel=0.02)
    assert result.power_w == pytest.approx(250.0, rel=0.02)  # mW -> W
    assert set(result.series["power_w"]) == {250.0}
    assert set(result.series["util_pct"]) == {97.0}
    assert set(result.series["mem_bytes"]) == {10 * 2**30}
    assert result.util_pct == 97.0
    assert result.gpu["0"] == {
        "sm_clock_mhz": 1980,
        "temperature_c": 65,
        "throttle_reasons": [],
        "nvml_mem_used_bytes": 10 * 2**30,
        "process_mem_bytes": 3 * 2**30,  # only this process tree's entry
        "absent": {},
    }
    # no GPU in this torch: the allocator peak is absent with the reason, never 0
    assert result.mem_source == "cuda-allocator" and result.peak_mem_bytes is None
    assert "torch.cuda is not available" in result.absent["peak_mem_bytes"]
    info = result.to_extra_info(samples=100)
    assert info["energy_j_per_sample"] == pytest.approx(result.energy_j / 100)
    assert info["absent"] == {"peak_mem_bytes": result.absent["peak_mem_bytes"]}


def test_nvml_power_fallback_when_energy_counter_not_supported(fake_nvml) -> None:
    # power ramps 100 -> ~130 W, so the trapezoid is checked against the exact integral
    gpu = FakeGPU(
        power_mw=100_000,
        power_slope_mw_per_s=100_000,
        errors={"nvmlDeviceGetTotalEnergyConsumption": NVML_ERROR_NOT_SUPPORTED},
    )
    fake = fake_nvml(gpu)
    t_start = fake.elapsed()
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.3)
    t_end = t_start + sampler.result.duration_s
    result = sampler.result
    exact_j = (fake.energy_mj_at(gpu, t_end) - fake.energy_mj_at(gpu, t_start)) / 1000
    assert result.energy_source == "nvml-power"
    assert "nvmlDeviceGetTotalEnergyConsumption: Not Supported" in result.energy_reason
    assert "integrated sampled power" in result.energy_reason
    assert result.energy_j == pytest.approx(exact_j, rel=0.03)
    assert result.power_w == pytest.approx(result.energy_j / result.duration_s)
    assert fake.calls["nvmlDeviceGetTotalEnergyConsumption"] == 1  # disabled after failing


def test_nvml_short_window_uses_power(fake_nvml) -> None:
    fake_nvml(FakeGPU(power_mw=300_000))
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.03)
    result = sampler.result
    assert result.duration_s < telemetry.MIN_ENERGY_COUNTER_WINDOW_S
    assert result.energy_source == "nvml-power" and "shorter than" in result.energy_reason
    assert result.energy_j == pytest.approx(300.0 * result.duration_s, rel=0.1)


def test_nvml_counter_that_does_not_advance_falls_back_to_power(fake_nvml) -> None:
    fake_nvml(FakeGPU(power_mw=200_000, energy_period_s=1000.0))  # counter frozen
    with Sampler("cuda:0", interval_s=0.02) as sampler:
        time.sleep(0.15)
    result = sampler.result
    assert result.energy_source == "nvml-power"
    assert "did not advance" in result.energy_reason
    assert result.energy_j == pytest.approx(200.0 * result.duration_s, rel=0.1)


def test_nvml_no_power_and_no_counter_means_absent(fake_nvml) -> None:
    not_supported = {
        "nvmlDeviceGetTotalEnergyConsumption": NVML_ERROR_NOT_SUPPORTED,
        "nvmlDeviceGetPowerUsage": NVML_ERROR_NOT_SUPPORTED,
    }
    fake_nvml(FakeGPU(errors=not_supported))
    with Sampler("cuda:0", interval_s=0.02) as sampler:
        time.sleep(0.12)
    result = sampler.result
    assert result.energy_j is None and result.power_w is None
    assert result.energy_source == "none"
    assert "nvmlDeviceGetPowerUsage: Not Supported" in result.energy_reason
    assert result.util_pct == 97.0  # the rest carries on
    info = result.to_extra_info(samples=8)
    assert {"power_w", "energy_j_per_sample", "samples_per_j"} <= set(info["absent"])


def test_throttle_reasons_union_decoded(fake_nvml) -> None:
    fake_nvml(FakeGPU(throttle_masks=[0x4, 0x0, 0x40, 0x4]))
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.1)
    assert sampler.result.gpu["0"]["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]


def test_throttle_reasons_fall_back_to_older_function(fake_nvml) -> None:
    errors = {"nvmlDeviceGetCurrentClocksEventReasons": NVML_ERROR_FUNCTION_NOT_FOUND}
    fake = fake_nvml(FakeGPU(throttle_masks=[0x1 | 0x8], errors=errors))
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.05)
    assert sampler.result.gpu["0"]["throttle_reasons"] == ["gpu_idle", "hw_slowdown"]
    assert fake.calls["nvmlDeviceGetCurrentClocksEventReasons"] == 1
    assert fake.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] >= 2


def test_decode_throttle_reasons_names_unknown_bits() -> None:
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x20 | 0x10000) == ["sw_thermal_slowdown", "unknown_0x10000"]


def test_nvml_error_makes_only_that_field_absent(fake_nvml) -> None:
    errors = {"nvmlDeviceGetTemperature": NVML_ERROR_NOT_SUPPORTED}
    fake = fake_nvml(FakeGPU(errors=errors))
    with Sampler("cuda:0", interval_s=0.01) as sampler:
        time.sleep(0.12)
    result = sampler.result
    extras = result.gpu["0"]
    assert extras["temperature_c"] is None
    assert extras["absent"]["temperature_c"] == "nvmlDeviceGetTemperature: Not Supported"
    assert extras["sm_clock_mhz"] == 1980 and extras["nvml_mem_used_bytes"] == 10 * 2**30
    assert result.energy_source == "nvml-energy" and result.power_w == pytest.approx(250, rel=0.02)
    assert fake.calls["nvmlDeviceGetTemperature"] == 1  # not retried every tick


def test_process_memory_absent_when_no_pid_matches(fake_nvml) -> None:
    fake_nvml(FakeGPU(processes=[(999_999, 2**30)]))
    with Sampler("cuda:0", interval_s=0.02) as sampler:
        time.sleep(0.05)
    extras = sampler.result.gpu["0"]
    assert extras["process_mem_bytes"] is None
    assert "PID namespace" in extras["absent"]["process_mem_bytes"]


def test_nvml_library_not_found_falls_back_to_cpu_power(fake_nvml, no_rapl: Path) -> None:
    fake_nvml(init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    with Sampler("cuda:0", interval_s=0.02) as sampler:
        time.sleep(0.05)
    result = sampler.result
    assert result.gpu == {}
    assert result.energy_source == "none" and result.energy_j is None
    assert "NVML library not found" in result.energy_reason
    assert "intel-rapl" in result.energy_reason
    assert result.util_pct is None and "needs NVML" in result.absent["util_pct"]

    _write_zone(no_rapl, "intel-rapl:0", "package-0", 0, 10**12)
    with Sampler("cuda:0", interval_s=10.0) as sampler:
        (no_rapl / "intel-rapl:0" / "energy_uj").write_text("3000000\n")
    result = sampler.result
    assert result.energy_source == "rapl" and result.energy_j == pytest.approx(3.0)
    assert "NVML library not found" in result.energy_reason


def test_nvml_initialized_once_per_process(fake_nvml) -> None:
    fake = fake_nvml()
    for _ in range(3):
        with Sampler("cuda:0", interval_s=0.05):
            pass
    assert fake.calls["nvmlInit"] == 1


def test_multi_gpu_energy_and_power_are_summed(fake_nvml) -> None:
    fake = fake_nvml(FakeGPU(power_mw=100_000), FakeGPU(power_mw=300_000, util_gpu=51))
    with Sampler("cuda", interval_s=0.02, gpu_indices=[0, 1]) as sampler:
        time.sleep(0.2)
    result = sampler.result
    assert set(result.gpu) == {"0", "1"}
    assert result.power_w == pytest.approx(400.0, rel=0.02)
    assert set(result.series["power_w"]) == {400.0}
    assert result.util_pct == pytest.approx(74.0)
    reads = fake.energy_reads  # GPU 0 then GPU 1, at enter and at exit
    assert result.energy_j == ((reads[2][1] - reads[0][1]) + (reads[3][1] - reads[1][1])) / 1000


def test_cuda_visible_devices_maps_torch_index_to_nvml(fake_nvml, monkeypatch) -> None:
    fake = fake_nvml(FakeGPU(), FakeGPU(), FakeGPU(), FakeGPU(uuid="GPU-abc"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,GPU-abc")
    with Sampler("cuda:0", interval_s=0.05) as sampler:
        pass
    assert set(sampler.result.gpu) == {"2"}
    with Sampler("cuda:1", interval_s=0.05) as sampler:
        pass
    assert set(sampler.result.gpu) == {"GPU-abc"}
    assert fake.calls["nvmlDeviceGetHandleByUUID"] == 1
    with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
        with Sampler("cuda:2"):
            pass


def test_cuda_allocator_peak_when_cuda_is_available(fake_nvml, monkeypatch) -> None:
    fake_nvml()
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d=None: calls.append(d))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 123 * MB)
    with Sampler("cuda:0", interval_s=0.05) as sampler:
        pass
    assert calls == ["cuda:0"]
    assert sampler.result.peak_mem_bytes == 123 * MB
    assert sampler.result.mem_source == "cuda-allocator"
    assert "peak_mem_bytes" not in sampler.result.absent


def test_unreachable_gpu_disables_nvml_sums_rather_than_partial(fake_nvml) -> None:
    fake_nvml(FakeGPU(), FakeGPU())
    with Sampler("cuda", interval_s=0.02, gpu_indices=[0, 5]) as sampler:
        time.sleep(0.02)
    result = sampler.result
    assert result.gpu == {} and result.energy_j is None
    assert "NVML handle unavailable for GPU 5: Invalid Argument" in result.energy_reason
