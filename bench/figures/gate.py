"""Evaluation of the regression gate (``python -m reports check``) on real runs.

Run ``python -m bench.figures.gate --trials 40 [--json PATH]``. Each trial runs one smoke
case (default ``dense-xs-fp32``) through the real bench, each run its own pytest process::

    python -m pytest bench --benchmark-only --tier TIER --family dense --size xs
        --variant fp32 --no-accuracy --results-dir '' --benchmark-json RUN.json -q
        [--inject-slowdown FRACTION]

twice as-is (A1, A2) and once per slowdown (B10, B15), in a random order within the
trial, then judges pairs with ``reports.check`` (its ``main``, in process):

- A/A: ``check --baseline A1 A2``; exit 1 is a false alarm;
- A/B: ``check --baseline A B`` (A2 for the first slowdown, A1 for the second); exit 1 is
  a detection;
- faster: ``check --baseline B A``, the same pair reversed; exit 1 is a false alarm.

Pairs of one kind share no run across trials, so each rate is over independent pairs; a
trial's A/A and A/B pairs share a run, so the two rates are not independent of each
other. Rates come with Wilson and Clopper-Pearson 95% intervals (scipy).

``--inject-slowdown F`` sleeps ``F x`` the mean warm-up step time after every timed step.
Warm-up steps are slower than steady ones (the first allocates), so the flag alone would
inject more than ``F`` of a steady step: ``--calibrate K`` (default 6) first times the
case K times in this process the way the harness does (warm-up rounds, then steady
rounds) and passes ``F x median steady / mean warm-up`` instead, so the sleep is about
``F`` of a steady step. The realized slowdown (median over trials of the B run's median
step time over its A run's) is reported next to the target.
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
from pathlib import Path
from typing import Any

from tabulate import tabulate

from reports.check import main as check_main
from reports.stats import proportion_interval

REPO = Path(__file__).resolve().parents[2]
TARGET_DETECTION = 0.95  # at a 10% slowdown
TARGET_FALSE_ALARM = 0.05


def bench_command(args: argparse.Namespace, out: Path, fraction: float) -> list[str]:
    family, size, variant = args.case.split("-", 2)
    cmd = [sys.executable, "-m", "pytest", "bench", "--benchmark-only", "--tier", args.tier]
    cmd += ["--family", family, "--size", size, "--variant", variant, "--no-accuracy"]
    cmd += ["--results-dir", "", "--benchmark-json", str(out), "-q", "-p", "no:cacheprovider"]
    if fraction:
        cmd += ["--inject-slowdown", f"{fraction:.6f}"]
    return cmd + list(args.bench_arg)


def bench_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_bench(args: argparse.Namespace, out: Path, fraction: float) -> float:
    """One pytest run writing ``out``; returns its wall time. Reuses an existing ``out``."""
    if out.exists():
        return 0.0
    start = time.perf_counter()
    tmp = out.with_suffix(".part.json")
    done = subprocess.run(
        bench_command(args, tmp, fraction),
        cwd=REPO,
        env=bench_env(args),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0 or not tmp.exists():
        tail = (done.stdout + done.stderr)[-2000:]
        raise RuntimeError(f"bench run for {out.name} failed (exit {done.returncode}):\n{tail}")
    tmp.replace(out)
    tmp.with_suffix(".md").unlink(missing_ok=True)
    return time.perf_counter() - start


def median_step(path: Path) -> float:
    data = json.loads(path.read_text())
    return float(data["benchmarks"][0]["extra_info"]["step_time_s"])


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """Mean warm-up step / median steady step of the case, timed like the harness does."""
    import torch

    from bench.settings import TIERS
    from workloads import build_case

    if args.threads:
        torch.set_num_threads(args.threads)
    tier = TIERS[args.tier]
    family, size, variant = args.case.split("-", 2)
    ratios = []
    for rep in range(args.calibrate):
        case = build_case(family, size, variant, "cpu", 1, None, None, rep)
        start = time.perf_counter()
        for _ in range(tier.warmup_rounds):
            case.step()
        warm = (time.perf_counter() - start) / max(tier.warmup_rounds, 1)
        rounds = int(min(tier.max_rounds, max(tier.min_rounds, tier.round_budget_s / warm)))
        steady = []
        for _ in range(rounds):
            start = time.perf_counter()
            case.step()
            steady.append(time.perf_counter() - start)
        ratios.append(warm / statistics.median(steady))
        case.close()
    return {"warm_over_steady": statistics.median(ratios), "ratios": ratios}


def judge(baseline: Path, new: Path, alpha: float | None) -> dict[str, Any]:
    """``reports check --baseline baseline new``: exit code and the step-time row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "check.json"
        argv = ["--baseline", str(baseline), str(new), "--json", str(out)]
        if alpha is not None:
            argv += ["--alpha", str(alpha)]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = check_main(argv)
        rows = json.loads(out.read_text())["rows"] if out.exists() else []
    step = next((r for r in rows if r["metric"] == "step_time_s"), {})
    return {
        "baseline": baseline.name,
        "new": new.name,
        "exit": code,
        "failed_metrics": sorted({r["metric"] for r in rows if r["verdict"].startswith("REGR")}),
        "step_change": step.get("change"),
        "p_value": step.get("p_value"),
        "common_language": step.get("common_language"),
        "hodges_lehmann_rel": step.get("hodges_lehmann_rel"),
        "verdict": step.get("verdict"),
    }


def rate(pairs: list[dict[str, Any]], expected_exit: int) -> dict[str, Any]:
    """Share of pairs with exit 1, with Wilson and Clopper-Pearson 95% intervals."""
    n = len(pairs)
    k = sum(p["exit"] == 1 for p in pairs)
    return {
        "pairs": n,
        "exit1": k,
        "rate": k / n if n else None,
        "wilson95": proportion_interval(k, n, method="wilson"),
        "clopper_pearson95": proportion_interval(k, n, method="exact"),
        "unexpected": sum(p["exit"] != expected_exit for p in pairs),
        "exit2": sum(p["exit"] == 2 for p in pairs),
    }


def quantiles(values: list[float]) -> list[float] | None:
    values = sorted(v for v in values if v is not None)
    if len(values) < 2:
        return None
    return [values[0], *statistics.quantiles(values, n=4), values[-1]]


def summarize(trials: list[dict[str, Any]], slowdowns: list[float]) -> dict[str, Any]:
    aa = [t["aa"] for t in trials]
    out: dict[str, Any] = {"aa": rate(aa, 0), "ab": {}, "faster": {}}
    out["aa"]["step_change_quantiles"] = quantiles([p["step_change"] for p in aa])
    for target in slowdowns:
        key = f"{target:g}"
        ab = [t["ab"][key] for t in trials]
        fast = [t["faster"][key] for t in trials]
        out["ab"][key] = rate(ab, 1)
        out["ab"][key]["step_change_quantiles"] = quantiles([p["step_change"] for p in ab])
        out["ab"][key]["realized_slowdown_median"] = statistics.median(
            t["realized"][key] for t in trials
        )
        out["faster"][key] = rate(fast, 0)
    return out


def _fmt_rate(r: dict[str, Any]) -> list[str]:
    lo, hi = r["wilson95"]
    clo, chi = r["clopper_pearson95"]
    return [
        f"{r['exit1']}/{r['pairs']}",
        f"{r['rate']:.3f}",
        f"[{lo:.3f}, {hi:.3f}]",
        f"[{clo:.3f}, {chi:.3f}]",
    ]


def render(summary: dict[str, Any], slowdowns: list[float]) -> str:
    rows = [["A/A (as-is vs as-is)", "exit 0", *_fmt_rate(summary["aa"]), "false alarm <= 0.05"]]
    for target in slowdowns:
        key = f"{target:g}"
        r = summary["ab"][key]
        goal = "detected >= 0.95" if abs(target - 0.10) < 1e-9 else "detected"
        realized = r["realized_slowdown_median"]
        rows.append(
            [f"A/B +{target:.0%} (realized {realized:+.1%})", "exit 1", *_fmt_rate(r), goal]
        )
    for target in slowdowns:
        rows.append(
            [f"faster: B{target:.0%} -> A", "exit 0", *_fmt_rate(summary["faster"][f"{target:g}"]),
             "false alarm"]
        )  # fmt: skip
    headers = ["pairs", "expected", "exit 1", "rate", "Wilson 95%", "Clopper-Pearson 95%", "target"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.figures.gate", description=__doc__)
    parser.add_argument("--trials", type=int, default=40, help="trials (default %(default)s)")
    parser.add_argument("--case", default="dense-xs-fp32", help="family-size-variant")
    parser.add_argument("--tier", default="smoke", help="bench tier (rounds) (default smoke)")
    parser.add_argument(
        "--slowdowns", default="0.10,0.15", help="target slowdowns (default %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of the runs (default 1; 0 leaves torch's default)",
    )
    parser.add_argument(
        "--calibrate",
        type=int,
        default=6,
        help="repetitions of the injection calibration (0: pass the target as the flag)",
    )
    parser.add_argument("--alpha", type=float, default=None, help="passed to check")
    parser.add_argument("--bench-arg", action="append", default=[], help="extra pytest argument")
    parser.add_argument(
        "--runs-dir", help="keep the run JSON files here (existing ones are reused: resume)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    slowdowns = [float(s) for s in args.slowdowns.split(",") if s.strip()]

    started = time.time()
    figures: dict[str, Any] = {
        "case": args.case,
        "tier": args.tier,
        "threads": args.threads,
        "alpha": args.alpha,
        "trials": args.trials,
        "cpu_count": os.cpu_count(),
        "loadavg_1m_start": os.getloadavg()[0],
        "command": "python -m bench.figures.gate " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    if args.calibrate:
        cal = calibrate(args)
        fractions = {s: s / cal["warm_over_steady"] for s in slowdowns}
        figures["calibration"] = cal
        print(f"calibration: warm-up step / steady step = {cal['warm_over_steady']:.3f}"
              f" (reps {', '.join(f'{r:.2f}' for r in cal['ratios'])})", flush=True)  # fmt: skip
    else:
        fractions = {s: s for s in slowdowns}
    figures["inject_fraction"] = {f"{s:g}": f for s, f in fractions.items()}
    print("bench:", " ".join(bench_command(args, Path("RUN.json"), 0.0)), flush=True)
    for s, f in fractions.items():
        print(f"target +{s:.0%}: --inject-slowdown {f:.4f}", flush=True)

    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="gate-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    trials, walls = [], []
    try:
        for i in range(args.trials):
            kinds = {"A1": 0.0, "A2": 0.0} | {f"B{s:g}": fractions[s] for s in slowdowns}
            order = list(kinds)
            rng.shuffle(order)
            paths = {k: runs_dir / f"trial{i:03d}-{k}.json" for k in kinds}
            for kind in order:
                wall = run_bench(args, paths[kind], kinds[kind])
                if wall:
                    walls.append(wall)
            trial: dict[str, Any] = {"order": order, "ab": {}, "faster": {}, "realized": {}}
            trial["aa"] = judge(paths["A1"], paths["A2"], args.alpha)
            for k, s in enumerate(slowdowns):
                key, base = f"{s:g}", paths["A2" if k % 2 == 0 else "A1"]
                b = paths[f"B{s:g}"]
                trial["ab"][key] = judge(base, b, args.alpha)
                trial["faster"][key] = judge(b, base, args.alpha)
                trial["realized"][key] = median_step(b) / median_step(base) - 1
            trials.append(trial)
            line = f"trial {i + 1:3d}/{args.trials}: A/A exit {trial['aa']['exit']}" + "".join(
                f"; +{s:.0%} exit {trial['ab'][f'{s:g}']['exit']}"
                f" (change {trial['ab'][f'{s:g}']['step_change'] or 0:+.1%})"
                for s in slowdowns
            )
            print(f"{line}; A/A change {trial['aa']['step_change'] or 0:+.1%}", flush=True)
    finally:
        if not args.runs_dir:
            shutil.rmtree(runs_dir, ignore_errors=True)

    summary = summarize(trials, slowdowns)
    figures.update(summary)
    figures["pairs"] = trials
    figures["run_wall_s_median"] = statistics.median(walls) if walls else None
    figures["elapsed_s"] = time.time() - started
    figures["loadavg_1m_end"] = os.getloadavg()[0]
    print()
    print(render(summary, slowdowns))
    aa_q = summary["aa"]["step_change_quantiles"]
    if aa_q:
        print("A/A change of median step time: min/q1/median/q3/max "
              + " / ".join(f"{q:+.1%}" for q in aa_q))  # fmt: skip
    ten = summary["ab"].get("0.1")
    met_detect = ten is not None and ten["rate"] >= TARGET_DETECTION
    met_false = summary["aa"]["rate"] <= TARGET_FALSE_ALARM
    figures["met"] = {"detection_10pct": met_detect, "false_alarm": met_false}
    print(
        f"figures: detection at +10% {'met' if met_detect else 'MISSED'}, false alarms"
        f" {'met' if met_false else 'MISSED'}; {len(trials)} trials in"
        f" {figures['elapsed_s'] / 60:.1f} min, median run {figures['run_wall_s_median'] or 0:.1f}s,"
        f" load average {figures['loadavg_1m_start']:.1f} -> {figures['loadavg_1m_end']:.1f}"
        f" on {figures['cpu_count']} CPUs"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
