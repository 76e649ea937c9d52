"""A fake ``pynvml`` module that behaves like NVML, for testing the sampler without a GPU.

Install it at the import boundary: ``monkeypatch.setitem(sys.modules, "pynvml", fake)``.
Units follow NVML: power in milliwatts, the total-energy counter in millijoules (it advances
with time as the integral of the power), memory in bytes, clocks in MHz, temperature in C.
Any function can be made to raise ``NVMLError(code)`` per GPU through ``FakeGPU.errors``.
"""

from __future__ import annotations

import itertools
import math
import time
import types
from dataclasses import dataclass, field
from typing import Any

# Error codes and enum values as in nvml.h.
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNKNOWN = 999

NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0

nvmlClocksEventReasonGpuIdle = 0x1
nvmlClocksEventReasonApplicationsClocksSetting = 0x2
nvmlClocksEventReasonSwPowerCap = 0x4
nvmlClocksThrottleReasonHwSlowdown = 0x8
nvmlClocksEventReasonSyncBoost = 0x10
nvmlClocksEventReasonSwThermalSlowdown = 0x20
nvmlClocksThrottleReasonHwThermalSlowdown = 0x40
nvmlClocksThrottleReasonHwPowerBrakeSlowdown = 0x80
nvmlClocksEventReasonDisplayClockSetting = 0x100

_ERROR_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_NOT_FOUND: "Not Found",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLError(Exception):
    """Like pynvml's: ``value`` holds the NVML return code, ``str()`` its description."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _ERROR_STRINGS.get(self.value, f"Unknown Error {self.value}")


class NVMLError_LibraryNotFound(NVMLError):  # noqa: N801 (pynvml's name)
    def __init__(self, value: int = NVML_ERROR_LIBRARY_NOT_FOUND) -> None:
        super().__init__(value)


@dataclass
class Memory:
    total: int
    free: int
    used: int


@dataclass
class Utilization:
    gpu: int
    memory: int


@dataclass
class ProcessInfo:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 (NVML's field name); None: not available


@dataclass(eq=False)  # identity: handles are compared with `is`/`in`
class FakeGPU:
    """One GPU's behaviour. Power is ``power_mw + power_slope_mw_per_s * t`` (t since the
    fake was created); the energy counter is its integral, updated every
    ``energy_period_s`` seconds (0: continuously)."""

    power_mw: float = 250_000.0
    power_slope_mw_per_s: float = 0.0
    energy_start_mj: int = 7_000_000_000
    energy_period_s: float = 0.0
    mem_used: int = 10 * 2**30
    mem_total: int = 80 * 2**30
    util_gpu: int = 97
    util_mem: int = 40
    sm_clock_mhz: int = 1980
    temperature_c: int = 65
    throttle_masks: list[int] = field(default_factory=lambda: [0])  # cycled, one per call
    processes: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, bytes)
    uuid: str = ""
    errors: dict[str, int] = field(default_factory=dict)  # function name -> error code


class FakeNVML(types.ModuleType):
    """The fake module. ``init_error``: a code ``nvmlInit`` raises (e.g. library not found).
    ``calls`` counts calls by function name; ``energy_reads`` logs (time, mJ) readings."""

    def __init__(self, gpus: list[FakeGPU] | None = None, init_error: int | None = None):
        super().__init__("pynvml")
        for name, value in globals().items():
            if name.startswith(("NVML_", "nvmlClocks")) or name in (
                "NVMLError",
                "NVMLError_LibraryNotFound",
            ):
                setattr(self, name, value)
        self.gpus = gpus if gpus is not None else [FakeGPU()]
        for i, gpu in enumerate(self.gpus):
            gpu.uuid = gpu.uuid or f"GPU-fake-{i}"
        self.init_error = init_error
        self.initialized = False
        self.t0 = time.perf_counter()
        self.calls: dict[str, int] = {}
        self.energy_reads: list[tuple[float, int]] = []
        self._throttle_iters = [itertools.cycle(g.throttle_masks) for g in self.gpus]

    # -- helpers ----------------------------------------------------------------------

    def _enter(self, name: str, handle: Any = None) -> FakeGPU | None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if name not in ("nvmlInit", "nvmlShutdown") and not self.initialized:
            raise NVMLError(NVML_ERROR_UNINITIALIZED)
        if handle is None:
            return None
        if handle not in self.gpus:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        if name in handle.errors:
            raise NVMLError(handle.errors[name])
        return handle

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def energy_mj_at(self, gpu: FakeGPU, t: float) -> int:
        if gpu.energy_period_s:
            t = math.floor(t / gpu.energy_period_s) * gpu.energy_period_s
        return int(gpu.energy_start_mj + gpu.power_mw * t + gpu.power_slope_mw_per_s * t * t / 2)

    # -- NVML API ---------------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._enter("nvmlInit")
        if self.init_error is not None:
            if self.init_error == NVML_ERROR_LIBRARY_NOT_FOUND:
                raise NVMLError_LibraryNotFound()
            raise NVMLError(self.init_error)
        self.initialized = True

    def nvmlShutdown(self) -> None:
        self._enter("nvmlShutdown")
        self.initialized = False

    def nvmlDeviceGetCount(self) -> int:
        self._enter("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGPU:
        self._enter("nvmlDeviceGetHandleByIndex")
        if not 0 <= index < len(self.gpus):
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGPU:
        self._enter("nvmlDeviceGetHandleByUUID")
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
        raise NVMLError(NVML_ERROR_NOT_FOUND)

    def nvmlDeviceGetMemoryInfo(self, handle: FakeGPU) -> Memory:
        gpu = self._enter("nvmlDeviceGetMemoryInfo", handle)
        return Memory(total=gpu.mem_total, free=gpu.mem_total - gpu.mem_used, used=gpu.mem_used)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: FakeGPU) -> list[ProcessInfo]:
        gpu = self._enter("nvmlDeviceGetComputeRunningProcesses", handle)
        return [ProcessInfo(pid, used) for pid, used in gpu.processes]

    def nvmlDeviceGetPowerUsage(self, handle: FakeGPU) -> int:
        gpu = self._enter("nvmlDeviceGetPowerUsage", handle)
        return int(gpu.power_mw + gpu.power_slope_mw_per_s * self.elapsed())

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: FakeGPU) -> int:
        gpu = self._enter("nvmlDeviceGetTotalEnergyConsumption", handle)
        t = self.elapsed()
        value = self.energy_mj_at(gpu, t)
        self.energy_reads.append((t, value))
        return value

    def nvmlDeviceGetUtilizationRates(self, handle: FakeGPU) -> Utilization:
        gpu = self._enter("nvmlDeviceGetUtilizationRates", handle)
        return Utilization(gpu=gpu.util_gpu, memory=gpu.util_mem)

    def nvmlDeviceGetClockInfo(self, handle: FakeGPU, clock_type: int) -> int:
        gpu = self._enter("nvmlDeviceGetClockInfo", handle)
        if clock_type != NVML_CLOCK_SM:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return gpu.sm_clock_mhz

    def nvmlDeviceGetTemperature(self, handle: FakeGPU, sensor: int) -> int:
        gpu = self._enter("nvmlDeviceGetTemperature", handle)
        if sensor != NVML_TEMPERATURE_GPU:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_c

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: FakeGPU) -> int:
        gpu = self._enter("nvmlDeviceGetCurrentClocksEventReasons", handle)
        return next(self._throttle_iters[self.gpus.index(gpu)])

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: FakeGPU) -> int:
        gpu = self._enter("nvmlDeviceGetCurrentClocksThrottleReasons", handle)
        return next(self._throttle_iters[self.gpus.index(gpu)])
