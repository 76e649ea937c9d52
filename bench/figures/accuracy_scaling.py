"""Figure: held-out quality against model size at a budget level (fp32).

Run ``python -m bench.figures.accuracy_scaling [--level standard] [--json PATH] [--plot PNG]``.
It trains each family at xs, s and m with fp32 through the suite's own accuracy task and budget
(``workloads.budget``: the same code ``pytest bench`` runs), prints a table and a verdict per
family, and writes every number to JSON. The claim it checks: quality does not get worse with
size (dense and cnn accuracy within 1 point of the smaller sizes' or better; transformer bits
per byte lower or equal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import torch

from workloads import build_case

ACCURACY_SLACK = 0.01  # dense, cnn: within 1 point of a smaller size counts as "not worse"


def train_one(family: str, size: str, level: str, seed: int) -> dict[str, Any]:
    """fp32 training of one family and size at ``level``'s budget, and its held-out quality."""
    start = time.perf_counter()
    case = build_case(family, size, "fp32", seed=seed, budget_level=level)
    try:
        fields = case.runnable.accuracy()
    finally:
        case.close()
    fields = {k: v for k, v in fields.items() if not k.startswith("_")}
    return {"family": family, "size": size, "params": case.params, **fields, "seconds": time.perf_counter() - start}


def verdict(rows: list[dict[str, Any]]) -> str:
    """Whether quality holds or improves with size in ``rows`` (one family, sizes ascending)."""
    text = rows[0].get("bits_per_byte") is not None
    key = "bits_per_byte" if text else "accuracy"
    values = [row[key] for row in rows]
    if text:
        ok = all(later <= earlier for earlier, later in zip(values, values[1:], strict=False))
        rule = "bits per byte lower or equal with size"
    else:
        ok = all(later >= max(values[: i + 1]) - ACCURACY_SLACK for i, later in enumerate(values[1:]))
        rule = f"accuracy within {ACCURACY_SLACK * 100:.0f} point of every smaller size or better"
    shown = " -> ".join(f"{v:.3f}" if text else f"{v * 100:.1f}%" for v in values)
    return f"{rows[0]['family']}: {shown}: {'holds' if ok else 'DOES NOT HOLD'} ({rule})"


def table(rows: list[dict[str, Any]]) -> str:
    header = "| family | size | params | steps | samples | lr | accuracy | bits/byte | seconds |"
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        bpb = r.get("bits_per_byte")
        lines.append(
            f"| {r['family']} | {r['size']} | {r['params'] / 1e6:.2f}M | {r['accuracy_steps']} |"
            f" {r['accuracy_train_samples']:,} {r['accuracy_sample_unit']} | {r['accuracy_lr']:g} |"
            f" {r['accuracy'] * 100:.1f}% | {'-' if bpb is None else f'{bpb:.3f}'} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str) -> None:
    """Accuracy (digits) and bits per byte (text) against parameters, one line per family."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    for position, (key, label) in enumerate((("accuracy", "held-out accuracy"), ("bits_per_byte", "bits per byte"))):
        axes = figure.add_subplot(1, 2, position + 1)
        for family in dict.fromkeys(r["family"] for r in rows):
            points = [(r["params"], r[key]) for r in rows if r["family"] == family and r.get(key) is not None]
            if key == "accuracy" and any(r.get("bits_per_byte") is not None for r in rows if r["family"] == family):
                label_family = f"{family} (next byte)"
            else:
                label_family = family
            if points:
                axes.plot(*zip(*points, strict=True), marker="o", label=label_family)
        axes.set_xscale("log")
        axes.set_xlabel("parameters")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="small")
    figure.suptitle("fp32 held-out quality against size")
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.figures.accuracy_scaling", description=__doc__)
    parser.add_argument("--family", default="dense,cnn,transformer")
    parser.add_argument("--size", default="xs,s,m")
    parser.add_argument("--level", default="standard", help="budget level: smoke, standard, full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--plot", metavar="PNG", help="also draw quality against parameters (matplotlib)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("ARCHBENCH_THREADS", torch.get_num_threads())))
    rows = []
    for family in args.family.split(","):
        for size in args.size.split(","):
            rows.append(train_one(family, size, args.level, args.seed))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    for family in dict.fromkeys(r["family"] for r in rows):
        print(verdict([r for r in rows if r["family"] == family]))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"level": args.level, "seed": args.seed, "rows": rows}, f, indent=2)
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
