"""Evaluation of the regression gate (``python -m reports check``) on real runs.

Run ``python -m bench.figures.gate --trials 40 [--json PATH]``. Each trial is one
interleaved timing session (``bench.interleave``, the procedure the CI workflow gates pull
requests with) of one smoke case (default ``dense-xs-fp32``) with four sides, all from this
tree: twice as-is (A1, A2) and once per slowdown (B10, B15, ``--inject-slowdown``). The
sides take turns in windows of ``--window`` seconds until each has ``--seconds`` of timed
steps; the order of the sides is shuffled per trial. With one thread a side (``--threads 1``,
the default here and in CI) every side is pinned to the same CPU. Pairs are then judged with
``reports.check`` (its ``main``, in process; its defaults unless ``--check-arg`` says
otherwise):

- A/A: ``check --baseline A1 A2``; exit 1 is a false alarm;
- A/B: ``check --baseline A B`` (A2 for the first slowdown, A1 for the second); exit 1 is
  a detection;
- faster: ``check --baseline B A``, the same pair reversed; exit 1 is a false alarm.

Four sides take turns where the CI gate has two, so a pair's windows lie further apart in
time here than in CI: if anything, the rates here are pessimistic.

Pairs of one kind share no run across trials, so each rate is over independent pairs; a
trial's A/A and A/B pairs share a side, so the two rates are not independent of each
other. Rates come with Wilson and Clopper-Pearson 95% intervals (scipy), overall and split
by the machine's load (1-minute load average per CPU when the trial started).

The slowdown is the bench's own ``--inject-slowdown F``: after every timed step, ``F`` x
that step's own time of CPU work. A slower kernel is CPU work too: under contention it
stretches like the step itself. It also slows the next step a little (the spin evicts
some of what the step had cached), so a flag of ``F`` realizes a bit more than ``F``;
``--inject-scale`` scales the flags down to land on the targets. The realized slowdown
(each injected side's median step over its as-is partner's) is reported next to each target.
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
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench import interleave
from reports.check import main as check_main
from reports.inputs import load_input
from reports.stats import proportion_interval

REPO = Path(__file__).resolve().parents[2]
TARGET_DETECTION = 0.95  # at a 10% slowdown
TARGET_FALSE_ALARM = 0.05


# ---------------------------------------------------------------------------------------
# runs


def load_per_cpu() -> float:
    return os.getloadavg()[0] / (os.cpu_count() or 1)


def run_session(args: argparse.Namespace, out: Path, fractions: dict[float, float], rng: random.Random) -> dict:
    """One interleaved session writing ``out/<side>``; returns the load when it started and
    its wall time. A finished session in ``out`` is reused (resume)."""
    meta = out / "meta.json"
    if meta.exists():
        return json.loads(meta.read_text())
    shutil.rmtree(out, ignore_errors=True)
    kinds = {"A1": 0.0, "A2": 0.0} | {f"B{s:g}": f for s, f in fractions.items()}
    order = list(kinds)
    rng.shuffle(order)
    argv = ["--case", args.case, "--out", str(out), "--seconds", f"{args.seconds:g}", "--window", f"{args.window:g}"]
    argv += ["--tier", args.tier, "--threads", str(args.threads)]
    for kind in order:
        argv += ["--side", f"{kind}={REPO}"]
        if kinds[kind]:
            argv += ["--inject-slowdown", f"{kind}={kinds[kind]:g}"]
    load, start = load_per_cpu(), time.perf_counter()
    log = io.StringIO()
    interleave.run_session(interleave.build_parser().parse_args(argv), log)
    info = {"wall_s": time.perf_counter() - start, "load_per_cpu": load, "order": order, "log": log.getvalue()}
    meta.write_text(json.dumps(info))
    return info


def median_step(side_dir: Path) -> float:
    run = load_input(side_dir)
    return float(run.results[0].extra_info["step_time_s"])


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
    out = runs_dir / f"trial{i:03d}"
    session = run_session(args, out, fractions, rng)
    kinds = ["A1", "A2", *(f"B{s:g}" for s in fractions)]
    paths = {k: out / k for k in kinds}
    trial: dict[str, Any] = {"order": session["order"], "session": session, "ab": {}, "faster": {}, "realized": {}}
    trial["median_step_s"] = {kind: median_step(path) for kind, path in paths.items()}

    def pair(base: str, new: str) -> dict[str, Any]:
        judged = judge(paths[base], paths[new], args.check_arg)
        judged["load_per_cpu"] = session["load_per_cpu"]
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
    parser.add_argument("--tier", default="smoke", help="warm-up of this tier (default %(default)s)")
    parser.add_argument("--slowdowns", default="0.10,0.15", help="target slowdowns (default %(default)s)")
    parser.add_argument(
        "--inject-scale",
        type=float,
        default=1.0,
        help="--inject-slowdown = target x this (the work after each step also slows the next one a little)",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per side (default %(default)s)")
    parser.add_argument("--window", type=float, default=0.02, help="seconds of one turn (default %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the sides (default 1; 0: inherited)")
    parser.add_argument(
        "--check-arg", action="append", default=[], help="extra argument of check, e.g. --check-arg=--alpha=0.001"
    )
    parser.add_argument(
        "--quiet-load", type=float, default=1.0, help="load average per CPU that splits quiet from busy (default 1)"
    )
    parser.add_argument("--runs-dir", help="keep the runs here; existing runs are reused (resume, re-judge)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run order (default 0)")
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
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="gate-"))
    runs_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    trials = []
    try:
        fractions = {s: s * args.inject_scale for s in slowdowns}
        figures["inject_slowdown"] = {f"{s:g}": f for s, f in fractions.items()}
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
    walls = [t["session"]["wall_s"] for t in trials]
    figures["session_wall_s_median"] = statistics.median(walls) if walls else None
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
        f" (median session {figures['session_wall_s_median'] or 0:.1f} s); load average per CPU"
        f" {figures['load_per_cpu_start']:.2f} at start, {figures['load_per_cpu_end']:.2f} at end"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
