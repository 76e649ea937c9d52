"""Tests of bench.proc with real processes: descendants, CPU seconds, the RSS high-water mark."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import proc

MB = 2**20

# A child that starts a grandchild, prints both pids, and waits for stdin to close.
_PARENT = """
import subprocess, sys
g = subprocess.Popen([sys.executable, '-c', 'import sys; sys.stdin.read()'], stdin=subprocess.PIPE)
print(g.pid, flush=True)
sys.stdin.read()
g.stdin.close()
g.wait()
"""
_SPIN = "while True: pass"
# Burns ``sys.argv[1]`` CPU seconds (not wall seconds), whatever else runs on the machine.
_BURN_CPU = "import sys, time\nwhile time.process_time() < float(sys.argv[1]): pass"

IMPLEMENTATIONS = {
    "children-files": proc._walk_children_files,
    "scan": proc._scan_parents,
    "psutil": proc._psutil_descendants,
}

needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="no /proc on this system")


@pytest.fixture
def family() -> Iterator[tuple[subprocess.Popen, int]]:
    """(child, grandchild pid), both waiting."""
    child = subprocess.Popen([sys.executable, "-c", _PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdin is not None
    grandchild = int(child.stdout.readline())
    yield child, grandchild
    if child.poll() is None:
        child.stdin.close()
        child.wait(timeout=10)


@needs_proc
@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_descendants_finds_child_and_grandchild(family, name: str) -> None:
    child, grandchild = family
    find = IMPLEMENTATIONS[name]
    assert {child.pid, grandchild} <= set(find(os.getpid()))
    assert find(child.pid) == [grandchild]
    assert find(grandchild) == []


@needs_proc
def test_descendants_uses_the_children_files_where_the_kernel_has_them(family) -> None:
    child, grandchild = family
    if not proc._has_children_files():
        pytest.skip("kernel without CONFIG_PROC_CHILDREN")
    assert sorted(proc.descendants(os.getpid())) == sorted(proc._walk_children_files(os.getpid()))
    assert {child.pid, grandchild} <= set(proc.descendants(os.getpid()))


@needs_proc
@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_vanished_processes_are_tolerated(family, name: str) -> None:
    child, grandchild = family
    find = IMPLEMENTATIONS[name]
    child.kill()
    child.wait(timeout=10)
    # the grandchild was reparented (to init or a subreaper): no longer ours
    assert child.pid not in find(os.getpid()) and grandchild not in find(os.getpid())
    assert find(child.pid) == []  # gone
    assert proc.cpu_seconds(child.pid) is None and proc.peak_rss(child.pid) is None
    assert proc.reset_peak_rss(child.pid) is False


@needs_proc
def test_descendants_while_processes_come_and_go() -> None:
    """A shell that keeps starting short-lived processes: its tree changes during each read."""
    churn = subprocess.Popen(["sh", "-c", "while :; do /bin/true; done"])
    try:
        end = time.perf_counter() + 0.6
        while time.perf_counter() < end:
            for find in IMPLEMENTATIONS.values():
                assert all(isinstance(pid, int) for pid in find(churn.pid))
    finally:
        churn.kill()
        churn.wait(timeout=10)


def _rss_hwm_resettable() -> bool:
    return proc.reset_peak_rss()


@needs_proc
@pytest.mark.skipif(not _rss_hwm_resettable(), reason="/proc/self/clear_refs is not writable")
@pytest.mark.parametrize("pid", [None, os.getpid()], ids=["self", "pid"])
def test_reset_then_peak_follows_this_window(pid: int | None) -> None:
    block = b"1" * (200 * MB)  # touched pages: the lifetime peak now includes them
    del block
    lifetime_peak = proc.peak_rss(pid)
    assert proc.reset_peak_rss(pid) is True
    after_reset = proc.peak_rss(pid)
    assert after_reset is not None and lifetime_peak is not None
    assert after_reset <= lifetime_peak - 150 * MB  # the reset dropped the old peak
    block = b"1" * (100 * MB)
    risen = proc.peak_rss(pid) - after_reset
    del block
    assert risen >= 100 * MB, risen / MB


@needs_proc
def test_cpu_seconds_of_a_busy_child_grows() -> None:
    child = subprocess.Popen([sys.executable, "-c", _SPIN])
    try:
        first = proc.cpu_seconds(child.pid)
        assert first is not None
        deadline = time.perf_counter() + 5.0  # a shared machine may give it little CPU
        grown = 0.0
        while grown < 0.2 and time.perf_counter() < deadline:
            time.sleep(0.05)
            grown = proc.cpu_seconds(child.pid) - first
        assert grown >= 0.2
    finally:
        child.kill()
        child.wait(timeout=10)


@needs_proc
def test_cpu_seconds_include_reaped_children() -> None:
    code = f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {_BURN_CPU!r}, '0.45'])\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        deadline = time.perf_counter() + 10.0
        while (proc.cpu_seconds(child.pid) or 0.0) < 0.4 and time.perf_counter() < deadline:
            time.sleep(0.05)
        assert proc.descendants(child.pid) == []  # the burner is gone: reaped
        assert proc.cpu_seconds(child.pid) >= 0.4  # its 0.45 s are in the child's cutime/cstime
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_stat_fields_skip_a_command_name_with_spaces_and_parentheses() -> None:
    raw = b"42 (a b) (c)) S 1 42 42 0 -1 4194304 100 0 0 0 7 3 2 1 20 0 1 0 555 1000 25"
    fields = proc.stat_fields(raw)
    assert fields[0] == b"S" and int(fields[proc.PPID]) == 1
    assert int(fields[proc.STARTTIME]) == 555 and int(fields[proc.RSS]) == 25
    assert proc.tree_cpu_seconds(fields) == (7 + 3 + 2 + 1) / proc.CLK_TCK
