"""The process tree: summed RSS and CPU time of a root process and all its descendants."""

from __future__ import annotations

import os
import time

from ..proc import CLK_TCK, PAGE_SIZE, RSS, STIME, UTIME, descendants, stat_fields

#: How often the list of descendant processes is refreshed.
CHILDREN_REFRESH_S = 0.5


def _read_statm_rss(fd: int) -> int:
    return int(os.pread(fd, 128, 0).split(None, 2)[1]) * PAGE_SIZE


def _read_stat(fd: int) -> tuple[int, float]:
    """(rss bytes, user+system CPU seconds) from an open /proc/PID/stat."""
    fields = stat_fields(os.pread(fd, 1024, 0))
    return int(fields[RSS]) * PAGE_SIZE, (int(fields[UTIME]) + int(fields[STIME])) / CLK_TCK


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


class ProcessTree:
    """Samples the summed RSS and CPU time of ``root_pid`` and all its descendants.

    On Linux each reading is one ``pread`` per process on an already-open /proc file, and
    descendants are found by :func:`bench.proc.descendants` (no scan of every process on the
    machine); elsewhere psutil does both. The descendant list is refreshed at most every
    :data:`CHILDREN_REFRESH_S`.
    """

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._proc = os.path.exists(f"/proc/{root_pid}/stat")
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

    def refresh(self, now: float) -> None:
        """Pick up new descendants and drop exited ones; next due CHILDREN_REFRESH_S on."""
        self.next_refresh = now + CHILDREN_REFRESH_S
        current = set(descendants(self.root_pid))
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
