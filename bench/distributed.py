"""Multi-rank ``pytest bench`` runs: every rank runs the same pytest session (SPMD).

Ways in (``--world-size N`` on every rank):

- ``pytest bench --world-size N``, no launcher: this process is rank 0 and starts ranks
  1..N-1 on this machine as ``python -m pytest <the same arguments>``, each with its output in
  ``<results-dir>/rank<R>-<pid>.log`` (a temporary directory without ``--results-dir``).
- ``torchrun --nproc-per-node K [--nnodes M --node-rank I --master-addr HOST --master-port P]
  -m pytest bench --world-size K*M ...`` on each machine, or the DeepSpeed launcher
  ``deepspeed [--hostfile H] --num_gpus K --module pytest bench --world-size K*M ...`` (its
  ``--local_rank`` argument is accepted and ignored): the launcher's ``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are used.

The process group is gloo on CPUs (with ``DS_ACCELERATOR=cpu`` for DeepSpeed) and NCCL on
GPUs, where rank R uses ``cuda:LOCAL_RANK``. Only rank 0 writes results, JSON and tables.

All ranks collect the same cases in the same order. Every decision that could differ between
ranks is agreed (``agree``, ``broadcast``), so they skip together; each timed step ends in a
barrier so the ranks step in lockstep, and the reported step time of a round is the slowest
rank's. Each rank measures its own memory; ``per_rank_info`` gathers it.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .proc import peak_rss, reset_peak_rss

LAUNCHER_ENV = ("RANK", "WORLD_SIZE")


class LaunchError(ValueError):
    """The launcher's environment and the options disagree; the message says how to fix it."""


def launched_rank() -> tuple[int, int, int, int] | None:
    """(rank, world size, local rank, local world size) set by a launcher (torchrun, the
    DeepSpeed launcher, or rank 0 of a self-spawned run), or None."""
    env = os.environ
    if not all(k in env for k in LAUNCHER_ENV):
        return None
    world_size = int(env["WORLD_SIZE"])
    return (
        int(env["RANK"]),
        world_size,
        int(env.get("LOCAL_RANK", env["RANK"])),
        int(env.get("LOCAL_WORLD_SIZE", world_size)),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a spawned rank gets SIGTERM when rank 0 dies, instead of waiting in a collective."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Ranks:
    """This process's place among the ranks, and the collectives the harness needs.

    With ``world_size == 1`` every method is a no-op that returns its local value.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    spawned: bool = False  # rank 0 started the other ranks itself
    children: list[tuple[int, subprocess.Popen, Path]] = dataclasses.field(default_factory=list)
    timeout_s: float = 1800.0
    _rss_reset: bool = False
    _done: threading.Event = dataclasses.field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives ------------------------------------------------------------------

    def gather(self, obj) -> list:
        if not self.active:
            return [obj]
        out: list = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, reason: str | None) -> str | None:
        """Each rank's reason not to go on (None: fine) -> the first one, the same on all ranks."""
        for r, why in enumerate(self.gather(reason)):
            if why is not None:
                return why if r == 0 or not self.active else f"rank {r}: {why}"
        return None

    def max(self, value: float) -> float:
        return max(self.gather(value))

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    # -- timing -----------------------------------------------------------------------

    def lockstep(self, step: Callable[[], None]) -> tuple[Callable[[], None], list[float]]:
        """Wrap the timed step: each call ends in a barrier, so rank 0's timed call lasts until
        the slowest rank has finished the step and the ranks start the next one together.
        Also returns this rank's own step times (to the end of its step, before the barrier)
        and resets this rank's RSS high-water mark: the timed window starts here."""
        if not self.active:
            return step, []
        own: list[float] = []

        def synced() -> None:
            t0 = time.perf_counter()
            step()
            own.append(time.perf_counter() - t0)
            torch.distributed.barrier()  # lockstep: wait for the slowest rank

        self._rss_reset = reset_peak_rss()
        return synced, own

    def slowest_per_round(self, own_times: Sequence[float]) -> list[float]:
        """The slowest rank's time of each round."""
        per_rank = self.gather(list(own_times))
        if len({len(t) for t in per_rank}) != 1:
            raise RuntimeError(f"ranks timed different numbers of rounds: {[len(t) for t in per_rank]}")
        return [max(times) for times in zip(*per_rank, strict=True)]

    def per_rank_info(self, info: dict, device: torch.device, own_times: Sequence[float]) -> dict:
        """Every rank's peak memory, model state and step time; the usual keys get the largest.

        CPU peak memory is each rank's own RSS high-water mark over the timed window (the
        sampler's process tree on rank 0 would include the ranks it spawned); GPU peak memory
        is each rank's allocator peak on its own device.
        """
        if device.type == "cuda":
            mem, source, why = info.get("peak_mem_bytes"), info.get("mem_source"), None
        else:
            mem, source = (peak_rss() if self._rss_reset else None), "rss-rank"
            why = None if mem is not None else "this rank's RSS high-water mark is not readable here"
        mine = {
            "peak_mem_bytes": mem,
            "why": why,
            "model_state_bytes": info.get("model_state_bytes"),
            "model_state_breakdown": info.get("model_state_breakdown"),
            "step_time_s": statistics.median(own_times) if own_times else None,
        }
        ranks = self.gather(mine)
        out: dict = {"absent": {}}
        for key in ("peak_mem_bytes", "model_state_bytes", "step_time_s"):
            values = [r[key] for r in ranks]
            out[f"{key}_per_rank"] = values
            if key != "step_time_s":
                known = [v for v in values if v is not None]
                out[key] = max(known) if len(known) == len(values) else None
        if "model_state_breakdown" in info and out["model_state_bytes"] is not None:
            # the breakdown of the rank that holds the most
            largest = out["model_state_bytes_per_rank"].index(out["model_state_bytes"])
            out["model_state_breakdown"] = ranks[largest]["model_state_breakdown"]
        if out["peak_mem_bytes"] is None:
            reasons = {r["why"] for r in ranks if r["why"]} or {"memory was not measured on every rank"}
            out["absent"]["peak_mem_bytes"] = "; ".join(sorted(reasons))
        out["mem_source"] = source
        return out

    # -- end ----------------------------------------------------------------------------

    def watch_children(self, poll_s: float = 1.0, grace_s: float = 60.0) -> None:
        """Rank 0 of a self-spawned run: if a rank it started dies before the session ends,
        the other ranks would wait in a collective until the timeout; instead print that
        rank's log and exit (the results streamed so far stay on disk)."""

        exited: dict[int, float] = {}

        def watch() -> None:
            while not self._done.wait(poll_s):
                for rank, proc, log in self.children:
                    rc = proc.poll()
                    if rc is None:
                        continue
                    exited.setdefault(rank, time.monotonic())
                    # exit code 0 or 1 (tests failed) is a session that ended: rank 0 ends with it
                    crashed = rc not in (0, 1) or time.monotonic() - exited[rank] > grace_s
                    if crashed and not self._done.is_set():
                        sys.stderr.write(f"\narchbench: rank {rank} exited with {rc} mid-run; its log {log}:\n")
                        sys.stderr.write(log_tail(log) + "\n")
                        sys.stderr.flush()
                        os._exit(1)

        threading.Thread(target=watch, name="archbench-ranks", daemon=True).start()

    def finish(self, wait_s: float = 120.0) -> list[tuple[int, int | None, Path]]:
        """Leave the process group; rank 0 waits for the ranks it spawned.
        Returns (rank, exit code or None if it had to be killed, log path) of each."""
        if self.active and torch.distributed.is_initialized():
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # a broken group at exit: the exit codes below tell the story
                pass
        self._done.set()
        results = []
        deadline = time.monotonic() + wait_s
        for rank, proc, log in self.children:
            try:
                rc: int | None = proc.wait(timeout=max(deadline - time.monotonic(), 1.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = None
            results.append((rank, rc, log))
        self.children.clear()
        return results


def setup(
    world_size: int,
    device: str,
    args: Sequence[str],
    cwd: str | os.PathLike,
    log_dir: str | os.PathLike | None,
    timeout_s: float,
) -> Ranks:
    """Join (or, without a launcher, start) the ranks and initialize the process group.

    Raises LaunchError when the launcher's ``WORLD_SIZE`` and ``--world-size`` disagree.
    """
    launched = launched_rank()
    if launched is None and world_size == 1:
        return Ranks()
    if launched is not None:
        rank, env_world_size, local_rank, local_world_size = launched
        if env_world_size != world_size:
            raise LaunchError(
                f"--world-size {world_size}, but the launcher started WORLD_SIZE={env_world_size} ranks; "
                f"pass --world-size {env_world_size}"
            )
        if world_size == 1:
            return Ranks()
        ranks = Ranks(rank, world_size, local_rank, local_world_size, spawned=bool(os.environ.get("ARCHBENCH_SPAWNED")))
    else:
        if device.startswith("cuda") and torch.cuda.device_count() < world_size:
            raise LaunchError(
                f"--world-size {world_size} on {device}: this machine has {torch.cuda.device_count()} GPUs; "
                "start one rank per GPU on each machine with torchrun (see bench/distributed.py)"
            )
        ranks = _spawn(world_size, args, cwd, log_dir)
        ranks.watch_children()
    ranks.timeout_s = timeout_s
    is_cuda = device.startswith("cuda")
    if not is_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if "OMP_NUM_THREADS" not in os.environ or ranks.spawned:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_world_size))
    else:
        torch.cuda.set_device(ranks.local_rank)
    torch.distributed.init_process_group(
        "nccl" if is_cuda else "gloo",
        rank=ranks.rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return ranks


def _spawn(world_size: int, args: Sequence[str], cwd, log_dir) -> Ranks:
    """Become rank 0 of ``world_size`` local ranks; start the others as pytest subprocesses."""
    threads = max(1, (os.cpu_count() or 1) // world_size)
    common = {
        "WORLD_SIZE": str(world_size),
        "LOCAL_WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "ARCHBENCH_SPAWNED": "1",
    }
    os.environ.update(common | {"RANK": "0", "LOCAL_RANK": "0"})
    log_root = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="archbench-ranks-"))
    log_root.mkdir(parents=True, exist_ok=True)
    ranks = Ranks(0, world_size, 0, world_size, spawned=True)
    env_base = dict(os.environ)
    env_base.setdefault("OMP_NUM_THREADS", str(threads))
    for r in range(1, world_size):
        log = log_root / f"rank{r}-{os.getpid()}.log"
        env = env_base | common | {"RANK": str(r), "LOCAL_RANK": str(r)}
        with open(log, "w", encoding="utf-8") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        ranks.children.append((r, proc, log))
    return ranks


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(cannot read {path}: {e})"
