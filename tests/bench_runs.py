"""Run ``pytest bench`` in a subprocess, as a user would, and read what it wrote; start and end the
torchrun workers of the parity tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
import warnings
from pathlib import Path
from typing import NoReturn

from bench.distributed import LAUNCHER_ENV

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
MARK = "ARCHBENCH_TEST_MARK"  # set in the run's environment: finds every process it started
# the tests' timed rounds fill at most 1.5 s, half the smoke tier's: they check what a run does, not
# how tight its figures are
QUICK = ("--round-budget", "1.5")


def bench_command(results: Path, *args: str) -> list[str]:
    """``pytest bench --benchmark-only ARGS`` (without --benchmark-only when ARGS has --benchmark-disable,
    which pytest-benchmark refuses beside it)."""
    only = [] if "--benchmark-disable" in args else ["--benchmark-only"]
    return [sys.executable, "-m", "pytest", str(BENCH), *only, "-p", "no:cacheprovider",
            "--results-dir", str(results), *QUICK, *args]  # fmt: skip


def marked_env(extra_path: Path | None = None) -> tuple[dict[str, str], str]:
    mark = uuid.uuid4().hex
    env = dict(os.environ, **{MARK: mark})
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(extra_path), env.get("PYTHONPATH", "")])
    return env, mark


def run(tmp: Path, *args: str, timeout: float = 600, extra_path: Path | None = None):
    """``pytest bench ARGS`` with results in ``tmp/results``; returns (process, records, mark)."""
    env, mark = marked_env(extra_path)
    proc = subprocess.run(bench_command(tmp / "results", *args), cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip
    return proc, read_results(tmp / "results"), mark


def read_results(directory: Path) -> dict[str, dict]:
    """The streamed results of the one run in ``directory``, by id."""
    files = list(directory.glob("results-*.jsonl"))
    if not files:
        return {}
    (path,) = files
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {rec["extra_info"]["id"]: rec for rec in lines if rec["type"] == "benchmark"}


def processes_with_mark(mark: str) -> list[tuple[int, str]]:
    """(pid, name) of every live process whose environment holds ``mark``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            env = Path(f"/proc/{name}/environ").read_bytes()
            comm = Path(f"/proc/{name}/comm").read_text().strip()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{MARK}={mark}".encode() in env and state != "Z":
            found.append((int(name), comm))
    return found


# The ZeRO and the parallel tests read one `pytest bench` session per world size on dense-s
# (a 2-rank session costs tens of seconds on 2 cores: one is shared, not one per test file).
RANK_RUNS = {2: "fp32,zero1,zero2,zero3,fsdp2,pipeline", 1: "zero3,zero3+bf16,fsdp2"}


def rank_runs(tmp_path_factory) -> dict[int, tuple[Path, dict[str, dict], subprocess.CompletedProcess]]:
    """world size -> (its directory, extra_info by id, the process) of the dense-s sessions."""
    runs = {}
    for ws, variants in RANK_RUNS.items():
        tmp = tmp_path_factory.mktemp(f"dense-s-ws{ws}")
        args = ("--family", "dense", "--size", "s", "--variant", variants, "--world-size", str(ws), "--no-accuracy",
                "--benchmark-json", str(tmp / "out.json"))  # fmt: skip
        # extra_path: PYTHONPATH names this tree, so the case workers run its code (not another checkout's)
        proc, records, _ = run(tmp, *args, timeout=600, extra_path=ROOT)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        runs[ws] = (tmp, {k: r["extra_info"] for k, r in records.items()}, proc)
    return runs


def refusal(pytester, *args: str) -> str:
    """The usage error ``pytest bench ARGS`` stops with, found in this process: the checks its
    ``pytest_configure`` makes before anything runs (options, results and data directories,
    faults). ``test_isolation`` shows, in a subprocess, how such an error reaches the user."""
    import pytest

    from bench import conftest as bench_conftest

    config = pytester.parseconfig(str(BENCH), "-p", "no:cacheprovider", *args)
    with pytest.raises(ValueError) as refused:
        bench_conftest._preflight(config, bench_conftest._settings(config))
    return str(refused.value)


# --------------------------------------------------------------------------------------
# Ranks the tests start themselves (torchrun)

LAUNCHER_VARS = (*LAUNCHER_ENV, "LOCAL_RANK", "LOCAL_WORLD_SIZE", "LOCAL_SIZE")


def rank_env(**extra: str) -> dict[str, str]:
    """This environment for a process that starts ranks: no launcher's variables (this process
    may be a rank itself), this tree on PYTHONPATH, and faulthandler on: a rank that a signal
    kills prints every thread's Python stack to its stderr."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS}
    return env | {"PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1"} | extra


# torchrun's report of a rank that a signal killed: "exitcode  : -6 (pid: ...)"
KILLED_RANK = re.compile(r"exitcode\s*:\s*-\d+")


def run_ranks(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run a torchrun command; once more when a rank was killed by a signal, with a warning that
    keeps the first run's output. A rank once died of SIGABRT in gloo's or DeepSpeed's C++ in a CI
    run (not reproduced here in 55 runs): a crash like that is not what these tests check. A failed
    assertion or a Python error in a rank fails at once, and a second crash fails too."""
    for attempt in (1, 2):
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 or attempt == 2 or not KILLED_RANK.search(proc.stderr):
            return proc
        warnings.warn(f"a rank was killed by a signal; the ranks run once more. The first run's stderr:\n"
                      f"{proc.stderr[-4000:]}", stacklevel=2)  # fmt: skip
    raise AssertionError("unreachable")


def end_rank_worker(rank: int, world_size: int) -> NoReturn:
    """End a torchrun worker whose result is written: leave the process group as the harness
    does, then exit as the runner's workers do (multiprocessing ends them with os._exit), without
    interpreter finalization or C++ static destructors, where gloo's and DeepSpeed's leftover
    objects are torn down in no set order. A rank once died of SIGABRT in a CI run ("terminate
    called without an active exception": a joinable std::thread destroyed), where is not known."""
    from bench.distributed import Ranks

    Ranks(rank, world_size, rank, world_size).finish()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def deepspeed_maps() -> list[str]:
    """The DeepSpeed shared-memory buffers this process maps, as /proc/self/maps names them:
    the path, and `` (deleted)`` after it once the name is unlinked."""
    from workloads.zero import shm_buffers_in_maps

    return sorted(shm_buffers_in_maps(Path("/proc/self/maps").read_text()))
