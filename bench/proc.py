"""Process utilities shared by the supervisor, the telemetry sampler and the ranks: the
descendants of a process and what /proc says of one."""

from __future__ import annotations

import os
from typing import NamedTuple


class ProcStat(NamedTuple):
    pid: int
    state: str  # R, S, D, T (stopped), Z (zombie) ...
    ppid: int
    pgrp: int
    session: int
    starttime: int  # clock ticks after boot: with the pid, names a process uniquely


def proc_stat(pid: int) -> ProcStat | None:
    """/proc/PID/stat of a live process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return ProcStat(pid, fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19]))


def all_stats() -> list[ProcStat]:
    stats = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                stats.append(st)
    return stats


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren ...); processes that vanish
    while /proc is read are left out."""
    children: dict[int, list[int]] = {}
    for st in all_stats():
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out
