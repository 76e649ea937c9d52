"""Process facts read from /proc (Linux): descendants, CPU time, the RSS high-water mark.

The one place in bench/ that parses /proc/PID/stat and /proc/PID/status. A process that
exits while it is being read is skipped (``descendants``) or reported as ``None``, never as
an error. Without /proc (macOS, Windows), ``descendants`` asks psutil and the readers return
``None`` / ``False``.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
#: Unit of the CPU times in /proc/PID/stat and /proc/stat (USER_HZ), per second.
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

# Indices into stat_fields(): proc(5)'s field number minus 3.
STATE, PPID, PGRP, SESSION = 0, 1, 2, 3
UTIME, STIME, CUTIME, CSTIME, STARTTIME, RSS = 11, 12, 13, 14, 19, 21


def stat_fields(raw: bytes) -> list[bytes]:
    """Fields 3.. of a /proc/PID/stat line (state first); the command name, which may hold
    spaces and parentheses, is skipped."""
    return raw[raw.rindex(b")") + 2 :].split()


def read_stat(pid: int) -> list[bytes] | None:
    """:func:`stat_fields` of ``pid``, or None where it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return stat_fields(f.read())
    except (OSError, ValueError):
        return None


def tree_cpu_seconds(fields: list[bytes]) -> float:
    """utime + stime + cutime + cstime of parsed stat fields, in seconds: the process's own
    CPU time and that of its children it has reaped (waited for)."""
    return sum(int(fields[i]) for i in (UTIME, STIME, CUTIME, CSTIME)) / CLK_TCK


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds used by ``pid`` and its reaped children (utime+stime+cutime+cstime), or
    None where the process is gone or /proc is unreadable. Resolution: 1/CLK_TCK s."""
    fields = read_stat(pid)
    return None if fields is None else tree_cpu_seconds(fields)


class ProcStat(NamedTuple):
    """Who a process is: its state, parent, process group and session, and when it started."""

    pid: int
    state: str  # R, S, D, T (stopped), Z (zombie) ...
    ppid: int
    pgrp: int
    session: int
    starttime: int  # clock ticks after boot: with the pid, names a process uniquely


def proc_stat(pid: int) -> ProcStat | None:
    """:class:`ProcStat` of a live process, or None when it is gone."""
    f = read_stat(pid)
    if f is None:
        return None
    return ProcStat(pid, f[STATE].decode(), int(f[PPID]), int(f[PGRP]), int(f[SESSION]), int(f[STARTTIME]))


def all_stats() -> list[ProcStat]:
    """:class:`ProcStat` of every process on the machine (those that exit meanwhile left out)."""
    found = (proc_stat(int(name)) for name in os.listdir("/proc") if name.isdigit())
    return [st for st in found if st is not None]


# --------------------------------------------------------------------------------------
# Descendants


@functools.cache
def _has_children_files() -> bool:
    """Whether the kernel lists each task's children (CONFIG_PROC_CHILDREN)."""
    pid = os.getpid()
    return os.path.exists(f"/proc/{pid}/task/{pid}/children")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...); [] if ``pid`` is gone.

    On Linux this walks /proc/PID/task/TID/children down from ``pid``: a few reads per
    process of the tree, whatever runs on the rest of the machine. Without those files it
    scans /proc/*/stat for parent pids; without /proc it asks psutil. Processes that exit
    meanwhile are skipped.
    """
    if _has_children_files():
        return _walk_children_files(pid)
    if os.path.isdir("/proc/self"):
        return _scan_parents(pid)
    return _psutil_descendants(pid)


def _walk_children_files(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tids = os.listdir(f"/proc/{parent}/task")
        except OSError:  # gone
            continue
        for tid in tids:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:  # that thread or process is gone
                continue
            found.extend(kids)
            todo.extend(kids)
    return found


def _scan_parents(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = read_stat(int(name))
            if fields is not None:
                children.setdefault(int(fields[PPID]), []).append(int(name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _psutil_descendants(pid: int) -> list[int]:
    import psutil

    try:
        return [p.pid for p in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


# --------------------------------------------------------------------------------------
# RSS high-water mark


def _proc_path(pid: int | None, name: str) -> str:
    return f"/proc/self/{name}" if pid is None else f"/proc/{pid}/{name}"


def reset_peak_rss(pid: int | None = None) -> bool:
    """Reset the RSS high-water mark (VmHWM) of ``pid`` (None: this process) to its current
    RSS, by writing "5" to /proc/PID/clear_refs; False where unsupported or not permitted.

    VmHWM and ``ru_maxrss`` are lifetime peaks; after this reset, :func:`peak_rss` is the
    peak since the reset, spikes between samples included. It also resets what
    ``getrusage``/``time -v`` report for that process.
    """
    try:
        with open(_proc_path(pid, "clear_refs"), "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss(pid: int | None = None) -> int | None:
    """The RSS high-water mark (VmHWM) of ``pid`` (None: this process) in bytes, or None
    where unreadable."""
    try:
        with open(_proc_path(pid, "status"), "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None
