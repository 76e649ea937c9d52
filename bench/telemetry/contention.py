"""Contention: did other work on the machine compete with the benchmark during the window?

- ``foreign_cores``: CPU time used during the window by processes outside the session's own
  process tree, in cores: (busy time of the whole machine from /proc/stat, i.e. user + nice +
  system + irq + softirq) minus (CPU time of the session root and its descendants), divided by
  the window. Each own process counts utime + stime + cutime + cstime, so children reaped
  during the window still count as own (their time moves into the parent's cutime).
- ``steal_pct``: time the hypervisor gave to other VMs, in % of all CPU time of the window.
- ``foreign_gpu_processes``: compute processes NVML lists on the GPUs in use that are not in
  the session's tree (GPU devices only).

/proc/stat and the tree's stat files are read when the window opens and closes; in between
only the tree's member list is refreshed, with the sampler's periodic refresh, so that
processes born and gone within the window are known. The counters tick in 1/CLK_TCK s
(10 ms), so over a window of w seconds ``foreign_cores`` is uncertain by about
(1 + processes in the tree) * 0.01 / w cores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..proc import CLK_TCK, STARTTIME, descendants, read_stat, tree_cpu_seconds
from .nvml import NvmlGpu

#: Where the machine's CPU time counters are; a module attribute so tests can point it away.
PROC_STAT = "/proc/stat"
#: Foreign CPU use above a quarter of a core: on the few cores of a CI runner or a laptop,
#: enough to shift step times by more than their run-to-run noise.
CONTENTION_CORES = 0.25
#: Steal above 5 % of the CPU time: the hypervisor is sharing the cores with other VMs.
CONTENTION_STEAL_PCT = 5.0


@dataclass(frozen=True)
class Contention:
    """What competed with the benchmark over one window. ``None``: not measured (the reason
    is in ``reason``); ``foreign_gpu_processes`` is None on CPU devices (``gpu`` False)."""

    foreign_cores: float | None = None
    steal_pct: float | None = None
    foreign_gpu_processes: int | None = None
    gpu: bool = False  # whether foreign GPU processes apply (a cuda device)
    reason: str | None = "contention was not measured"

    @property
    def contended(self) -> bool | None:
        """True when any measured figure is over its threshold; None when none is and some
        figure that applies is unknown; else False."""
        checks = [(self.foreign_cores, CONTENTION_CORES), (self.steal_pct, CONTENTION_STEAL_PCT)]
        if self.gpu:
            checks.append((self.foreign_gpu_processes, 0))
        if any(value is not None and value > limit for value, limit in checks):
            return True
        if any(value is None for value, _ in checks):
            return None
        return False

    def to_dict(self) -> dict[str, Any]:
        return {
            "foreign_cores": self.foreign_cores,
            "steal_pct": self.steal_pct,
            "foreign_gpu_processes": self.foreign_gpu_processes,
            "contended": self.contended,
            "threshold_cores": CONTENTION_CORES,
            "threshold_steal_pct": CONTENTION_STEAL_PCT,
        }


def read_machine_ticks(path: str) -> tuple[int, int, int]:
    """(busy, steal, total) CPU time of all CPUs in 1/CLK_TCK s, from the "cpu" line of
    /proc/stat. Busy: user + nice + system + irq + softirq (guest time is inside user and
    nice); total adds idle, iowait and steal."""
    with open(path, "rb") as f:
        line = f.readline()
    if not line.startswith(b"cpu "):
        raise ValueError(f"{path} does not start with the 'cpu' line")
    values = [int(v) for v in line.split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values + [0] * (8 - len(values))
    busy = user + nice + system + irq + softirq
    return busy, steal, busy + idle + iowait + steal


class ContentionProbe:
    """Measures :class:`Contention` between :meth:`start` and :meth:`finish`.

    ``pids``: the session's tree as last refreshed (the root and its descendants), for
    telling NVML's processes apart. Call :meth:`refresh` when the sampler refreshes its tree.
    """

    def __init__(self, session_root: int, gpu: bool) -> None:
        self.session_root = session_root
        self.gpu = gpu
        self.pids: set[int] = {session_root}
        # pid -> (start time in ticks since boot, CPU s when first seen: 0 for those born in
        # the window); the start time tells a process from a later one that reuses its pid
        self._first_seen: dict[int, tuple[int, float]] = {}
        self._start: tuple[int, int, int] | None = None
        self._t0 = 0.0
        self._reason: str | None = None

    def start(self) -> None:
        """Read the machine's and the tree's CPU time: the window opens."""
        try:
            self._start = read_machine_ticks(PROC_STAT)
        except (OSError, ValueError) as err:
            self._reason = f"cannot read {PROC_STAT} ({err}), so other processes' CPU use is unknown"
        self._t0 = time.perf_counter()
        self.refresh(None, opening=True)
        if self.session_root not in self._first_seen and self._reason is None:
            self._reason = f"cannot read /proc/{self.session_root}/stat of the session root"

    def refresh(self, tree_pids: set[int] | None, opening: bool = False) -> None:
        """Note the tree's members. ``tree_pids``: the session's tree when the caller has
        just listed it (same root), else None to list it here."""
        pids = {self.session_root, *descendants(self.session_root)} if tree_pids is None else tree_pids
        first_seen = self._first_seen
        for pid in pids:
            if pid not in first_seen:
                fields = read_stat(pid)
                if fields is not None:
                    first_seen[pid] = (int(fields[STARTTIME]), tree_cpu_seconds(fields) if opening else 0.0)
        self.pids = pids

    def _own_cpu_s(self) -> float:
        """CPU seconds the tree used since the window opened."""
        used = 0.0
        for pid, (started, first_cpu) in self._first_seen.items():
            fields = read_stat(pid)
            if fields is not None and int(fields[STARTTIME]) == started:
                used += tree_cpu_seconds(fields) - first_cpu
            else:  # gone: its whole time is in its parent's cutime/cstime now
                used -= first_cpu
        return used

    def finish(self, gpus: list[NvmlGpu], nvml_reason: str | None) -> Contention:
        """Read the machine's and the tree's CPU time again: the window closes."""
        foreign_gpu, gpu_reason = self._foreign_gpu(gpus, nvml_reason) if self.gpu else (None, None)
        reasons = [gpu_reason] if gpu_reason else []
        foreign_cores = steal_pct = None
        if self._reason is None:
            try:
                end = read_machine_ticks(PROC_STAT)
            except (OSError, ValueError) as err:
                end, self._reason = None, f"cannot read {PROC_STAT} at the window's end ({err})"
            window = time.perf_counter() - self._t0
            if end is not None and self._start is not None:
                self.refresh(None)  # born since the last refresh
                busy, steal, total = (b - a for a, b in zip(self._start, end, strict=True))
                if total <= 0:
                    self._reason = f"the window ({window:.3f} s) is shorter than {PROC_STAT}'s resolution"
                else:
                    foreign_cores = max(0.0, (busy / CLK_TCK - self._own_cpu_s()) / window)
                    steal_pct = 100.0 * steal / total
        if self._reason is not None:
            reasons.insert(0, self._reason)
        return Contention(foreign_cores, steal_pct, foreign_gpu, self.gpu, "; ".join(reasons) or None)

    def _foreign_gpu(self, gpus: list[NvmlGpu], nvml_reason: str | None) -> tuple[int | None, str | None]:
        if not gpus:
            return None, f"foreign GPU processes need NVML: {nvml_reason}"
        key = "process_mem_bytes"  # the compute-process listing
        unlisted = [f"GPU {g.label}: {g.reasons[key]}" for g in gpus if key in g.reasons]
        if unlisted:
            return None, "foreign GPU processes unknown (" + "; ".join(unlisted) + ")"
        foreign = set().union(*(g.foreign_pids for g in gpus))
        if foreign and not any(g.session_listed for g in gpus):
            return None, (
                f"NVML lists {len(foreign)} compute process(es) and none of this session's process tree: "
                "its pids are likely of another PID namespace (containers), so foreign ones cannot be told apart"
            )
        return len(foreign), None


def wait_for_quiet(max_s: float, session_root: int, window_s: float = 0.5) -> dict[str, Any]:
    """Watch windows of ``window_s`` until one has no contention, for at most ``max_s``
    (``--wait-quiet``). Returns ``{"waited_s", "quiet", "foreign_cores"}`` of the last window;
    ``quiet`` is None where contention cannot be measured."""
    start = time.perf_counter()
    while True:
        probe = ContentionProbe(session_root, gpu=False)
        probe.start()
        time.sleep(window_s)
        seen = probe.finish([], None)
        waited = time.perf_counter() - start
        quiet = None if seen.contended is None else not seen.contended
        if quiet is not False or waited >= max_s:
            return {"waited_s": waited, "quiet": quiet, "foreign_cores": seen.foreign_cores}
