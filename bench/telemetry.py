"""Telemetry sampled around a timed benchmark window.

``with Sampler(device) as s: ...`` samples, on a background daemon thread, every
``interval_s`` seconds:

- on ``cuda`` devices, through NVML: device memory used, this process tree's GPU memory,
  power, GPU utilization, SM clock, temperature, throttle reasons; the total-energy counter
  is read when the window opens and closes. The peak memory reported is the CUDA caching
  allocator's (``torch.cuda.max_memory_allocated``), because NVML's figure includes the CUDA
  context and the allocator's cache.
- on ``cpu``: the resident set size and CPU time of the whole process tree (the root process
  and all its descendants, e.g. distributed ranks), and RAPL package energy where readable.

A source that cannot be read is reported as absent (``None``) with the reason, never as 0.
After the ``with`` block, ``s.result`` holds a :class:`TelemetryResult`.

Sample timing: the window's opening and closing readings are taken on the caller's thread
when it enters and leaves; between them the thread samples at ``t0 + k * interval_s`` for
k = 1, 2, ... (sleeping until each deadline, skipping deadlines it missed), so a window of
``d`` seconds ideally gets ``floor(d / interval_s)`` periodic samples: ``n_samples`` counts
those, ``requested_samples`` is that ideal count.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
import warnings
from array import array
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

DEVICES = ("cpu", "cuda", "cuda:N")
#: Windows shorter than this are below the NVML energy counter's update period.
MIN_ENERGY_COUNTER_WINDOW_S = 0.1
#: How often the list of descendant processes is refreshed.
CHILDREN_REFRESH_S = 0.5
#: Where the kernel's powercap (RAPL) zones live; a module attribute so tests can point it
#: to a fake tree.
RAPL_ROOT = "/sys/class/powercap"

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

_NAN = float("nan")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clocks-event reason mask (unknown bits in hex)."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    unknown = mask & ~sum(THROTTLE_REASONS)
    if unknown:
        names.append(f"unknown_{unknown:#x}")
    return names


@dataclass
class TelemetryResult:
    """What a :class:`Sampler` measured over one window. ``None`` means not measured; the
    reason is in ``absent`` (or ``energy_reason`` for energy)."""

    duration_s: float
    n_samples: int  # periodic samples delivered (the opening and closing readings excluded)
    requested_samples: int  # floor(duration_s / interval_s)
    peak_mem_bytes: int | None
    mem_source: str  # "cuda-allocator" | "rss-tree"
    power_w: float | None  # mean power over the window
    energy_j: float | None
    energy_source: str  # "nvml-energy" | "nvml-power" | "rapl" | "none"
    energy_reason: str | None  # why absent, or why approximate
    util_pct: float | None  # mean GPU utilization, or process-tree CPU % of one core
    series: dict[str, list[Any]]  # t, mem_bytes, power_w, util_pct; <= max_points each
    gpu: dict[str, dict[str, Any]] = field(default_factory=dict)  # NVML index -> extras
    absent: dict[str, str] = field(default_factory=dict)  # field name -> reason
    sampler_cpu_s: float | None = None  # CPU time the sampling thread itself used

    def to_extra_info(self, samples: int) -> dict[str, Any]:
        """The ``archbench/1`` schema keys this result fills, for ``samples`` samples
        processed in the window (all ranks)."""
        if samples <= 0:
            raise ValueError(f"samples must be positive, got {samples}")
        energy_per_sample = samples_per_j = None
        absent = {k: v for k, v in self.absent.items() if k in ("peak_mem_bytes", "power_w")}
        if self.energy_j is not None and self.energy_j > 0:
            energy_per_sample = self.energy_j / samples
            samples_per_j = samples / self.energy_j
        else:
            reason = self.energy_reason or "energy was not measured"
            absent["energy_j_per_sample"] = absent["samples_per_j"] = reason
        return {
            "peak_mem_bytes": self.peak_mem_bytes,
            "mem_source": self.mem_source,
            "power_w": self.power_w,
            "energy_j_per_sample": energy_per_sample,
            "samples_per_j": samples_per_j,
            "energy_source": self.energy_source,
            "energy_reason": self.energy_reason,
            "util_pct": self.util_pct,
            "gpu_telemetry": self.gpu,
            "telemetry_samples": self.n_samples,
            "telemetry_requested_samples": self.requested_samples,
            "telemetry": self.series,
            "absent": absent,
        }


# --------------------------------------------------------------------------------------
# NVML: one nvmlInit per process, done lazily.

_nvml_module: Any = None
_nvml_failure: str | None = None


def _nvml() -> tuple[Any, str | None]:
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


# --------------------------------------------------------------------------------------
# Process tree: RSS and CPU time of a root process and its descendants.


def _read_statm_rss(fd: int) -> int:
    return int(os.pread(fd, 128, 0).split(None, 2)[1]) * _PAGE_SIZE


def _read_stat(fd: int) -> tuple[int, float]:
    """(rss bytes, user+system CPU seconds) from an open /proc/PID/stat."""
    raw = os.pread(fd, 1024, 0)
    fields = raw[raw.rindex(b")") + 2 :].split()  # fields 3.. of proc(5); comm may hold spaces
    return int(fields[21]) * _PAGE_SIZE, (int(fields[11]) + int(fields[12])) / _CLK_TCK


class _Member:
    """One process of the tree, with its /proc file kept open (one pread per reading)."""

    __slots__ = ("pid", "fd", "proc", "last_cpu", "alive")

    def __init__(self, pid: int, use_proc: bool) -> None:
        self.pid, self.fd, self.proc, self.alive = pid, -1, None, True
        if use_proc:
            self.fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        else:
            import psutil

            self.proc = psutil.Process(pid)
        self.last_cpu = self.read()[1]

    def read(self) -> tuple[int, float]:
        if self.fd >= 0:
            return _read_stat(self.fd)
        mem, cpu = self.proc.memory_info(), self.proc.cpu_times()
        return mem.rss, cpu.user + cpu.system

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _ProcessTree:
    """Samples the summed RSS and CPU time of ``root_pid`` and all its descendants.

    On Linux each reading is one ``pread`` per process on an already-open /proc file, and
    descendants are found through /proc/PID/task/TID/children (no scan of every process on
    the machine); elsewhere psutil does both. The descendant list is refreshed at most every
    :data:`CHILDREN_REFRESH_S`.
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._proc = os.path.exists(f"/proc/{root_pid}/stat")
        self._children_files = os.path.exists(f"/proc/{root_pid}/task/{root_pid}/children")
        self._is_self = root_pid == os.getpid()
        self._children: dict[int, _Member] = {}
        self.next_refresh = 0.0  # when refresh() is next due
        self.pids: set[int] = {root_pid}
        if self._is_self and self._proc:
            self._root_fd, self._root = os.open("/proc/self/statm", os.O_RDONLY), None
            self._root_cpu = time.process_time()  # ns resolution, unlike /proc ticks
        else:
            self._root_fd, self._root = -1, _Member(root_pid, self._proc)
        self.children_rss = 0  # of the latest reading

    def _descendants(self) -> list[int]:
        if not self._children_files:
            import psutil

            try:
                return [p.pid for p in psutil.Process(self.root_pid).children(recursive=True)]
            except psutil.Error:
                return []
        found, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                        kids = [int(k) for k in f.read().split()]
                except OSError:
                    continue
                found.extend(kids)
                todo.extend(kids)
        return found

    def refresh(self, now: float) -> None:
        """Pick up new descendants and drop exited ones; next due CHILDREN_REFRESH_S on."""
        self.next_refresh = now + CHILDREN_REFRESH_S
        current = set(self._descendants())
        for pid in [p for p, m in self._children.items() if p not in current or not m.alive]:
            self._children.pop(pid).close()
        for pid in current - self._children.keys():
            try:
                self._children[pid] = _Member(pid, self._proc)
            except Exception:  # exited meanwhile, or not ours to read
                continue
        self.pids = {self.root_pid, *self._children}

    def read(self) -> tuple[int, float]:
        """(tree RSS bytes, CPU seconds used by the tree since the previous reading)."""
        if self._root is None:
            rss = _read_statm_rss(self._root_fd)
            cpu_now = time.process_time()
            cpu = cpu_now - self._root_cpu
            self._root_cpu = cpu_now
        else:
            rss, cpu_now = self._root.read()
            cpu, self._root.last_cpu = cpu_now - self._root.last_cpu, cpu_now
        children_rss = 0
        for member in self._children.values():
            if not member.alive:
                continue
            try:
                m_rss, m_cpu = member.read()
            except Exception:  # exited: ProcessLookupError from /proc, psutil.Error
                member.alive = False
                continue
            children_rss += m_rss
            cpu += m_cpu - member.last_cpu
            member.last_cpu = m_cpu
        self.children_rss = children_rss
        return rss + children_rss, cpu

    def close(self) -> None:
        if self._root_fd >= 0:
            os.close(self._root_fd)
            self._root_fd = -1
        if self._root is not None:
            self._root.close()
        for member in self._children.values():
            member.close()
        self._children.clear()


def _reset_hwm(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of ``pid`` to its current RSS.

    ``ru_maxrss`` and VmHWM are lifetime peaks; after this reset, VmHWM read at the end is
    the peak of this window, including spikes shorter than the sampling interval. Note that
    it also resets what ``getrusage``/``time -v`` will report for that process.
    """
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _read_hwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


# --------------------------------------------------------------------------------------
# RAPL package energy.


class _Rapl:
    """Cumulative package energy of the RAPL zones, with counter wraparound handled."""

    def __init__(self, zones: list[tuple[int, int]]) -> None:
        self._zones = zones  # (fd, max_energy_range_uj)
        self._last = [self._read_uj(fd) for fd, _ in zones]
        self._total_uj = 0

    @staticmethod
    def _read_uj(fd: int) -> int:
        return int(os.pread(fd, 32, 0))

    @classmethod
    def open(cls, root: str) -> _Rapl | str:
        """The package zones under ``root``, or the reason there are none to read."""
        try:
            names = sorted(
                n
                for n in os.listdir(root)
                if n.startswith("intel-rapl:") and n.count(":") == 1  # packages, not subzones
            )
        except OSError:
            names = []
        zone_dirs = []
        for name in names:
            try:
                with open(os.path.join(root, name, "name")) as f:
                    if not f.read().startswith("package"):
                        continue  # e.g. "psys", which would double-count
            except OSError:
                pass
            zone_dirs.append(os.path.join(root, name))
        if not zone_dirs:
            return f"no {root}/intel-rapl:* package zones on this machine"
        zones: list[tuple[int, int]] = []
        for zone in zone_dirs:
            path = os.path.join(zone, "energy_uj")
            try:
                with open(os.path.join(zone, "max_energy_range_uj")) as f:
                    max_range = int(f.read())
                fd = os.open(path, os.O_RDONLY)
                int(os.pread(fd, 32, 0))
            except PermissionError:
                for fd, _ in zones:
                    os.close(fd)
                return f"permission denied reading {path} (RAPL counters are root-only here)"
            except (OSError, ValueError) as err:
                for fd, _ in zones:
                    os.close(fd)
                return f"cannot read {path}: {err}"
            zones.append((fd, max_range))
        return cls(zones)

    def read_j(self) -> float:
        """Joules since this object was opened."""
        for i, (fd, max_range) in enumerate(self._zones):
            now = self._read_uj(fd)
            delta = now - self._last[i]
            if delta < 0:  # the counter wrapped
                delta += max_range
            self._total_uj += delta
            self._last[i] = now
        return self._total_uj / 1e6

    def close(self) -> None:
        for fd, _ in self._zones:
            os.close(fd)
        self._zones = []


# --------------------------------------------------------------------------------------
# One GPU through NVML.


class _NvmlGpu:
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

    def sample(self, pids: set[int]) -> tuple[float, float, float]:
        """(memory used bytes, power W, GPU util %) for the series, NaN where unread; and
        the window's peaks and maxima are updated."""
        nvml = self.nvml
        mem_used = power = util = _NAN
        info = self._call("nvml_mem_used_bytes", nvml.nvmlDeviceGetMemoryInfo)
        if info is not None:
            mem_used = info.used
            if self.peak_mem_used is None or info.used > self.peak_mem_used:
                self.peak_mem_used = info.used
        procs = self._call("process_mem_bytes", nvml.nvmlDeviceGetComputeRunningProcesses)
        if procs is not None:
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


def _nvml_targets(device: str, gpu_indices: list[int] | None) -> list[tuple[str, str]]:
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


def _trapezoid(t: array, y: array) -> float | None:
    """Integral of y over t by the trapezoid rule, skipping NaN points; None with fewer
    than two finite points."""
    total, n, prev_t, prev_y = 0.0, 0, 0.0, 0.0
    for ti, yi in zip(t, y, strict=True):
        if yi != yi:  # NaN: not read at this tick
            continue
        if n:
            total += (ti - prev_t) * (yi + prev_y) / 2
        n, prev_t, prev_y = n + 1, ti, yi
    return total if n >= 2 else None


def _downsample(t: array, cols: dict[str, tuple[array, str]], max_points: int) -> dict[str, list[Any]]:
    """Bucket the series into at most ``max_points`` points: time is the bucket's mean,
    each column is aggregated with its rule ("max" keeps memory peaks, "mean"), NaN
    values are skipped and an all-NaN bucket becomes None."""
    n = len(t)
    buckets = max(1, min(n, max_points))
    bounds = [n * i // buckets for i in range(buckets + 1)]
    out: dict[str, list[Any]] = {"t": []}
    for name in cols:
        out[name] = []
    for lo, hi in pairwise(bounds):
        out["t"].append(round(sum(t[lo:hi]) / (hi - lo), 4))
        for name, (col, rule) in cols.items():
            vals = [v for v in col[lo:hi] if v == v]
            if not vals:
                out[name].append(None)
            elif rule == "max":
                out[name].append(int(max(vals)))
            else:
                out[name].append(round(sum(vals) / len(vals), 3))
    return out


# --------------------------------------------------------------------------------------
# Periodic wake-ups. A wake-up is most of a sample's cost (the reading itself is a few
# microseconds); a periodic timerfd, which the kernel re-arms itself, costs the sleeping
# thread less than a timed lock or Event wait, which arm and cancel a timer every time.


class _Itimerspec(ctypes.Structure):
    _fields_ = [(name, ctypes.c_long) for name in ("i_sec", "i_nsec", "v_sec", "v_nsec")]


_libc: Any = None
_TFD_TIMER_ABSTIME = 1


def _timerfd_settime(fd: int, flags: int, value_s: float, interval_s: float) -> None:
    i_sec, i_nsec = divmod(round(interval_s * 1e9), 10**9)
    v_sec, v_nsec = divmod(round(value_s * 1e9), 10**9)
    spec = _Itimerspec(i_sec, i_nsec, v_sec, v_nsec)
    if _libc.timerfd_settime(fd, flags, ctypes.byref(spec), None) != 0:
        raise OSError(ctypes.get_errno(), "timerfd_settime failed")


def _periodic_timerfd(t0: float, interval_s: float) -> int | None:
    """A timerfd that fires at ``t0 + k * interval_s`` (``time.perf_counter`` seconds),
    k >= 1; ``None`` where timerfd or a CLOCK_MONOTONIC perf_counter is unavailable."""
    global _libc
    if not sys.platform.startswith("linux"):
        return None
    if time.get_clock_info("perf_counter").implementation != "clock_gettime(CLOCK_MONOTONIC)":
        return None
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fd = _libc.timerfd_create(time.CLOCK_MONOTONIC, os.O_CLOEXEC)
    except (OSError, AttributeError):
        return None
    if fd < 0:
        return None
    try:
        _timerfd_settime(fd, _TFD_TIMER_ABSTIME, t0 + interval_s, interval_s)
    except OSError:
        os.close(fd)
        return None
    return fd


# --------------------------------------------------------------------------------------


class Sampler:
    """Context manager that samples telemetry on a daemon thread; see the module docstring.

    ``device``: "cpu", "cuda" or "cuda:N". ``gpu_indices``: NVML indices of the GPUs the run
    uses (default: the device's GPU). ``root_pid``: root of the process tree whose memory and
    CPU count (default: this process). ``max_points``: length limit of ``result.series``.
    """

    def __init__(
        self,
        device: str = "cpu",
        interval_s: float = 0.05,
        max_points: int = 200,
        gpu_indices: list[int] | None = None,
        root_pid: int | None = None,
    ) -> None:
        kind = device.split(":", 1)[0]
        if kind not in ("cpu", "cuda") or (":" in device and (kind != "cuda" or not device.split(":", 1)[1].isdigit())):
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        self.device = device
        self.interval_s = float(interval_s)
        self.max_points = max_points
        self.gpu_indices = gpu_indices
        self.root_pid = os.getpid() if root_pid is None else root_pid
        self.is_cuda = kind == "cuda"
        self.result: TelemetryResult

    # -- window ---------------------------------------------------------------------

    def __enter__(self) -> Sampler:
        self._samples = array("d")  # t, mem_bytes, power_w, util_pct per reading; NaN: unread
        self._n_periodic = 0
        self._reasons: dict[str, str] = {}
        self._gpus: list[_NvmlGpu] = []
        self._nvml_reason: str | None = None
        self._rapl: _Rapl | None = None
        self._rapl_reason: str | None = None
        self._hwm_reset = False
        self._min_children_rss = math.inf
        self._torch_cuda: Any = None
        self._cpu_s = 0.0  # CPU seconds of the tree between the opening and latest reading
        self._last_rapl_j = 0.0
        self._thread_error: BaseException | None = None
        self._sampler_cpu_s: float | None = None

        if self.is_cuda:
            self._open_gpu()
        self._tree = _ProcessTree(self.root_pid)
        if not self._gpus:  # CPU device, or a GPU that NVML cannot read
            rapl = _Rapl.open(RAPL_ROOT)
            if isinstance(rapl, str):
                self._rapl_reason = rapl
            else:
                self._rapl = rapl
        if not self.is_cuda:
            self._hwm_reset = _reset_hwm(self.root_pid)

        # Without a timerfd, the thread sleeps in acquire(timeout) on this lock (cheaper per
        # wake-up than Event.wait), held by the window; __exit__ wakes it by releasing.
        self._stop = threading.Lock()
        self._stop.acquire()
        self._stopping = False
        self._tick_lock = threading.Lock()  # the thread's ticks vs the closing reading
        self._t0 = time.perf_counter()
        self._timerfd = _periodic_timerfd(self._t0, self.interval_s)
        self._energy_start = [g.energy_mj() for g in self._gpus]
        self._last_t = self._t0
        self._tick = self._tick_gpu if self._gpus else self._tick_host
        self._tick(self._t0)  # the opening reading
        self._rapl_j0 = self._last_rapl_j
        self._thread = threading.Thread(target=self._run, name="archbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        t_exit = time.perf_counter()
        # The closing reading and energy counters are read as the window ends, not after
        # the thread has stopped (which can take a scheduling delay on a busy machine).
        with self._tick_lock:
            self._tick(time.perf_counter())
            energy_end = [g.energy_mj() for g in self._gpus]
            self._stopping = True
        if self._timerfd is not None:
            try:  # fire now, so the thread sees the flag without waiting for its next tick
                _timerfd_settime(self._timerfd, 0, 1e-9, 0.0)
            except OSError:
                pass  # the periodic expiry wakes it anyway
        self._stop.release()
        self._thread.join()
        if self._timerfd is not None:
            os.close(self._timerfd)
        if self._thread_error is not None:
            warnings.warn(
                f"telemetry sampling stopped early: {self._thread_error!r}",
                RuntimeWarning,
                stacklevel=2,
            )
        try:
            self.result = self._finish(t_exit - self._t0, energy_end)
        finally:
            self._tree.close()
            if self._rapl is not None:
                self._rapl.close()

    # -- sampling -------------------------------------------------------------------

    def _open_gpu(self) -> None:
        import torch

        if torch.cuda.is_available():
            self._torch_cuda = torch.cuda
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._reasons["peak_mem_bytes"] = (
                f"torch.cuda is not available in this process, so the allocator peak on {self.device} cannot be read"
            )
        nvml, reason = _nvml()
        if nvml is None:
            self._nvml_reason = reason
            return
        failures = []
        for label, how in _nvml_targets(self.device, self.gpu_indices):
            kind, key = how.split(":", 1)
            try:
                if kind == "index":
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(key))
                else:
                    handle = nvml.nvmlDeviceGetHandleByUUID(key)
            except nvml.NVMLError as err:
                failures.append(f"GPU {label}: {err}")
                continue
            self._gpus.append(_NvmlGpu(nvml, label, handle))
        if failures:  # sums over a subset of the run's GPUs would mislead: use none
            self._gpus.clear()
            self._nvml_reason = "NVML handle unavailable for " + "; ".join(failures)

    def _tick_gpu(self, now: float) -> None:
        """Take one NVML reading of every GPU (enter, sampler thread, exit: one at a time)."""
        tree = self._tree
        if now >= tree.next_refresh:
            tree.refresh(now)
        mem = power = 0.0
        util_sum, util_n = 0.0, 0
        for gpu in self._gpus:
            g_mem, g_power, g_util = gpu.sample(tree.pids)
            mem += g_mem  # NaN if any GPU is unread: a partial sum would mislead
            power += g_power
            if g_util == g_util:
                util_sum += g_util
                util_n += 1
        self._samples.extend((now - self._t0, mem, power, util_sum / util_n if util_n else _NAN))

    def _tick_host(self, now: float) -> None:
        """Take one reading of the process tree and RAPL. Kept lean: after sleeping, every
        line runs with cold caches, so a sample costs far more than a warm loop suggests."""
        dt = now - self._last_t
        self._last_t = now
        mem = util = power = _NAN
        if not self.is_cuda:  # on a GPU without NVML, host RSS and CPU % would mislead
            tree = self._tree
            if now >= tree.next_refresh:
                tree.refresh(now)
            mem, cpu_s = tree.read()
            if dt > 0:
                util = cpu_s / dt * 100.0
                self._cpu_s += cpu_s
            if tree.children_rss < self._min_children_rss:
                self._min_children_rss = tree.children_rss
        if self._rapl is not None:
            energy = self._rapl.read_j()
            if dt > 0:
                power = (energy - self._last_rapl_j) / dt
            self._last_rapl_j = energy
        self._samples.extend((now - self._t0, mem, power, util))

    def _run(self) -> None:
        t0, interval = self._t0, self.interval_s
        acquire, clock, timerfd = self._stop.acquire, time.perf_counter, self._timerfd
        tick_lock = self._tick_lock
        deadline = t0 + interval
        cpu_start = time.thread_time()
        try:
            while True:
                if timerfd is not None:
                    os.read(timerfd, 8)  # expirations since the last read; missed ones skipped
                else:
                    delay = deadline - clock()
                    if acquire(True, delay) if delay > 0 else acquire(False):
                        break  # released by __exit__
                with tick_lock:
                    if self._stopping:
                        break
                    now = clock()
                    self._tick(now)
                    self._n_periodic += 1
                deadline = t0 + (math.floor((now - t0) / interval) + 1) * interval
        except Exception as err:  # reported at exit; the benchmark itself carries on
            self._thread_error = err
        self._sampler_cpu_s = time.thread_time() - cpu_start

    # -- result ---------------------------------------------------------------------

    def _finish(self, duration: float, energy_end: list[int | None]) -> TelemetryResult:
        samples = self._samples
        self._t, self._mem, self._power, self._util = (samples[i::4] for i in range(4))
        reasons = self._reasons
        if self.is_cuda:
            mem_source = "cuda-allocator"
            peak_mem = None
            if self._torch_cuda is not None:
                peak_mem = int(self._torch_cuda.max_memory_allocated(self.device))
        else:
            mem_source = "rss-tree"
            peak_mem = self._cpu_peak_mem()

        energy_j, energy_source, energy_reason = self._energy(duration, energy_end)
        power_w = energy_j / duration if energy_j is not None and duration > 0 else None
        if power_w is None:
            reasons["power_w"] = energy_reason or "power was not measured"
        if energy_j is None:
            reasons["energy_j"] = energy_reason or "energy was not measured"

        util = self._mean_util()
        if util is None:
            if self.is_cuda and not self._gpus:
                reasons["util_pct"] = f"GPU utilization needs NVML: {self._nvml_reason}"
            elif self._gpus:
                reasons["util_pct"] = "; ".join(
                    f"GPU {g.label}: {g.reasons.get('util_pct', 'no reading')}" for g in self._gpus
                )
            else:
                reasons["util_pct"] = "no CPU-time reading in the window"
        if peak_mem is None:
            reasons.setdefault("peak_mem_bytes", "memory was not measured")

        columns = {
            "mem_bytes": (self._mem, "max"),
            "power_w": (self._power, "mean"),
            "util_pct": (self._util, "mean"),
        }
        return TelemetryResult(
            duration_s=duration,
            n_samples=self._n_periodic,
            requested_samples=math.floor(duration / self.interval_s),
            peak_mem_bytes=peak_mem,
            mem_source=mem_source,
            power_w=power_w,
            energy_j=energy_j,
            energy_source=energy_source,
            energy_reason=energy_reason,
            util_pct=util,
            series=_downsample(self._t, columns, self.max_points),
            gpu={g.label: g.extras() for g in self._gpus},
            absent=reasons,
            sampler_cpu_s=self._sampler_cpu_s,
        )

    def _cpu_peak_mem(self) -> int:
        """Peak tree RSS: the sampled maximum, raised to the root's kernel high-water mark
        (reset at enter) plus the smallest sampled RSS of its descendants, when available;
        that catches the root's spikes shorter than the interval."""
        peak = int(max(self._mem))
        if self._hwm_reset:
            hwm = _read_hwm(self.root_pid)
            if hwm is not None:
                min_children = self._min_children_rss
                peak = max(peak, hwm + (int(min_children) if min_children < math.inf else 0))
        return peak

    def _mean_util(self) -> float | None:
        if self._gpus:
            vals = [u for u in self._util if u == u]
            return sum(vals) / len(vals) if vals else None
        if self.is_cuda:
            return None
        span = self._t[-1] - self._t[0]  # opening to closing reading
        return self._cpu_s / span * 100.0 if span > 0 else None

    def _energy(self, duration: float, energy_end: list[int | None]) -> tuple[float | None, str, str | None]:
        """(joules, energy_source, energy_reason)."""
        if not self._gpus:
            prefix = f"{self._nvml_reason}; " if self.is_cuda and self._nvml_reason else ""
            if self._rapl is None:
                return None, "none", f"{prefix}{self._rapl_reason}"
            joules = self._last_rapl_j - self._rapl_j0
            if joules <= 0:
                return None, "none", f"{prefix}RAPL counter did not advance over the window"
            return joules, "rapl", (f"{prefix}package energy from RAPL" if prefix else None)

        power_j = _trapezoid(self._t, self._power)
        power_reason = "; ".join(f"GPU {g.label}: {g.reasons['power_w']}" for g in self._gpus if "power_w" in g.reasons)

        counter_problem = None
        missing = [
            g for g, a, b in zip(self._gpus, self._energy_start, energy_end, strict=True) if a is None or b is None
        ]
        if missing:
            counter_problem = (
                "total-energy counter unavailable ("
                + "; ".join(f"GPU {g.label}: {g.reasons.get('energy', 'no reading')}" for g in missing)
                + ")"
            )
        else:
            delta_mj = sum(b - a for a, b in zip(self._energy_start, energy_end, strict=True))
            if delta_mj < 0:
                counter_problem = "total-energy counter went backwards (driver reload?)"
            elif duration < MIN_ENERGY_COUNTER_WINDOW_S:
                counter_problem = (
                    f"window of {duration:.3f} s is shorter than the energy counter's update "
                    f"period (~{MIN_ENERGY_COUNTER_WINDOW_S} s)"
                )
            elif delta_mj == 0:  # its update period is longer than this window
                counter_problem = "total-energy counter did not advance over the window"
            else:
                return delta_mj / 1000.0, "nvml-energy", None

        if power_j is None or power_j <= 0:
            why = power_reason or "fewer than two power readings"
            return None, "none", f"{counter_problem}; no power to integrate ({why})"
        return power_j, "nvml-power", f"{counter_problem}; integrated sampled power instead"
