"""The sampler: a context manager around the timed window, and its sampling thread."""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
import warnings
from array import array
from typing import Any

from ..proc import peak_rss, reset_peak_rss
from .contention import Contention, ContentionProbe
from .cpu import ProcessTree
from .nvml import MIN_ENERGY_COUNTER_WINDOW_S, NvmlGpu, init_nvml, nvml_targets
from .rapl import Rapl
from .result import TelemetryResult
from .series import downsample, trapezoid

DEVICES = ("cpu", "cuda", "cuda:N")


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
    """Context manager that samples telemetry on a daemon thread; see :mod:`bench.telemetry`.

    ``device``: "cpu", "cuda" or "cuda:N". ``gpu_indices``: NVML indices of the GPUs the run
    uses (default: the device's GPU). ``root_pid``: root of the process tree whose memory and
    CPU count (default: this process). ``session_root``: root of the session's process tree,
    whose CPU time and GPU processes are the benchmark's own for ``result.contention``
    (default: this process; pass the pytest supervisor's pid so that it, the worker and the
    ranks all count as own). ``max_points``: length limit of ``result.series``.
    """

    def __init__(
        self,
        device: str = "cpu",
        interval_s: float = 0.05,
        max_points: int = 200,
        gpu_indices: list[int] | None = None,
        root_pid: int | None = None,
        session_root: int | None = None,
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
        self.session_root = os.getpid() if session_root is None else session_root
        self.is_cuda = kind == "cuda"
        self.result: TelemetryResult

    # -- window ---------------------------------------------------------------------

    def __enter__(self) -> Sampler:
        self._samples = array("d")  # t, mem_bytes, power_w, util_pct per reading; NaN: unread
        self._n_periodic = 0
        self._reasons: dict[str, str] = {}
        self._gpus: list[NvmlGpu] = []
        self._nvml_reason: str | None = None
        self._rapl: Rapl | None = None
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
        self._tree = ProcessTree(self.root_pid)
        if not self._gpus:  # CPU device, or a GPU that NVML cannot read
            rapl = Rapl.open()
            if isinstance(rapl, str):
                self._rapl_reason = rapl
            else:
                self._rapl = rapl
        if not self.is_cuda:
            self._hwm_reset = reset_peak_rss(self.root_pid)

        # Without a timerfd, the thread sleeps in acquire(timeout) on this lock (cheaper per
        # wake-up than Event.wait), held by the window; __exit__ wakes it by releasing.
        self._stop = threading.Lock()
        self._stop.acquire()
        self._stopping = False
        self._tick_lock = threading.Lock()  # the thread's ticks vs the closing reading
        self._contention = ContentionProbe(self.session_root, gpu=self.is_cuda)
        self._contention.start()
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
            contention = self._contention.finish(self._gpus, self._nvml_reason)
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
            self.result = self._finish(t_exit - self._t0, energy_end, contention)
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
        nvml, reason = init_nvml()
        if nvml is None:
            self._nvml_reason = reason
            return
        failures = []
        for label, how in nvml_targets(self.device, self.gpu_indices):
            kind, key = how.split(":", 1)
            try:
                if kind == "index":
                    handle = nvml.nvmlDeviceGetHandleByIndex(int(key))
                else:
                    handle = nvml.nvmlDeviceGetHandleByUUID(key)
            except nvml.NVMLError as err:
                failures.append(f"GPU {label}: {err}")
                continue
            self._gpus.append(NvmlGpu(nvml, label, handle))
        if failures:  # sums over a subset of the run's GPUs would mislead: use none
            self._gpus.clear()
            self._nvml_reason = "NVML handle unavailable for " + "; ".join(failures)

    def _refresh(self, now: float) -> None:
        """Refresh the process tree's members, and the session's (the same when it has the
        same root)."""
        self._tree.refresh(now)
        self._contention.refresh(self._tree.pids if self.session_root == self.root_pid else None)

    def _tick_gpu(self, now: float) -> None:
        """Take one NVML reading of every GPU (enter, sampler thread, exit: one at a time)."""
        tree = self._tree
        if now >= tree.next_refresh:
            self._refresh(now)
        mem = power = 0.0
        util_sum, util_n = 0.0, 0
        for gpu in self._gpus:
            g_mem, g_power, g_util = gpu.sample(tree.pids, self._contention.pids)
            mem += g_mem  # NaN if any GPU is unread: a partial sum would mislead
            power += g_power
            if g_util == g_util:
                util_sum += g_util
                util_n += 1
        self._samples.extend((now - self._t0, mem, power, util_sum / util_n if util_n else math.nan))

    def _tick_host(self, now: float) -> None:
        """Take one reading of the process tree and RAPL. Kept lean: after sleeping, every
        line runs with cold caches, so a sample costs far more than a warm loop suggests."""
        dt = now - self._last_t
        self._last_t = now
        mem = util = power = math.nan
        if not self.is_cuda:  # on a GPU without NVML, host RSS and CPU % would mislead
            tree = self._tree
            if now >= tree.next_refresh:
                self._refresh(now)
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

    def _finish(self, duration: float, energy_end: list[int | None], contention: Contention) -> TelemetryResult:
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
        if peak_mem is None:
            reasons.setdefault("peak_mem_bytes", "memory was not measured")

        energy_j, energy_source, energy_reason = self._energy(duration, energy_end)
        power_w = energy_j / duration if energy_j is not None and duration > 0 else None
        if power_w is None:
            reasons["power_w"] = energy_reason or "power was not measured"
        if energy_j is None:
            reasons["energy_j"] = energy_reason or "energy was not measured"

        util = self._mean_util()
        if util is None:
            reasons["util_pct"] = self._util_absent_reason()
        if contention.reason is not None:
            reasons["contention"] = contention.reason

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
            series=downsample(self._t, columns, self.max_points),
            gpu={g.label: g.extras() for g in self._gpus},
            absent=reasons,
            sampler_cpu_s=self._sampler_cpu_s,
            contention=contention,
        )

    def _cpu_peak_mem(self) -> int:
        """Peak tree RSS: the sampled maximum, raised to the root's kernel high-water mark
        (reset at enter) plus the smallest sampled RSS of its descendants, when available;
        that catches the root's spikes shorter than the interval."""
        peak = int(max(self._mem))
        if self._hwm_reset:
            hwm = peak_rss(self.root_pid)
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

    def _util_absent_reason(self) -> str:
        if self.is_cuda and not self._gpus:
            return f"GPU utilization needs NVML: {self._nvml_reason}"
        if self._gpus:
            return "; ".join(f"GPU {g.label}: {g.reasons.get('util_pct', 'no reading')}" for g in self._gpus)
        return "no CPU-time reading in the window"

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

        power_j = trapezoid(self._t, self._power)
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
