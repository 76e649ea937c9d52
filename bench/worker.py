"""The worker process of one case (one rank of it), started by the supervisor.

It leaves the supervisor's session (``setsid``: the supervisor kills its whole process group),
names itself ``archbench-case`` (``archbench-probe`` for a peak probe), writes its output to
the case's log file, joins the case's process group when the case has several ranks, runs the
pipeline and sends back, over its pipe, the name of each stage as it begins and finally the
Outcome. Importing this module is
what the fork server preloads: torch, the workloads and the pipeline, plus the modules named
in ``ARCHBENCH_PRELOAD`` (DeepSpeed, for example), each imported if it can be.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import sys
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

import torch

from .distributed import Ranks, init_case_group
from .pipeline import CaseRequest, Outcome, request_not_run, run_case

CASE_PROCESS = b"archbench-case"  # what ``ps``/``top`` show for a case's worker
PROBE_PROCESS = b"archbench-probe"
PRELOAD_ENV = "ARCHBENCH_PRELOAD"
PR_SET_NAME = 15

for _module in filter(None, os.environ.get(PRELOAD_ENV, "").split(",")):
    try:
        importlib.import_module(_module)
    except Exception:  # a broken optional module: the case that needs it says why
        pass


def is_oom(exc: BaseException) -> bool:
    """An allocator refusal: torch's OutOfMemoryError, a MemoryError, or the CPU allocator's
    "can't allocate memory"."""
    text = str(exc)
    return (
        isinstance(exc, (torch.OutOfMemoryError, MemoryError))
        or "out of memory" in text
        or "can't allocate memory" in text
    )


def _memory_now() -> str:
    """This process's RSS and the machine's available memory, for a reason without a size."""
    facts = {}
    for path, key in (("/proc/self/status", "VmRSS:"), ("/proc/meminfo", "MemAvailable:")):
        try:
            with open(path, encoding="ascii") as f:
                line = next((line for line in f if line.startswith(key)), "")
            facts[key.rstrip(":")] = f"{int(line.split()[1]) // 1024} MiB"
        except (OSError, ValueError, IndexError):
            pass
    return ", ".join(f"{k} {v}" for k, v in facts.items())


def failure_outcome(req: CaseRequest, exc: BaseException, stage: str) -> Outcome:
    """An exception of the case as its Outcome: ``oom`` for an allocator refusal (with the size
    asked for where the message has it), else ``error``; the stage and where it was raised."""
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {Path(frame[0].filename).name}:{frame[0].lineno}" if frame else ""
    text = " ".join(str(exc).split())
    if is_oom(exc):
        if not text:  # MemoryError says nothing: say what we know
            text = f"the allocator refused a request of unknown size ({_memory_now()})"
        reason = f"{type(exc).__name__}: {text} (stage {stage}{where})"
        return Outcome("oom", request_not_run(req, "oom", reason, stage))
    reason = f"{type(exc).__name__}: {text or 'no message'} (stage {stage}{where})"
    return Outcome("error", request_not_run(req, "error", reason, stage))


def _name_process(name: bytes) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _log_to(path: Path) -> None:
    """Everything this process (and what it starts) prints goes to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class Stages:
    """Announces each stage (in the log, and to the supervisor) and remembers the current one."""

    def __init__(self, conn: Connection, case_id: str):
        self.conn, self.case_id, self.current = conn, case_id, "starting"
        self.started = time.monotonic()

    def __call__(self, name: str) -> None:
        self.current = name
        print(f"archbench: {self.case_id}: {name} (at {time.monotonic() - self.started:.2f}s)", flush=True)
        self.conn.send(("stage", name))


def start_worker(log: Path) -> None:
    """A worker's own process group, name and log."""
    os.setsid()
    _name_process(CASE_PROCESS)
    _log_to(log)


def main(conn: Connection, req: CaseRequest, rank: int, port: int, log: Path) -> None:
    """Entry of the worker process: run rank ``rank`` of the case and send back its Outcome."""
    start_worker(log)
    stage = Stages(conn, req.id)

    ranks = Ranks()
    try:
        s = req.settings
        if s.world_size > 1:
            stage("joining ranks")
            ranks = init_case_group(rank, s.world_size, port, s.device, s.timeout_s)
        outcome = run_case(req, ranks, stage)
    except Exception as e:
        traceback.print_exc()
        outcome = failure_outcome(req, e, stage.current)
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send(("outcome", outcome))
    ranks.finish()
    conn.close()


def probe_main(conn: Connection, device: str, dtype: str, log: Path) -> None:
    """Entry of a probe process: the matmul peak of ``device`` and ``dtype`` (TFLOP/s)."""
    from workloads.probe import DTYPES, matmul_peak_tflops
    from workloads.registry import parse_device

    os.setsid()
    _name_process(PROBE_PROCESS)
    _log_to(log)
    conn.send(("peak", matmul_peak_tflops(parse_device(device), DTYPES[dtype])))
    conn.close()
