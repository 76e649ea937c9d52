"""Evaluation of the regression gate (``python -m reports check``) on real runs.

Run ``python -m bench.figures.gate --trials 40 [--json PATH]``. Each trial runs one smoke
case (default ``dense-xs-fp32``) through the real bench, each run its own pytest process::

    python -m pytest bench --benchmark-only --tier smoke --family dense --size xs
        --variant fp32 --no-accuracy --results-dir '' --benchmark-json RUN.json -q
        [--inject-slowdown F]

twice as-is (A1, A2) and once per slowdown (B10, B15), in a random order within the
trial, then judges pairs with ``reports.check`` (its ``main``, in process; its defaults
unless ``--check-arg`` says otherwise):

- A/A: ``check --baseline A1 A2``; exit 1 is a false alarm;
- A/B: ``check --baseline A B`` (A2 for the first slowdown, A1 for the second); exit 1 is
  a detection;
- faster: ``check --baseline B A``, the same pair reversed; exit 1 is a false alarm.

Pairs of one kind share no run across trials, so each rate is over independent pairs; a
trial's A/A and A/B pairs share a run, so the two rates are not independent of each
other. Rates come with Wilson and Clopper-Pearson 95% intervals (scipy), overall and split
by the machine's load (1-minute load average per CPU when the pair's runs started).

How the slowdown is injected (``--inject``):

- ``work`` (default): the runs get ``--inject-slowdown F`` and this module as a plugin
  (``-p bench.figures.gate``), which realizes the flag as ``F`` x the CPU time of a steady
  step (median of 10 untimed steps right before timing), spent computing after every timed
  step. A slower kernel is CPU work: under contention it stretches like the step itself,
  so the realized slowdown stays ``F`` whatever the load.
- ``flag``: the harness's own realization, a ``time.sleep`` of ``F`` x the mean warm-up
  step time. In a fresh process the warm-up steps are several times slower than steady
  ones and vary from run to run, and a sleep under contention waits for the core, so
  ``0.10`` realized +40% on dense-xs here (and anything from about +10% to +80% per run).
  ``--calibrate K`` then fits realized = a + b x flag from K rounds of real runs and passes
  the flag that should realize each target.

The realized slowdown (the injected runs' median step times over the as-is runs', pooled)
is reported next to each target.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tabulate import tabulate

from reports.check import main as check_main
from reports.stats import proportion_interval

REPO = Path(__file__).resolve().parents[2]
TARGET_DETECTION = 0.95  # at a 10% slowdown
TARGET_FALSE_ALARM = 0.05
INJECT_ENV = "ARCHBENCH_GATE_INJECT"
STEADY_STEPS = 10


# ---------------------------------------------------------------------------------------
# the pytest plugin (loaded into the bench runs with -p bench.figures.gate)


def pytest_configure(config: Any) -> None:
    """With ``ARCHBENCH_GATE_INJECT=work``, realize ``--inject-slowdown F`` as CPU work of
    ``F`` x a steady step's CPU time after every timed step (CPU devices)."""
    fraction = config.getoption("--inject-slowdown", 0.0)
    if os.environ.get(INJECT_ENV) != "work" or not fraction:
        return
    from bench import harness

    original = harness.timed_step

    def timed_step(case: Any, delay_s: float = 0.0) -> tuple[Callable[[], None], list[float]]:
        if not delay_s or case.device.type != "cpu":
            return original(case, delay_s)
        cpu = []
        for _ in range(STEADY_STEPS):
            start = time.process_time()
            case.step()
            cpu.append(time.process_time() - start)
        import torch

        # the step's CPU time is spread over torch's threads; the work below runs on one
        extra_cpu_s = fraction * statistics.median(cpu) / max(torch.get_num_threads(), 1)

        def slowed() -> None:
            case.step()
            end = time.thread_time() + extra_cpu_s
            while time.thread_time() < end:
                pass

        return slowed, []

    harness.timed_step = timed_step


# ---------------------------------------------------------------------------------------
# runs


def bench_command(args: argparse.Namespace, out: Path, fraction: float) -> list[str]:
    family, size, variant = args.case.split("-", 2)
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--tier", args.tier]
    cmd += ["--family", family, "--size", size, "--variant", variant, "--no-accuracy"]
    cmd += ["--results-dir", "", "--benchmark-json", str(out), "-q", "-p", "no:cacheprovider"]
    if args.inject == "work":  # in every run, so as-is and injected runs load the same code
        cmd += ["-p", "bench.figures.gate"]
    if fraction:
        cmd += ["--inject-slowdown", f"{fraction:.6f}"]
    return cmd + list(args.bench_arg)


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env[INJECT_ENV] = args.inject
    return env


def load_per_cpu() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def run_bench(args: argparse.Namespace, out: Path, fraction: float) -> dict[str, float]:
    """One pytest run writing ``out``; returns its wall time and the load when it started.
    An existing ``out`` is reused (resume); a failed run is retried ``args.retries`` times
    (a shared checkout may be mid-edit)."""
    meta = out.with_suffix(".meta.json")
    if out.exists() and meta.exists():
        return json.loads(meta.read_text())
    tmp = out.with_suffix(".part.json")
    for attempt in range(args.retries + 1):
        load, start = load_per_cpu(), time.perf_counter()
        done = subprocess.run(
            bench_command(args, tmp, fraction),
            cwd=REPO,
            env=bench_env(args),
            capture_output=True,
            text=True,
            timeout=600,
            preexec_fn=(lambda: os.nice(args.nice)) if args.nice else None,
        )
        if done.returncode == 0 and tmp.exists():
            info = {"wall_s": time.perf_counter() - start, "load_per_cpu": load, "flag": fraction}
            tmp.replace(out)
            tmp.with_suffix(".md").unlink(missing_ok=True)
            meta.write_text(json.dumps(info))
            return info
        tail = (done.stdout + done.stderr)[-2000:]
        if attempt == args.retries:
            raise RuntimeError(f"bench run {out.name} failed (exit {done.returncode}):\n{tail}")
        print(f"bench run {out.name} failed (exit {done.returncode}), retrying", flush=True)
        time.sleep(30)
    raise AssertionError("unreachable")


def median_step(path: Path) -> float:
    data = json.loads(path.read_text())
    return float(data["benchmarks"][0]["extra_info"]["step_time_s"])


def calibrate(args: argparse.Namespace, runs_dir: Path, target: float) -> dict[str, Any]:
    """For ``--inject flag``: the realized slowdown is about ``a + b x flag`` (warm-up
    steps are slower than steady ones; a sleep overshoots). ``args.calibrate`` rounds of
    real runs (as-is, flag ``target``, flag ``target / 4``, rotating order) give it at two
    flags (median of the injected runs' median step times over the as-is runs' - 1)."""
    flags = {"A": 0.0, "H": target, "L": target / 4}
    medians: dict[str, list[float]] = {kind: [] for kind in flags}
    for i in range(args.calibrate):
        kinds = list(flags)
        for kind in kinds[i % 3 :] + kinds[: i % 3]:
            path = runs_dir / f"calibration{i:02d}-{kind}.json"
            run_bench(args, path, flags[kind])
            medians[kind].append(median_step(path))
    plain = statistics.median(medians["A"])
    realized = {k: statistics.median(medians[k]) / plain - 1 for k in ("H", "L")}
    slope = (realized["H"] - realized["L"]) / (flags["H"] - flags["L"])
    offset = realized["H"] - slope * flags["H"]
    print(
        f"calibration: {args.calibrate} rounds; --inject-slowdown {flags['H']:g} realized"
        f" {realized['H']:+.1%}, {flags['L']:g} realized {realized['L']:+.1%} (median step"
        f" {plain * 1e3:.2f} ms as-is): realized = {offset:+.3f} + {slope:.2f} x flag",
        flush=True,
    )
    return {"flags": flags, "realized": realized, "offset": offset, "slope": slope, "median_step_s": medians}


def calibrated_flag(calibration: dict[str, Any], target: float) -> float:
    """The flag for ``target`` on the calibration line; proportional where noise made the
    line unusable (slope <= 0 or a flag <= 0)."""
    slope, offset = calibration["slope"], calibration["offset"]
    if slope > 0 and (target - offset) / slope > 0:
        return (target - offset) / slope
    return target * calibration["flags"]["H"] / max(calibration["realized"]["H"], 1e-3)


# ---------------------------------------------------------------------------------------
# judging and figures


def judge(baseline: Path, new: Path, check_args: list[str]) -> dict[str, Any]:
    """``reports check --baseline baseline new CHECK_ARGS``: exit code and the step-time row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "check.json"
        argv = ["--baseline", str(baseline), str(new), "--json", str(out), *check_args]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = check_main(argv)
        rows = json.loads(out.read_text())["rows"] if out.exists() else []
    step = next((r for r in rows if r["metric"] == "step_time_s"), {})
    return {
        "baseline": baseline.name,
        "new": new.name,
        "exit": code,
        "failed_metrics": sorted({r["metric"] for r in rows if r["verdict"].startswith("REGRESSED")}),
        "step_change": step.get("change"),
        "p_value": step.get("p_value"),
        "common_language": step.get("common_language"),
        "hodges_lehmann_rel": step.get("hodges_lehmann_rel"),
        "verdict": step.get("verdict"),
    }


def rate(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of pairs with exit 1, with Wilson and Clopper-Pearson 95% intervals."""
    n = len(pairs)
    k = sum(p["exit"] == 1 for p in pairs)
    return {
        "pairs": n,
        "exit1": k,
        "rate": k / n if n else None,
        "wilson95": proportion_interval(k, n, method="wilson"),
        "clopper_pearson95": proportion_interval(k, n, method="exact"),
        "exit2": sum(p["exit"] == 2 for p in pairs),
    }


def quantiles(values: list[float | None]) -> list[float] | None:
    finite = sorted(v for v in values if v is not None)
    if len(finite) < 2:
        return None
    return [finite[0], *statistics.quantiles(finite, n=4, method="inclusive"), finite[-1]]


def _rates(pairs: list[dict[str, Any]], quiet_load: float) -> dict[str, Any]:
    out = rate(pairs)
    out["step_change_quantiles"] = quantiles([p["step_change"] for p in pairs])
    out["quiet"] = rate([p for p in pairs if p["load_per_cpu"] <= quiet_load])
    out["busy"] = rate([p for p in pairs if p["load_per_cpu"] > quiet_load])
    return out


def summarize(trials: list[dict[str, Any]], slowdowns: list[float], quiet_load: float) -> dict[str, Any]:
    out: dict[str, Any] = {"quiet_load_per_cpu": quiet_load, "ab": {}, "faster": {}}
    out["aa"] = _rates([t["aa"] for t in trials], quiet_load)
    plain = [t["median_step_s"][a] for t in trials for a in ("A1", "A2")]
    for target in slowdowns:
        key = f"{target:g}"
        out["ab"][key] = _rates([t["ab"][key] for t in trials], quiet_load)
        out["faster"][key] = _rates([t["faster"][key] for t in trials], quiet_load)
        injected = [t["median_step_s"][f"B{key}"] for t in trials]
        out["ab"][key]["realized_slowdown_pooled"] = statistics.median(injected) / statistics.median(plain) - 1
        out["ab"][key]["realized_slowdown_pair_quantiles"] = quantiles([t["realized"][key] for t in trials])
    return out


def _fmt_rate(r: dict[str, Any]) -> list[str]:
    if not r["pairs"]:
        return ["0/0", "-", "-", "-"]
    lo, hi = r["wilson95"]
    clo, chi = r["clopper_pearson95"]
    return [f"{r['exit1']}/{r['pairs']}", f"{r['rate']:.3f}", f"[{lo:.3f}, {hi:.3f}]", f"[{clo:.3f}, {chi:.3f}]"]


def render(summary: dict[str, Any], slowdowns: list[float]) -> str:
    quiet = summary["quiet_load_per_cpu"]
    entries = [("A/A: as-is vs as-is", summary["aa"], "false alarm <= 0.05")]
    for target in slowdowns:
        r = summary["ab"][f"{target:g}"]
        goal = "detected >= 0.95" if abs(target - 0.10) < 1e-9 else "detected"
        entries.append((f"A/B: +{target:.0%} (realized {r['realized_slowdown_pooled']:+.1%})", r, goal))
    for target in slowdowns:
        entries.append((f"faster: B{target:.0%} -> A", summary["faster"][f"{target:g}"], "false alarm"))
    rows = []
    for name, r, goal in entries:
        rows.append([name, "all", *_fmt_rate(r), goal])
        rows.append(["", f"load/CPU <= {quiet:g}", *_fmt_rate(r["quiet"]), ""])
        rows.append(["", f"load/CPU > {quiet:g}", *_fmt_rate(r["busy"]), ""])
    headers = ["pairs", "machine", "exit 1", "rate", "Wilson 95%", "Clopper-Pearson 95%", "target"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def run_trial(
    args: argparse.Namespace, i: int, runs_dir: Path, fractions: dict[float, float], rng: random.Random
) -> dict[str, Any]:
    kinds = {"A1": 0.0, "A2": 0.0} | {f"B{s:g}": f for s, f in fractions.items()}
    order = list(kinds)
    rng.shuffle(order)
    paths = {k: runs_dir / f"trial{i:03d}-{k}.json" for k in kinds}
    runs = {kind: run_bench(args, paths[kind], kinds[kind]) for kind in order}
    trial: dict[str, Any] = {"order": order, "runs": runs, "ab": {}, "faster": {}, "realized": {}}
    trial["median_step_s"] = {kind: median_step(path) for kind, path in paths.items()}

    def pair(base: str, new: str) -> dict[str, Any]:
        judged = judge(paths[base], paths[new], args.check_arg)
        judged["load_per_cpu"] = max(runs[base]["load_per_cpu"], runs[new]["load_per_cpu"])
        return judged

    trial["aa"] = pair("A1", "A2")
    for k, s in enumerate(fractions):
        key, base = f"{s:g}", "A2" if k % 2 == 0 else "A1"
        trial["ab"][key] = pair(base, f"B{key}")
        trial["faster"][key] = pair(f"B{key}", base)
        trial["realized"][key] = trial["median_step_s"][f"B{key}"] / trial["median_step_s"][base] - 1
    return trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.figures.gate",
        description="Detection and false-alarm rates of `python -m reports check` on real runs.",
    )
    parser.add_argument("--trials", type=int, default=40, help="trials (default %(default)s)")
    parser.add_argument("--case", default="dense-xs-fp32", help="family-size-variant (default %(default)s)")
    parser.add_argument("--tier", default="smoke", help="bench tier: rounds and warm-up (default %(default)s)")
    parser.add_argument("--slowdowns", default="0.10,0.15", help="target slowdowns (default %(default)s)")
    parser.add_argument(
        "--inject",
        choices=("work", "flag"),
        default="work",
        help="work: F x a steady step's CPU time, computed after every step (this module as a plugin);"
        " flag: the harness's sleep of F x the warm-up step, calibrated (default work)",
    )
    parser.add_argument(
        "--calibrate", type=int, default=6, help="--inject flag: rounds of 3 calibration runs (0: flag = target)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS of the runs (default 1; 0: torch's default)"
    )
    parser.add_argument("--nice", type=int, default=0, help="niceness of the runs (negative needs root; default 0)")
    parser.add_argument(
        "--check-arg", action="append", default=[], help="extra argument of check, e.g. --check-arg=--alpha=0.001"
    )
    parser.add_argument(
        "--quiet-load", type=float, default=1.0, help="load average per CPU that splits quiet from busy (default 1)"
    )
    parser.add_argument("--bench-arg", action="append", default=[], help="extra pytest argument (repeatable)")
    parser.add_argument("--runs-dir", help="keep the runs here; existing runs are reused (resume, re-judge)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order (default 0)")
    parser.add_argument("--retries", type=int, default=2, help="retries of a failed run (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures and every pair here")
    args = parser.parse_args(argv)
    slowdowns = [float(s) for s in args.slowdowns.split(",") if s.strip()]

    started = time.time()
    figures: dict[str, Any] = {
        "command": " ".join(["python -m bench.figures.gate", *(sys.argv[1:] if argv is None else argv)]),
        **{k: v for k, v in vars(args).items() if k not in ("json", "runs_dir")},
        "cpu_count": os.cpu_count(),
        "load_per_cpu_start": load_per_cpu(),
    }
    print("bench:", " ".join(bench_command(args, Path("RUN.json"), 0.0)), flush=True)
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="gate-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    trials = []
    try:
        fractions = {s: s for s in slowdowns}
        if args.inject == "flag" and args.calibrate:
            figures["calibration"] = calibrate(args, runs_dir, slowdowns[0])
            fractions = {s: calibrated_flag(figures["calibration"], s) for s in slowdowns}
        figures["inject_flag"] = {f"{s:g}": f for s, f in fractions.items()}
        for s, f in fractions.items():
            print(f"target +{s:.0%}: --inject-slowdown {f:.4f} ({args.inject})", flush=True)
        for i in range(args.trials):
            trial = run_trial(args, i, runs_dir, fractions, rng)
            trials.append(trial)
            ab = "".join(
                f"; +{s:.0%} exit {trial['ab'][f'{s:g}']['exit']} ({trial['ab'][f'{s:g}']['step_change'] or 0:+.1%})"
                for s in slowdowns
            )
            print(
                f"trial {i + 1:3d}/{args.trials}: A/A exit {trial['aa']['exit']}"
                f" ({trial['aa']['step_change'] or 0:+.1%}){ab}; load/CPU {trial['aa']['load_per_cpu']:.2f}",
                flush=True,
            )
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)

    summary = summarize(trials, slowdowns, args.quiet_load)
    figures.update(summary)
    figures["trials_detail"] = trials
    walls = [run["wall_s"] for t in trials for run in t["runs"].values()]
    figures["run_wall_s_median"] = statistics.median(walls) if walls else None
    figures["elapsed_s"] = time.time() - started
    figures["load_per_cpu_end"] = load_per_cpu()
    print()
    print(render(summary, slowdowns))
    aa_q = summary["aa"]["step_change_quantiles"]
    if aa_q:
        print("A/A change of the median step time, min/q1/median/q3/max: " + " / ".join(f"{q:+.1%}" for q in aa_q))
    ten = summary["ab"].get("0.1")
    met = {
        "detection_10pct": ten is not None and ten["rate"] is not None and ten["rate"] >= TARGET_DETECTION,
        "false_alarm": summary["aa"]["rate"] is not None and summary["aa"]["rate"] <= TARGET_FALSE_ALARM,
    }
    figures["met"] = met
    print(
        f"figures: detection at +10% {'met' if met['detection_10pct'] else 'MISSED'}, A/A false alarms"
        f" {'met' if met['false_alarm'] else 'MISSED'}; {len(trials)} trials in {figures['elapsed_s'] / 60:.1f} min"
        f" (median run {figures['run_wall_s_median'] or 0:.1f} s); load average per CPU"
        f" {figures['load_per_cpu_start']:.2f} at start, {figures['load_per_cpu_end']:.2f} at end"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
