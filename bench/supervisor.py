"""Every case in worker processes that the pytest process supervises.

Workers come from a fork server (``multiprocessing``'s ``forkserver``) that imported torch,
the workloads and the pipeline once (``bench.worker``), so a fresh process per case costs tens
of milliseconds, not the seconds of importing torch; a case that changes global state (torchao,
inductor settings) cannot leak it into the next. A case with ``--world-size N`` gets N workers
and a process group of its own.

The supervisor watches each case with a wall-clock watchdog (``--case-timeout``: build,
warm-up, timing and accuracy together) and the workers' pipes and exit codes:

- a case still running at its deadline is killed with all its processes: ``timeout``, with the
  stage it was in (and whether it had been stopped);
- a worker that dies is ``oom`` where it was SIGKILLed while the kernel's OOM-kill counter rose,
  otherwise ``error`` with the signal or exit code and the last lines of its log;
- a worker's own exception arrives as its Outcome (``error``, or ``oom`` for an allocator refusal).

No stray processes: the workers are process-group leaders, the supervisor tracks their
descendants while they run and becomes the reaper of the ones orphaned, and kills all of them
when the case ends; ``close`` stops the fork server.
"""

from __future__ import annotations

import ctypes
import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reports.schema import FAILED_STATUSES
from workloads.zero import remove_unmapped_shm_buffers

from .distributed import CASE_ADDR, free_port
from .pipeline import CaseRequest, Outcome, request_not_run, run_case
from .proc import all_stats, descendants, proc_stat

PR_SET_CHILD_SUBREAPER = 36
TRACK_INTERVAL_S = 0.5  # how often a running case's process tree is recorded
EXIT_GRACE_S = 10.0  # how long the other ranks may take to exit once rank 0 has reported
LOG_TAIL_LINES = 5
PROBE_TIMEOUT_S = 300.0
# What the fork server imports once, so that each case's worker starts with it. torch._dynamo
# (with sympy and inductor): building a case imports it (the optimizers' step wrappers), 2.2 s
# of every worker on the 2-core VM without it, 7 ms with it.
BASE_PRELOAD = ("torch", "torch._dynamo", "workloads", "bench.pipeline", "sklearn.datasets", "sklearn.model_selection")


def set_subreaper(on: bool) -> bool:
    """Linux: orphaned descendants are re-parented to this process instead of init."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def oom_kill_count() -> int:
    """The kernel's OOM-kill count: this machine's (/proc/vmstat) plus this cgroup's."""
    total = 0
    paths = ["/proc/vmstat"]
    try:
        with open("/proc/self/cgroup", encoding="ascii") as f:
            rel = next((line.split(":", 2)[2].strip() for line in f if line.startswith("0::")), None)
        if rel:
            paths.append(f"/sys/fs/cgroup{rel}/memory.events")
    except OSError:
        pass
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                total += sum(int(line.split()[1]) for line in f if line.startswith("oom_kill "))
        except (OSError, ValueError, IndexError):
            pass
    return total


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e.strerror})"
    tail = [line.strip() for line in text if line.strip()][-lines:]
    return " | ".join(tail) if tail else "(empty)"


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


@dataclasses.dataclass
class Worker:
    """One worker process of a running case."""

    rank: int
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    log: Path
    stage: str = "starting"
    outcome: Outcome | None = None
    exited: bool = False
    tracked: dict[int, int] = dataclasses.field(default_factory=dict)  # pid -> starttime of its tree
    messages: list[tuple[str, object]] = dataclasses.field(default_factory=list)  # other kinds, in order
    starttime: int | None = None  # the worker's own, in clock ticks after boot

    def __post_init__(self) -> None:
        st = proc_stat(self.process.pid)
        self.starttime = st.starttime if st is not None else None

    def receive(self, on_stage: Callable[[str], None] | None) -> None:
        """Read what the worker sent; a closed pipe leaves ``outcome`` unset."""
        try:
            while self.conn.poll():
                kind, value = self.conn.recv()
                if kind == "stage":
                    self.stage = value
                    if on_stage is not None and self.rank == 0:
                        on_stage(value)
                elif kind == "outcome":
                    self.outcome = value
                else:
                    self.messages.append((kind, value))
        except (EOFError, OSError):
            self.exited = self.exited or not self.process.is_alive()

    def track(self) -> None:
        for pid in descendants(self.process.pid):
            st = proc_stat(pid)
            if st is not None:
                self.tracked.setdefault(pid, st.starttime)


class Supervisor:
    """Runs cases in worker processes; ``run(request) -> Outcome``; ``close()`` at the end."""

    def __init__(
        self, log_dir: Path | None, preload: tuple[str, ...] = (), on_stage: Callable[[str], None] | None = None
    ):
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="archbench-logs-"))
        self.on_stage = on_stage
        self.ctx = multiprocessing.get_context("forkserver")
        os.environ["ARCHBENCH_PRELOAD"] = ",".join(preload)
        self.ctx.set_forkserver_preload([*BASE_PRELOAD, "bench.worker"])
        self.subreaper = set_subreaper(True)

    def start(self) -> None:
        """Start the fork server now: its imports run while the session collects its cases."""
        from multiprocessing import forkserver

        forkserver.ensure_running()

    # -- one case --------------------------------------------------------------------------

    def probe(self, device: str, dtype: str) -> float:
        """The matmul peak of ``device`` and ``dtype`` (TFLOP/s), measured in a worker process."""
        from . import worker

        parent, child = self.ctx.Pipe(duplex=False)
        log = self.log_dir / f"probe-{device.replace(':', '')}-{dtype}.log"
        proc = self.ctx.Process(target=worker.probe_main, args=(child, device, dtype, log), name="archbench probe")
        proc.start()
        child.close()
        w = Worker(0, proc, parent, log)
        try:
            if not parent.poll(PROBE_TIMEOUT_S):
                raise RuntimeError(f"the matmul probe of {device} {dtype} took over {PROBE_TIMEOUT_S:g}s (log {log})")
            kind, peak = parent.recv()
            return float(peak)
        except (EOFError, OSError):
            proc.join(5)
            raise RuntimeError(
                f"the matmul probe of {device} {dtype} died (exit code {proc.exitcode}); log {log}: {log_tail(log)}"
            ) from None
        finally:
            self.end([w])

    def spawn(self, target, req: CaseRequest, log: Path, *args, duplex: bool = False, rank: int = 0) -> Worker:
        """A worker process running ``target(conn, req, *args, log)``."""
        parent, child = self.ctx.Pipe(duplex=duplex)
        proc = self.ctx.Process(target=target, args=(child, req, *args, log), name=f"archbench {req.id}")
        proc.start()
        child.close()
        return Worker(rank, proc, parent, log)

    def run(self, req: CaseRequest) -> Outcome:
        from . import worker

        ws = req.settings.world_size
        port = free_port() if ws > 1 else 0
        oom_before = oom_kill_count()
        workers = []
        req = dataclasses.replace(req, deadline=time.monotonic() + req.settings.timeout_s)
        try:
            for rank in range(ws):
                log = self.log_dir / (f"{req.id}.log" if ws == 1 else f"{req.id}.rank{rank}.log")
                workers.append(self.spawn(worker.main, req, log, rank, port, rank=rank))
            return self._watch(req, workers, req.deadline, oom_before)
        finally:
            self.end(workers)
            if ws > 1:  # the DeepSpeed buffers of ranks killed before they unlinked them (workloads.zero)
                remove_unmapped_shm_buffers(CASE_ADDR, port)

    def run_group(self, reqs: list[CaseRequest]) -> dict[str, Outcome]:
        """The cases of ``reqs`` (one family, size and phase), timed side by side in turns."""
        from .side_by_side import run_group

        return run_group(self, reqs)

    def _watch(self, req: CaseRequest, workers: list[Worker], deadline: float, oom_before: int) -> Outcome:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._timeout(req, workers)
            live = [w for w in workers if not w.exited]
            waiting = [w.conn for w in live if w.outcome is None] + [w.process.sentinel for w in live]
            multiprocessing.connection.wait(waiting, timeout=min(left, TRACK_INTERVAL_S))
            for w in workers:
                w.receive(self.on_stage)
                w.exited = w.exited or not w.process.is_alive()
                w.track()
            done = self._decide(req, workers, oom_before)
            if done is not None:
                return done

    def _decide(self, req: CaseRequest, workers: list[Worker], oom_before: int) -> Outcome | None:
        """The case's Outcome once it is known: rank 0's; another rank's failure; a death."""
        first = workers[0]
        if first.outcome is not None:
            return first.outcome
        for w in workers[1:]:
            if w.outcome is not None and w.outcome.status in FAILED_STATUSES:
                reason = f"rank {w.rank}: {w.outcome.reason}"
                return Outcome(w.outcome.status, request_not_run(req, w.outcome.status, reason, w.stage))
        for w in workers:
            if w.exited and w.outcome is None:
                w.receive(self.on_stage)  # what it sent before it died
                if w.outcome is None:
                    return self.death(req, w, oom_before)
        return None

    def death(self, req: CaseRequest, w: Worker, oom_before: int) -> Outcome:
        code = w.process.exitcode
        who = f"rank {w.rank} worker" if req.settings.world_size > 1 else "worker"
        tail = f"log {w.log}: {log_tail(w.log)}"
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            kills = oom_kill_count() - oom_before
            if -code == signal.SIGKILL and kills > 0:
                reason = f"{who} killed by the kernel's OOM killer (SIGKILL; {kills} OOM kill(s) during the case) in stage {w.stage}; {tail}"  # noqa: E501
                return Outcome("oom", request_not_run(req, "oom", reason, w.stage))
            reason = f"{who} killed by {sig} in stage {w.stage}; {tail}"
        elif code:
            reason = f"{who} exited with code {code} in stage {w.stage}; {tail}"
        else:
            reason = f"{who} exited without a result in stage {w.stage}; {tail}"
        return Outcome("error", request_not_run(req, "error", reason, w.stage))

    def _timeout(self, req: CaseRequest, workers: list[Worker]) -> Outcome:
        first = workers[0]
        stopped = [w.rank for w in workers if (st := proc_stat(w.process.pid)) is not None and st.state in "Tt"]
        note = ""
        if stopped:
            note = " (the worker had been stopped: SIGSTOP)" if len(workers) == 1 else f" (ranks {stopped} stopped)"
        reason = (
            f"still running after --case-timeout {req.settings.timeout_s:g}s, in stage {first.stage}{note}; "
            f"killed with all its processes"
        )
        return Outcome("timeout", request_not_run(req, "timeout", reason, first.stage))

    # -- cleaning up ---------------------------------------------------------------------------

    def end(self, workers: list[Worker]) -> None:
        """Let the workers exit (the other ranks briefly), then kill whatever is left of their trees."""
        deadline = time.monotonic() + EXIT_GRACE_S
        for w in workers:
            if w.outcome is not None:
                w.process.join(max(deadline - time.monotonic(), 0))
        for w in workers:
            self._kill_tree(w)
            w.process.join(5)
            w.conn.close()
        self._reap_orphans(workers)

    def _kill_tree(self, w: Worker) -> None:
        pid = w.process.pid
        w.track()
        try:
            os.killpg(pid, signal.SIGKILL)  # the worker leads its own process group
        except OSError:
            pass
        kill(pid)
        for child, started in w.tracked.items():
            st = proc_stat(child)
            if st is not None and st.starttime == started:
                kill(child)

    def _reap_orphans(self, workers: list[Worker]) -> None:
        """Processes orphaned during the case were re-parented to this process (the subreaper):
        every child of ours that started after the case's first worker and is not the fork
        server is the case's. Kill and reap them."""
        me, server = os.getpid(), _forkserver_pid()
        first = min((w.starttime for w in workers if w.starttime is not None), default=None)
        tracked = {pid for w in workers for pid in w.tracked}
        sessions = {w.process.pid for w in workers}
        for st in all_stats():
            if st.ppid != me or st.pid == server:
                continue
            if st.session in sessions or st.pid in tracked or (first is not None and st.starttime >= first):
                kill(st.pid)
                try:
                    os.waitpid(st.pid, 0)
                except ChildProcessError:
                    pass

    def close(self) -> None:
        """Stop the fork server; nothing this supervisor started stays alive."""
        from multiprocessing import forkserver

        server = forkserver._forkserver  # noqa: SLF001 (the stdlib has no public stop)
        stop, pid = getattr(server, "_stop", None), _forkserver_pid()
        if pid:  # it holds nothing to save, and a clean exit of its preloaded torch takes ~1.3 s
            kill(pid)
        if stop is not None:
            stop()  # closes its pipes and reaps it
        if self.subreaper:
            set_subreaper(False)


def _forkserver_pid() -> int | None:
    from multiprocessing import forkserver

    return getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001


class InProcess:
    """Runs cases in this process: under an external launcher (every rank runs the session,
    SPMD) or with ``--no-isolation`` (for a debugger). No watchdog: a hang or a crash here is
    the session's."""

    def __init__(self, ranks):
        self.ranks = ranks

    def start(self) -> None:
        pass

    def probe(self, device: str, dtype: str) -> float:
        """The matmul peak of ``device`` and ``dtype``: rank 0's on every rank."""
        from workloads.probe import DTYPES, matmul_peak_tflops
        from workloads.registry import parse_device

        return self.ranks.broadcast(matmul_peak_tflops(parse_device(device), DTYPES[dtype]))

    def run(self, req: CaseRequest) -> Outcome:
        from .worker import failure_outcome

        current = "starting"

        def stage(name: str) -> None:
            nonlocal current
            current = name

        try:
            return run_case(req, self.ranks, stage)
        except Exception as e:
            return failure_outcome(req, e, current)

    def close(self) -> None:
        pass
