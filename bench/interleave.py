"""Interleaved timing: the same cases from two (or more) source trees, timed turn by turn.

On a shared machine the speed drifts by tens of percent from one second to the next (other
tenants on the host, clocks), so two runs made one after the other differ by more than the
regressions a gate must catch: on a 2-core VM the median step of one smoke case moved by up
to 20% between back-to-back runs. Here each side runs in its own worker process, started
from its own tree, and the driver lets them take turns: a window of steps on one side while
the others wait blocked on their pipes, then the next, in ABBA order, until every side has
its timing budget. A turn is the same number of steps on every side (about ``--window``
seconds of the fastest side's steps), after one untimed step that refills the caches the
other sides evicted. All sides see the same machine, so their step times can be compared::

    git worktree add ../base origin/main
    python -m bench.interleave --side base=../base --side new=. \\
        --case dense-xs-fp32 --case cnn-xs-fp32 --out gate
    python -m reports check --baseline gate/base gate/new

Each side's results go to ``OUT/NAME/results-*.jsonl``, which every ``reports`` command
reads. The timing keys (``step_time_s``, ``step_times_s``, ``samples_per_s``, ``tflops``)
are those of ``pytest bench``: the same warm-up (``--tier``), the same timed step, the host
timer (CUDA events on a GPU). Telemetry, accuracy and the matmul peak are not measured here
and are absent with the reason. ``--inject-slowdown NAME=F`` slows one side by ``F`` x its
step's own time (for evaluating the gate, as in ``pytest bench --inject-slowdown``).

Worker protocol (one JSON object per line; ``python -m bench.interleave --worker``, run with
the tree as working directory and first on PYTHONPATH): ``build`` -> ``{"ok", "steady_step_s",
"machine"}`` or ``{"ok": false, "status", "reason"}``; ``run`` ``steps`` ``rewarm`` ->
``{"ok", "steps", "elapsed_s"}``; ``finish`` -> ``{"ok", "extra_info"}``; ``exit``.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

PROTOCOL = 1
WORKER_MODULE = Path("bench") / "interleave.py"
BUILD_TIMEOUT_S = 900.0  # build and warm-up of one case
NOT_MEASURED = "not measured by interleaved timing (timing only)"


class InterleaveError(Exception):
    """Unusable input or a worker that stopped answering; the message is one line."""


# ---------------------------------------------------------------------------------------
# the worker: one tree's code, one case at a time


class _Worker:
    def __init__(self) -> None:
        self.case = None
        self.step = None
        self.event_times: list[float] = []
        self.host_times: list[float] = []
        self.windows = 0
        self.warmup: dict[str, float] = {}

    def build(self, msg: dict[str, Any]) -> dict[str, Any]:
        from workloads import Unsupported, build_case, get_variant
        from workloads.registry import parse_device

        from .distributed import Ranks
        from .machine import machine_facts, session_facts
        from .settings import TIERS
        from .timing import timed_step, warm_up
        from .worker import is_oom

        self.close()
        if msg.get("protocol") != PROTOCOL:
            reason = f"this tree speaks interleave protocol {PROTOCOL}, the driver {msg.get('protocol')}"
            return {"ok": False, "status": "error", "reason": reason}
        family, size, variant = msg["case"].split("-", 2)
        try:
            var = get_variant(variant)
            device = parse_device(msg["device"])
            var.check(device, 1)
            if "train" not in var.phases:
                raise Unsupported(f"variant {variant}: no train phase; interleaved timing runs training steps")
            self.case = build_case(family, size, variant, msg["device"], 1, msg.get("batch_size"), None, msg["seed"])
            steady = warm_up(self.case, TIERS[msg["tier"]], Ranks())
            self.step, self.event_times = timed_step(self.case, msg.get("inject_slowdown", 0.0))
        except Unsupported as e:
            self.close()
            return {"ok": False, "status": "skipped", "reason": str(e)}
        except Exception as e:
            self.close()
            return {"ok": False, "status": "oom" if is_oom(e) else "error", "reason": repr(e)}
        self.host_times, self.windows = [], 0
        self.warmup = {"steady_step_s": steady, "inject_slowdown": msg.get("inject_slowdown", 0.0)}
        return {"ok": True, "steady_step_s": steady, "machine": {**machine_facts(msg["device"]), **session_facts({})}}

    def run(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One turn: ``rewarm`` untimed steps (they refill the caches the other sides
        evicted), then ``steps`` timed ones."""
        if self.step is None:
            return {"ok": False, "status": "error", "reason": "run before a successful build"}
        rewarm = int(msg.get("rewarm", 0))
        for _ in range(rewarm):
            self.step()
        if self.event_times and rewarm:  # CUDA: the untimed steps' event times are not results
            del self.event_times[-rewarm:]
        steps = max(int(msg["steps"]), 1)
        for _ in range(steps):
            t0 = time.perf_counter()
            self.step()
            self.host_times.append(time.perf_counter() - t0)
        self.windows += 1
        return {"ok": True, "steps": steps, "elapsed_s": sum(self.host_times[-steps:])}

    def finish(self, msg: dict[str, Any]) -> dict[str, Any]:
        from pytest_benchmark.stats import Stats

        from reports.metrics import METRICS

        from .pipeline import measured_info

        if self.case is None or not self.host_times:
            return {"ok": False, "status": "error", "reason": "finish before any timed window"}
        times = self.event_times or self.host_times
        info = measured_info(self.case, times, bool(self.event_times), None)
        info["timing"] = "interleaved"
        info["interleave"] = {**msg.get("interleave", {}), "windows": self.windows, **self.warmup}
        absent = {k: NOT_MEASURED for k in METRICS if info.get(k) is None}
        info.update({k: None for k in absent})
        info["absent"] = absent
        stats = Stats()  # the stats block `pytest bench` streams, from the same step times
        for t in times:
            stats.update(t)
        self.close()
        return {"ok": True, "extra_info": info, "stats": stats.as_dict()}

    def close(self) -> None:
        if self.case is not None:
            self.case.close()
        self.case, self.step = None, None


def worker_main(stdin: TextIO, reply_to: TextIO) -> int:
    worker = _Worker()
    handlers = {"build": worker.build, "run": worker.run, "finish": worker.finish}
    for line in stdin:
        msg = json.loads(line)
        if msg.get("op") == "exit":
            break
        handler = handlers.get(msg.get("op"))
        if handler is None:
            reply = {"ok": False, "status": "error", "reason": f"unknown op {msg.get('op')!r}"}
        else:
            try:
                reply = handler(msg)
            except Exception as e:  # a step that fails mid-session: the driver names it
                from .worker import is_oom

                reply = {"ok": False, "status": "oom" if is_oom(e) else "error", "reason": repr(e)}
        reply_to.write(json.dumps(reply, default=str) + "\n")
        reply_to.flush()
    worker.close()
    return 0


# ---------------------------------------------------------------------------------------
# the driver


@dataclass
class Side:
    name: str
    tree: Path
    inject_slowdown: float = 0.0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    machine: dict[str, Any] = field(default_factory=dict)

    def start(self, out: Path, env: dict[str, str], cpus: set[int] | None = None) -> None:
        self.log = out / f"{self.name}.log"
        env = dict(env)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.tree), env.get("PYTHONPATH")]))
        with open(self.log, "w", encoding="utf-8") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.interleave", "--worker"],
                cwd=self.tree,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        if cpus:  # every side on the same CPUs: a shared VM's vCPUs differ in speed from moment to moment
            os.sched_setaffinity(self.proc.pid, cpus)

    def call(self, timeout_s: float, **msg: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise InterleaveError(self._died()) from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        if not ready:
            self.proc.kill()
            raise InterleaveError(f"side {self.name}: no answer to {msg['op']!r} in {timeout_s:.0f}s (log: {self.log})")
        line = self.proc.stdout.readline()
        if not line:
            raise InterleaveError(self._died())
        return json.loads(line)

    def _died(self) -> str:
        assert self.proc is not None
        code = self.proc.wait()
        tail = self.log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:] if self.log else []
        return f"side {self.name}: worker exited with {code} ({tail[0] if tail else 'no output'}; log: {self.log})"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def parse_side(text: str) -> tuple[str, Path]:
    name, sep, tree = text.partition("=")
    if not sep or not name or not tree:
        raise InterleaveError(f"--side {text!r}: expected NAME=TREE, e.g. base=../main")
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise InterleaveError(f"--side {text!r}: NAME may have letters, digits, '-', '_' and '.' only")
    path = Path(tree).resolve()
    if not (path / WORKER_MODULE).is_file():
        raise InterleaveError(
            f"--side {text!r}: {path} has no {WORKER_MODULE} (not an archbench tree with interleaving)"
        )
    return name, path


def pinned_cpus(args: argparse.Namespace) -> set[int] | None:
    """The CPUs every side is pinned to: ``--cpus``, or with ``--threads N`` the last N CPUs
    this process may use; None (no pinning) otherwise or with ``--cpus all``."""
    allowed = sorted(os.sched_getaffinity(0))
    if args.cpus == "all":
        return None
    if args.cpus:
        try:
            cpus = {int(c) for c in args.cpus.split(",") if c.strip()}
        except ValueError:
            raise InterleaveError(f"--cpus {args.cpus!r}: expected a comma list of CPU numbers or 'all'") from None
        if not cpus or not cpus <= set(allowed):
            raise InterleaveError(f"--cpus {args.cpus!r}: this process may use CPUs {allowed}")
        return cpus
    if args.threads:
        return set(allowed[-args.threads :])
    return None


def window_order(names: Sequence[str], round_index: int) -> list[str]:
    """ABBA: the sides in order on even rounds, reversed on odd ones; with more than two
    sides the starting side also rotates, so no side is always first or last."""
    k = (round_index // 2) % len(names)
    order = list(names[k:]) + list(names[:k])
    return order if round_index % 2 == 0 else order[::-1]


def time_case(sides: Sequence[Side], case: str, args: argparse.Namespace, log: TextIO) -> dict[str, dict[str, Any]]:
    """Build ``case`` on every side, take turns until each has ``args.seconds`` of windows,
    and return each side's record (extra_info and stats, or a not-run record)."""
    from .pipeline import not_run_info
    from .settings import CaseSpec

    family, size, variant = case.split("-", 2)
    records: dict[str, dict[str, Any]] = {}
    built = []
    steady: dict[str, float] = {}
    for side in sides:
        reply = side.call(
            BUILD_TIMEOUT_S,
            op="build",
            protocol=PROTOCOL,
            case=case,
            device=args.device,
            batch_size=args.batch_size,
            seed=args.seed,
            tier=args.tier,
            inject_slowdown=side.inject_slowdown,
        )
        if reply["ok"]:
            side.machine = reply["machine"]
            steady[side.name] = reply["steady_step_s"]
            built.append(side)
        else:
            info = not_run_info(CaseSpec(family, size, variant), args.device, 1, reply["status"], reply["reason"])
            records[side.name] = {"extra_info": info, "stats": None}
            log.write(f"{case}: side {side.name} {reply['status']}: {reply['reason']}\n")
    names = [side.name for side in built]
    by_name = {side.name: side for side in built}
    # every side runs the same number of steps a turn, so the share of steps that follow a
    # switch is the same on every side; where a turn holds several steps, one untimed step
    # first refills the caches the other sides evicted
    step_s = min((steady[n] for n in names), default=args.window)
    steps = max(1, round(args.window / max(step_s, 1e-9)))
    rewarm = 1 if steps >= 4 else 0
    spent = dict.fromkeys(names, 0.0)
    rounds = 0
    while names and min(spent.values()) < args.seconds and rounds < args.max_rounds:
        for name in window_order(names, rounds):
            timeout = (steps + rewarm) * steady[name] * 20 + 600
            reply = by_name[name].call(timeout, op="run", steps=steps, rewarm=rewarm)
            if not reply["ok"]:
                raise InterleaveError(f"side {name}: {case}: {reply['reason']}")
            spent[name] += reply["elapsed_s"]
        rounds += 1
    interleave = {"sides": [s.name for s in sides], "window_s": args.window, "rounds": rounds}
    interleave |= {"steps_per_turn": steps, "untimed_steps_per_turn": rewarm}
    for side in built:
        reply = side.call(600, op="finish", interleave=interleave | {"side": side.name})
        if not reply["ok"]:
            raise InterleaveError(f"side {side.name}: {case}: {reply['reason']}")
        records[side.name] = {"extra_info": reply["extra_info"], "stats": reply["stats"]}
    if built:
        medians = ", ".join(f"{n} {records[n]['extra_info']['step_time_s'] * 1e3:.3f} ms" for n in by_name)
        log.write(f"{case}: {rounds} rounds of {steps} steps a turn; median step {medians}\n")
    log.flush()
    return records


def run_session(args: argparse.Namespace, log: TextIO = sys.stderr) -> dict[str, Path]:
    """Time every case on every side; returns each side's results file."""
    from reports.schema import SIZE_ORDER
    from workloads.base import check_choice

    from .results import ResultsStream
    from .settings import BASE_VARIANTS, FAMILY_NAMES, TIERS

    sides = []
    for text in args.side:
        name, tree = parse_side(text)
        if any(s.name == name for s in sides):
            raise InterleaveError(f"--side {text!r}: side {name!r} given twice")
        sides.append(Side(name, tree))
    if len(sides) < 2:
        raise InterleaveError("give at least two --side NAME=TREE to interleave")
    injected = {}
    for text in args.inject_slowdown:
        name, sep, value = text.partition("=")
        try:
            injected[name] = float(value) if sep else float("nan")
        except ValueError:
            injected[name] = float("nan")
        if name not in {s.name for s in sides} or not 0.0 <= injected[name] <= 10.0:
            raise InterleaveError(f"--inject-slowdown {text!r}: expected NAME=F with a --side NAME and 0 <= F <= 10")
    for side in sides:
        side.inject_slowdown = injected.get(side.name, 0.0)
    try:
        check_choice("--tier", args.tier, tuple(TIERS))
        for case in args.case:
            parts = case.split("-", 2)
            if len(parts) != 3:
                raise ValueError(f"--case {case!r}: expected family-size-variant, e.g. cnn-xs-fp32")
            check_choice("--case family", parts[0], FAMILY_NAMES)
            check_choice("--case size", parts[1], SIZE_ORDER)
            if parts[2] not in BASE_VARIANTS:
                raise ValueError(
                    f"--case {case!r}: variant {parts[2]!r}; interleaved timing runs {', '.join(BASE_VARIANTS)}"
                )
    except ValueError as e:
        raise InterleaveError(str(e)) from None
    if not args.case:
        raise InterleaveError("give at least one --case family-size-variant")
    if args.seconds <= 0 or args.window <= 0:
        raise InterleaveError("--seconds and --window must be > 0")

    out = Path(args.out)
    for side in sides:
        folder = out / side.name
        if folder.exists() and any(folder.glob("*.jsonl")):
            raise InterleaveError(f"--out: {folder} already holds results; give an empty --out")
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cpus = pinned_cpus(args)
    streams: dict[str, ResultsStream] = {}
    try:
        for side in sides:
            side.start(out, env, cpus)
        for case in args.case:
            records = time_case(sides, case, args, log)
            for side in sides:
                if side.name not in streams:  # machine facts come with the first build
                    facts = side.machine or {}
                    machine_info = {
                        "archbench": {**facts, "timing": "interleaved", "sides": {s.name: str(s.tree) for s in sides}}
                    }
                    streams[side.name] = ResultsStream(out / side.name, machine_info)
                record = records[side.name]
                info = record["extra_info"]
                streams[side.name].benchmark(
                    f"test_train[{case}]",
                    f"bench/test_train.py::test_train[{case}]",
                    f"{info['family']}-{info['size']}",
                    info,
                    record["stats"],
                )
    finally:
        for side in sides:
            side.stop()
        for stream in streams.values():
            stream.close()
    return {name: stream.path for name, stream in streams.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.interleave",
        description="Time the same cases from several source trees, turn by turn on this machine.",
    )
    parser.add_argument("--side", action="append", default=[], metavar="NAME=TREE", help="a side (2 or more)")
    parser.add_argument("--case", action="append", default=[], metavar="ID", help="family-size-variant (repeatable)")
    parser.add_argument(
        "--out", required=False, default="interleaved", help="results go to OUT/NAME (default %(default)s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="timed seconds per side and case (default %(default)s)"
    )
    parser.add_argument("--window", type=float, default=0.02, help="seconds of one turn (default %(default)s)")
    parser.add_argument("--max-rounds", type=int, default=100000, help=argparse.SUPPRESS)
    parser.add_argument("--tier", default="smoke", help="warm-up of the tier (default %(default)s)")
    parser.add_argument("--device", default="cpu", help="torch device (default %(default)s)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the family's batch size")
    parser.add_argument("--seed", type=int, default=0, help="seed of models and data (default %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS of the workers (default: inherited)")
    parser.add_argument(
        "--cpus",
        default=None,
        help="pin every side to these CPUs (comma list; 'all': no pinning; default: with --threads N, the last N)",
    )
    parser.add_argument(
        "--inject-slowdown", action="append", default=[], metavar="NAME=F", help="slow side NAME by F x its step"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        reply_to = os.fdopen(os.dup(1), "w", encoding="utf-8")
        os.dup2(2, 1)  # whatever else the tree prints goes to the log, not into the protocol
        return worker_main(sys.stdin, reply_to)
    try:
        paths = run_session(args)
    except InterleaveError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
