"""Multi-rank cases: the collectives the harness needs, and the two ways ranks come about.

- ``pytest bench --world-size N``, no launcher: for each case the supervisor starts N worker
  processes on this machine (``bench.supervisor``); each joins a process group made for that
  case alone (``init_case_group``), so a rank that hangs or dies costs only its case.
- Under a launcher, every rank runs the same pytest session (SPMD) and the cases run in the
  pytest process: ``torchrun --nproc-per-node K [--nnodes M --node-rank I --master-addr HOST
  --master-port P] -m pytest bench --world-size K*M ...`` on each machine, or the DeepSpeed
  launcher ``deepspeed [--hostfile H] --num_gpus K --module pytest bench --world-size K*M ...``
  (its ``--local_rank`` argument is accepted and ignored): the launcher's ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` are used (``setup``).

The process group is gloo on CPUs (with ``DS_ACCELERATOR=cpu`` for DeepSpeed) and NCCL on
GPUs, where rank R uses ``cuda:LOCAL_RANK``. Only rank 0 writes results, JSON and tables.

Every decision that could differ between ranks is agreed (``agree``, ``broadcast``), so they
skip together; each timed step ends in a barrier so the ranks step in lockstep, and the
reported step time of a round is the slowest rank's. Each rank measures its own memory;
``per_rank_info`` gathers it.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import statistics
import time
from collections.abc import Callable, Sequence

import torch

from .proc import peak_rss, reset_peak_rss

LAUNCHER_ENV = ("RANK", "WORLD_SIZE")


class LaunchError(ValueError):
    """The launcher's environment and the options disagree; the message says how to fix it."""


def launched_rank() -> tuple[int, int, int, int] | None:
    """(rank, world size, local rank, local world size) set by a launcher (torchrun, the
    DeepSpeed launcher), or None."""
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


CASE_ADDR = "127.0.0.1"  # the master address of a case's own process group (``init_case_group``)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((CASE_ADDR, 0))
        return s.getsockname()[1]


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
    timeout_s: float = 1800.0
    _rss_reset: bool = False

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
        sampler's process tree is this rank's alone); GPU peak memory
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

    def finish(self) -> None:
        """Leave the process group."""
        if self.active and torch.distributed.is_initialized():
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # a broken group at exit: the case's status already tells
                pass


def _init_group(ranks: Ranks, device: str, timeout_s: float, init_method: str | None = None) -> Ranks:
    """Initialize the process group: gloo on CPUs (each local rank its share of the cores,
    unless OMP_NUM_THREADS says otherwise), NCCL on GPUs (rank R on cuda:LOCAL_RANK)."""
    is_cuda = device.startswith("cuda")
    if not is_cuda:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_world_size))
    else:
        torch.cuda.set_device(ranks.local_rank)
    torch.distributed.init_process_group(
        "nccl" if is_cuda else "gloo",
        init_method=init_method,
        rank=ranks.rank,
        world_size=ranks.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    return ranks


def setup(world_size: int, device: str, timeout_s: float) -> Ranks:
    """Under a launcher: join its ranks and initialize the process group (SPMD sessions).
    Without one: a single rank (the supervisor starts a case's ranks itself).

    Raises LaunchError when the launcher's ``WORLD_SIZE`` and ``--world-size`` disagree.
    """
    launched = launched_rank()
    if launched is None:
        return Ranks()
    rank, env_world_size, local_rank, local_world_size = launched
    if env_world_size != world_size:
        raise LaunchError(
            f"--world-size {world_size}, but the launcher started WORLD_SIZE={env_world_size} ranks; "
            f"pass --world-size {env_world_size}"
        )
    if world_size == 1:
        return Ranks()
    return _init_group(Ranks(rank, world_size, local_rank, local_world_size, timeout_s=timeout_s), device, timeout_s)


def init_case_group(rank: int, world_size: int, port: int, device: str, timeout_s: float) -> Ranks:
    """A case's own process group on this machine (rank ``rank`` of ``world_size``), for a
    worker the supervisor started. The environment DeepSpeed reads is set too."""
    env = {"RANK": rank, "WORLD_SIZE": world_size, "LOCAL_RANK": rank, "LOCAL_WORLD_SIZE": world_size,
           "MASTER_ADDR": CASE_ADDR, "MASTER_PORT": port}  # fmt: skip
    os.environ.update({k: str(v) for k, v in env.items()})
    ranks = Ranks(rank, world_size, rank, world_size, timeout_s=timeout_s)
    return _init_group(ranks, device, timeout_s, init_method=f"tcp://{CASE_ADDR}:{port}")
