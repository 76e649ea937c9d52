"""Figure: time to accuracy of training variants on this machine, with the spread of the runs.

Run ``python -m bench.figures.time_to_accuracy [--runs 5] [--level standard] [--json PATH]
[--plot PNG]``. For each case (default dense and transformer at xs and s) and variant (default
fp32 and amp-bf16) it makes ``--runs`` seeded runs through the suite's own time-to-accuracy loop
(``workloads.tta``: the code ``pytest bench --time-to-accuracy`` runs), prints every run, the
MLPerf-style mean (without the fastest and the slowest run) and, per case, which variant reaches
the target sooner and whether the difference of the means is larger than the runs' spread
(max - min of the runs each mean keeps, the larger of the two variants').
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch

from workloads import build_case
from workloads.tta import TTAConfig, parse_targets


def measure(family: str, size: str, variant: str, level: str, config: TTAConfig) -> dict[str, Any]:
    case = build_case(family, size, variant, budget_level=level)
    try:
        fields = case.runnable.time_to_accuracy(config)
    finally:
        case.close()
    fields["_reasons"] = fields.get("_reasons", {})
    times = sorted(r["time_s"] for r in fields["tta_runs"] if r["reached"])
    kept = times[1:-1] if len(fields["tta_runs"]) >= 3 else times
    if len(kept) < len(fields["tta_runs"]) - 2:  # a run that missed was among the kept
        kept = []
    return {"family": family, "size": size, "variant": variant, **fields, "kept_times_s": kept}


def spread(row: dict[str, Any]) -> float | None:
    kept = row["kept_times_s"]
    return max(kept) - min(kept) if kept and row["time_to_accuracy_s"] is not None else None


def verdict(rows: list[dict[str, Any]]) -> str:
    """Which variant of one case reaches the target sooner, by how much, beyond the spread?"""
    name = f"{rows[0]['family']}-{rows[0]['size']}"
    timed = [r for r in rows if r["time_to_accuracy_s"] is not None]
    missed = [r["variant"] for r in rows if r["time_to_accuracy_s"] is None]
    if len(timed) < 2:
        return f"{name}: not compared ({', '.join(missed)} did not reach the target in enough runs)"
    fast, slow = sorted(timed, key=lambda r: r["time_to_accuracy_s"])[:2]
    difference = slow["time_to_accuracy_s"] - fast["time_to_accuracy_s"]
    widest = max(spread(fast) or 0.0, spread(slow) or 0.0)
    beyond = "larger" if difference > widest else "NOT larger"
    return (
        f"{name}: {fast['variant']} reaches the target sooner, {fast['time_to_accuracy_s']:.1f} s vs"
        f" {slow['time_to_accuracy_s']:.1f} s ({slow['time_to_accuracy_s'] / fast['time_to_accuracy_s']:.2f}x);"
        f" the difference, {difference:.1f} s, is {beyond} than the runs' spread ({widest:.1f} s)"
    )


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| case | variant | target | reached | time to target | spread (kept runs) | steps | runs (s) |"]
    lines.append("|" + "---|" * 8)
    for r in rows:
        runs = ", ".join(f"{x['time_s']:.1f}" if x["reached"] else "missed" for x in r["tta_runs"])
        reached = sum(1 for x in r["tta_runs"] if x["reached"])
        tta, width, steps = r["time_to_accuracy_s"], spread(r), r["steps_to_accuracy"]
        lines.append(
            f"| {r['family']}-{r['size']} | {r['variant']} | {r['tta_metric']} {r['tta_target']:g} |"
            f" {reached}/{len(r['tta_runs'])} | {'-' if tta is None else f'{tta:.1f} s'} |"
            f" {'-' if width is None else f'{width:.1f} s'} |"
            f" {'-' if steps is None else f'{steps:.0f}'} | {runs} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Every run's time to the target, per case and variant; the kept mean as a bar."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    labels = []
    for i, r in enumerate(rows):
        times = [x["time_s"] for x in r["tta_runs"] if x["reached"]]
        axes.scatter([i] * len(times), times, color="C0" if r["variant"] == "fp32" else "C1", zorder=3)
        if r["time_to_accuracy_s"] is not None:
            axes.hlines(r["time_to_accuracy_s"], i - 0.3, i + 0.3, color="black")
        labels.append(f"{r['family']}-{r['size']}\n{r['variant']}")
    axes.set_xticks(range(len(rows)), labels, fontsize="small")
    axes.set_yscale("log")
    axes.set_ylabel("seconds to the target (runs; bar: mean without fastest and slowest)")
    axes.grid(True, axis="y", alpha=0.3)
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.figures.time_to_accuracy", description=__doc__)
    parser.add_argument("--cases", default="dense-xs,dense-s,transformer-xs,transformer-s")
    parser.add_argument("--variants", default="fp32,amp-bf16")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--level", default="standard", help="budget level (the most a run trains)")
    parser.add_argument("--tta-target", default=None, help="as pytest bench's --tta-target")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PNG")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ARCHBENCH_THREADS", torch.get_num_threads())))
    config = TTAConfig(args.runs, parse_targets(args.tta_target))
    rows = []
    for case in args.cases.split(","):
        family, size = case.split("-")
        for variant in args.variants.split(","):
            rows.append(measure(family, size, variant, args.level, config))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "_reasons"}), file=sys.stderr, flush=True)
    print(table(rows))
    for case in dict.fromkeys((r["family"], r["size"]) for r in rows):
        print(verdict([r for r in rows if (r["family"], r["size"]) == case]))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"level": args.level, "runs": args.runs, "rows": rows}, f, indent=2)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
