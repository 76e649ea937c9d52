"""Figures of trust: contention detection, interleaved ratios under load, A/A intervals.

    python -m bench.figures.trust [--trials 40] [--json PATH] [--a-a-only]

Runs the suite's own executor (a supervised worker per case, the smoke tier's timing) in this
process, on a quiet machine and then with a deliberate background load: one busy process per
core, started outside this session's process tree.

1. Contention: the share of results flagged ``contended`` with the load (target >= 95%) and
   without it (target <= 5%).
2. amp-bf16's step time over fp32's, of dense and transformer at xs and s, quiet and loaded,
   timed one after the other (a case, then the next: the default) and interleaved
   (``--interleave``): how far each method's ratio moves under load (target for interleaved:
   at most 15%). Each method runs twice: at torch's default threads (one per CPU) and at
   ``--threads`` half the CPUs. The load's processes run in a session of their own, and the
   kernel's autogroup scheduling shares the CPUs fairly between sessions, so the load takes half
   of them: a step on every CPU then waits, at each parallel region, for a thread the load
   descheduled, while one on the half that is left runs nearly as on a quiet machine.
3. A/A: fp32 against a twin of itself, interleaved, ``--trials`` times: the share of ratio
   intervals that contain 1.0 (target >= 95%).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from bench.harness import Session
from bench.machine import machine_facts
from bench.settings import CaseSpec, Settings
from bench.supervisor import Supervisor, set_subreaper
from workloads.registry import VARIANTS
from workloads.variants import FP32

PAIRS = [("dense", "xs"), ("dense", "s"), ("transformer", "xs"), ("transformer", "s")]
BURNER = "import os, sys\nfor _ in range(int(sys.argv[1])):\n    if os.fork() == 0:\n        while True: pass\n"


class Twin(FP32):
    """fp32 under another name: the A/A side."""

    name = "fp32-twin"


def start_load(cores: int) -> list[int]:
    """One busy process per core, orphaned to init (outside this session's tree); their pids."""
    set_subreaper(False)
    try:
        launcher = subprocess.Popen([sys.executable, "-c", BURNER + "print(os.getpid())", str(cores)],
                                    start_new_session=True, stdout=subprocess.PIPE, text=True)  # fmt: skip
        launcher.wait()
    finally:
        set_subreaper(True)
    time.sleep(1.0)
    burners = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmd = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"while True: pass" in cmd:
                burners.append(int(name))
    return burners


def stop_load(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def session(interleave: bool, threads: int | None = None) -> Session:
    settings = Settings(tier="smoke", accuracy=False, results_dir=None, interleave=interleave, threads=threads)
    executor = Supervisor(None)
    executor.start()
    return Session(settings, executor)


BENCHMARK = SimpleNamespace(_timer=time.perf_counter, _disable_gc=False, disabled=False)


def run_pairs(interleave: bool, threads: int | None = None, variants=("fp32", "amp-bf16")) -> dict[str, dict]:
    """Every case of PAIRS x variants; extra_info by id."""
    s = session(interleave, threads)
    s.matrix = [CaseSpec(f, size, v) for f, size in PAIRS for v in variants]
    try:
        return {spec.id: s.run(spec, BENCHMARK).info for spec in s.matrix}
    finally:
        s.close()


def ratios(infos: dict[str, dict]) -> dict[str, float | None]:
    out = {}
    for family, size in PAIRS:
        a, b = infos.get(f"{family}-{size}-fp32"), infos.get(f"{family}-{size}-amp-bf16")
        ok = a and b and a["status"] == b["status"] == "ok"
        out[f"{family}-{size}"] = b["step_time_s"] / a["step_time_s"] if ok else None
    return out


def contended_share(infos: dict[str, dict]) -> tuple[int, int]:
    flags = [i["contention"]["contended"] for i in infos.values() if i.get("status") == "ok"]
    return sum(1 for f in flags if f), len(flags)


def a_a(trials: int) -> dict:
    from bench.figures.trust import Twin as importable  # by its module's name: a worker unpickles it

    VARIANTS["fp32-twin"] = importable
    hits, records = 0, []
    for trial in range(trials):
        s = session(True)
        s.matrix = [CaseSpec("dense", "xs", "fp32"), CaseSpec("dense", "xs", "fp32-twin")]
        try:
            infos = [s.run(spec, BENCHMARK).info for spec in s.matrix]
        finally:
            s.close()
        block = infos[1].get("interleave", {})
        ci = block.get("step_time_ratio_ci")
        hit = ci is not None and ci[0] <= 1.0 <= ci[1]
        hits += hit
        records.append({"ratio": block.get("step_time_ratio"), "ci": ci, "contains_1": hit})
        print(f"A/A trial {trial + 1}: ratio {block.get('step_time_ratio')}, CI {ci}, contains 1: {hit}", flush=True)
    return {"trials": trials, "contains_1": hits, "share": hits / trials if trials else None, "records": records}


# what makes a file's figures this machine's: --a-a-only adds its block only to such a file
SAME_MACHINE = ("cpu_model", "cpu_cores", "cpu_features", "torch_cpu_capability", "torch")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=40, help="A/A trials (default 40)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--a-a-only", action="store_true", help="only the A/A trials; with --json, replace that file's a_a block"
    )
    args = parser.parse_args(argv)
    if args.a_a_only:
        machine = machine_facts("cpu")
        old = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
        differ = [k for k in SAME_MACHINE if k in old.get("machine", {}) and old["machine"][k] != machine.get(k)]
        if differ:
            print(f"--a-a-only: {args.json} was measured on another machine ({', '.join(differ)} differ); "
                  "pass a new --json", file=sys.stderr)  # fmt: skip
            return 2
        block = a_a(args.trials) | {"uptime": os.getloadavg(), "machine": machine}
        print(json.dumps({k: v for k, v in block.items() if k not in ("records", "machine")}))
        if args.json:
            args.json.write_text(json.dumps(old | {"a_a": block}, indent=1) + "\n")
        return 0
    cores = os.cpu_count() or 1
    spare = max(1, cores // 2)  # the threads that leave the load's session its fair half of the CPUs
    methods = {  # name: (interleave, --threads)
        "sequential": (False, None),
        "interleaved": (True, None),
        f"sequential-{spare}-threads": (False, spare),
        f"interleaved-{spare}-threads": (True, spare),
    }
    out: dict = {
        "machine": machine_facts("cpu"),  # the ISA decides how bf16 shares the CPUs with a load
        "load": f"{cores} busy processes, one per core",
        "uptime": os.getloadavg(),
        "cores": cores,
    }
    runs = {}
    for label in ("quiet", "loaded"):
        pids = start_load(cores) if label == "loaded" else []
        try:
            for method, (interleave, threads) in methods.items():
                infos = run_pairs(interleave, threads)
                runs[(label, method)] = infos
                flagged, total = contended_share(infos)
                print(
                    f"{label} {method}: contended {flagged}/{total}; bf16/fp32 step ratios {ratios(infos)}", flush=True
                )
        finally:
            stop_load(pids)
    for method in methods:
        quiet, loaded = ratios(runs[("quiet", method)]), ratios(runs[("loaded", method)])
        moved = {k: (loaded[k] / quiet[k] - 1) if quiet[k] and loaded[k] else None for k in quiet}
        out[method] = {"quiet": quiet, "loaded": loaded, "moved": moved}
    out["contended"] = {label: contended_share(runs[(label, "sequential")]) for label in ("quiet", "loaded")}
    out["contended_interleaved"] = {
        label: contended_share(runs[(label, "interleaved")]) for label in ("quiet", "loaded")
    }
    out["step_time_s"] = {  # what the ratios are computed from
        f"{label} {method}": {i: info.get("step_time_s") for i, info in infos.items()}
        for (label, method), infos in runs.items()
    }
    out["a_a"] = a_a(args.trials)
    print(
        json.dumps(
            {k: v for k, v in out.items() if k not in ("a_a", "step_time_s")} | {"a_a_share": out["a_a"]["share"]},
            indent=1,
        )
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
