"""NVML: one initialization per process, and the readings of one GPU over a window."""

from __future__ import annotations

import math
import os
from typing import Any

#: Windows shorter than this are below the NVML energy counter's update period.
MIN_ENERGY_COUNTER_WINDOW_S = 0.1

#: NVML clocks-event ("throttle") reason bits, from nvml.h (nvmlClocksEventReason*).
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clocks-event reason mask (unknown bits in hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


_nvml_module: Any = None
_nvml_failure: str | None = None


def init_nvml() -> tuple[Any, str | None]:
    """The initialized ``pynvml`` module, or ``(None, reason)``.

    The outcome is cached per module object, so a test that swaps ``sys.modules["pynvml"]``
    gets a fresh initialization.
    """
    global _nvml_module, _nvml_failure
    try:
        import pynvml
    except ImportError as err:
        return None, f"pynvml is not importable ({err}); install nvidia-ml-py"
    if pynvml is not _nvml_module:
        _nvml_module, _nvml_failure = pynvml, None
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            if err.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND:
                _nvml_failure = f"NVML library not found ({err}): no NVIDIA driver here"
            else:
                _nvml_failure = f"nvmlInit failed: {err}"
    return (None, _nvml_failure) if _nvml_failure else (pynvml, None)


class NvmlGpu:
    """Per-GPU NVML readings. A call that raises NVMLError disables that source for the
    rest of the window and records why; the other sources carry on."""

    def __init__(self, nvml: Any, label: str, handle: Any) -> None:
        self.nvml, self.label, self.handle = nvml, label, handle
        self.reasons: dict[str, str] = {}
        self.peak_mem_used: int | None = None
        self.peak_process_mem: int | None = None
        self.max_sm_clock: int | None = None
        self.max_temperature: int | None = None
        self.throttle_mask: int | None = None
        self._throttle_fns = [
            getattr(nvml, name)
            for name in (
                "nvmlDeviceGetCurrentClocksEventReasons",
                "nvmlDeviceGetCurrentClocksThrottleReasons",
            )
            if hasattr(nvml, name)
        ]
        self.matched_process = False
        # contention: pids NVML listed that are not the session's, and whether it listed any
        # of the session's (if not, its pids may be of another PID namespace)
        self.foreign_pids: set[int] = set()
        self.session_listed = False

    def _call(self, key: str, fn: Any, *args: Any) -> Any:
        if key in self.reasons:
            return None
        try:
            return fn(self.handle, *args)
        except self.nvml.NVMLError as err:
            self.reasons[key] = f"{getattr(fn, '__name__', key)}: {err}"
            return None

    def energy_mj(self) -> int | None:
        nvml = self.nvml
        return self._call("energy", nvml.nvmlDeviceGetTotalEnergyConsumption)

    def _throttle(self) -> int | None:
        while self._throttle_fns:
            try:
                return self._throttle_fns[0](self.handle)
            except self.nvml.NVMLError as err:
                fallback_codes = (
                    self.nvml.NVML_ERROR_FUNCTION_NOT_FOUND,
                    self.nvml.NVML_ERROR_NOT_SUPPORTED,
                )
                if len(self._throttle_fns) > 1 and err.value in fallback_codes:
                    self._throttle_fns.pop(0)  # older driver: try the older name
                    continue
                self.reasons["throttle_reasons"] = f"{self._throttle_fns[0].__name__}: {err}"
                self._throttle_fns = []
        self.reasons.setdefault("throttle_reasons", "no clocks-event reasons query in pynvml")
        return None

    def sample(self, pids: set[int], session_pids: set[int]) -> tuple[float, float, float]:
        """(memory used bytes, power W, GPU util %) for the series, NaN where unread; and
        the window's peaks and maxima are updated. ``pids``: the process tree whose GPU
        memory counts; ``session_pids``: the session's tree, for foreign processes."""
        nvml = self.nvml
        mem_used = power = util = math.nan
        info = self._call("nvml_mem_used_bytes", nvml.nvmlDeviceGetMemoryInfo)
        if info is not None:
            mem_used = info.used
            if self.peak_mem_used is None or info.used > self.peak_mem_used:
                self.peak_mem_used = info.used
        procs = self._call("process_mem_bytes", nvml.nvmlDeviceGetComputeRunningProcesses)
        if procs is not None:
            self._note_foreign(procs, session_pids)
            ours = [p.usedGpuMemory for p in procs if p.pid in pids]
            if ours:
                self.matched_process = True
                known = [m for m in ours if m is not None]  # None: NVML cannot tell
                if known and (self.peak_process_mem is None or sum(known) > self.peak_process_mem):
                    self.peak_process_mem = sum(known)
        milliwatts = self._call("power_w", nvml.nvmlDeviceGetPowerUsage)
        if milliwatts is not None:
            power = milliwatts / 1000.0
        rates = self._call("util_pct", nvml.nvmlDeviceGetUtilizationRates)
        if rates is not None:
            util = float(rates.gpu)
        clock = self._call("sm_clock_mhz", nvml.nvmlDeviceGetClockInfo, nvml.NVML_CLOCK_SM)
        if clock is not None and (self.max_sm_clock is None or clock > self.max_sm_clock):
            self.max_sm_clock = clock
        temp = self._call("temperature_c", nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        if temp is not None and (self.max_temperature is None or temp > self.max_temperature):
            self.max_temperature = temp
        mask = self._throttle()
        if mask is not None:
            self.throttle_mask = (self.throttle_mask or 0) | mask
        return mem_used, power, util

    def _note_foreign(self, procs: list[Any], session_pids: set[int]) -> None:
        listed = {p.pid for p in procs}
        if not self.session_listed and not listed.isdisjoint(session_pids):
            self.session_listed = True
        self.foreign_pids |= listed - session_pids

    def extras(self) -> dict[str, Any]:
        absent = {
            k: v
            for k, v in self.reasons.items()
            if k in ("nvml_mem_used_bytes", "sm_clock_mhz", "temperature_c", "throttle_reasons")
        }
        process_mem = self.peak_process_mem
        if process_mem is None and "process_mem_bytes" in self.reasons:
            absent["process_mem_bytes"] = self.reasons["process_mem_bytes"]
        elif process_mem is None and self.matched_process:
            absent["process_mem_bytes"] = "NVML lists this process tree but not its memory use"
        elif process_mem is None:
            absent["process_mem_bytes"] = (
                "no NVML compute process matched this process tree (no CUDA context yet, or "
                "NVML reports PIDs of another PID namespace, as in containers)"
            )
        mask = self.throttle_mask
        return {
            "sm_clock_mhz": self.max_sm_clock,
            "temperature_c": self.max_temperature,
            "throttle_reasons": decode_throttle_reasons(mask) if mask is not None else None,
            "nvml_mem_used_bytes": self.peak_mem_used,
            "process_mem_bytes": process_mem,
            "absent": absent,
        }


def nvml_targets(device: str, gpu_indices: list[int] | None) -> list[tuple[str, str]]:
    """(label, how to get the handle: "index:N" or "uuid:...") for each GPU to sample.

    Explicit ``gpu_indices`` are NVML indices. Otherwise the torch device index is mapped
    through CUDA_VISIBLE_DEVICES, because NVML numbers GPUs without regard to it.
    """
    if gpu_indices is not None:
        return [(str(i), f"index:{i}") for i in gpu_indices]
    if ":" in device:
        torch_index = int(device.split(":", 1)[1])
    else:
        import torch

        torch_index = torch.cuda.current_device() if torch.cuda.is_available() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return [(str(torch_index), f"index:{torch_index}")]
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if torch_index >= len(entries):
        raise ValueError(f"{device} is not among CUDA_VISIBLE_DEVICES={visible!r}")
    entry = entries[torch_index]
    return [(entry, f"index:{entry}" if entry.isdigit() else f"uuid:{entry}")]
