"""Figures of the core suite: harness overhead and workload efficiency.

    python -m bench.figures.harness [--size s,m] [--tier standard] [--repeats 5] [--json PATH]

1. Harness overhead: the step time ``pytest bench`` reports for transformer-SIZE-fp32, over
   the median of a bare loop over the same step timed by ``torch.utils.benchmark`` for as long
   as the tier's timed rounds (``round_budget_s``); the two are measured one after the other,
   REPEATS pairs per size, in one run. The figure is the median of the pairs' ratios (a pair
   shares the machine's state of the moment; a shared machine drifts between pairs). At the
   smoke tier a 1.5 s step of m gets 6 rounds: the standard tier's longer timing window is the
   default. Target <= 1.03.
2. Workload efficiency: the MFU the suite reports for that case (target >= 0.5 at the largest
   smoke size, m, against the session's fp32 matmul peak).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.utils.benchmark as tbench

from bench.settings import TIERS
from workloads import build_case

REPO = Path(__file__).resolve().parents[2]


def suite_step(size: str, tier: str) -> dict:
    """Run the case through ``pytest bench`` in a subprocess; its extra_info."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [
            sys.executable, "-m", "pytest", str(REPO / "bench"), "--benchmark-only", "-q",
            "-p", "no:cacheprovider", "--tier", tier, "--family", "transformer", "--size", size,
            "--variant", "fp32", "--phase", "train", "--no-accuracy", "--results-dir", "", "--benchmark-json", str(out),
            "--case-timeout", "600",
        ]  # fmt: skip
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        (bench,) = json.loads(out.read_text())["benchmarks"]
        return bench["extra_info"]


def bare_step(size: str, min_run_time: float) -> float:
    """Median step time of a bare loop over the same case, timed by torch.utils.benchmark."""
    case = build_case("transformer", size, "fp32")
    for _ in range(2):
        case.step()
    timer = tbench.Timer(stmt="step()", globals={"step": case.step}, num_threads=torch.get_num_threads())
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="s,m", help="transformer sizes (default s,m; m is the largest smoke size)")
    parser.add_argument("--tier", default="standard")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    results = []
    for size in args.size.split(","):
        suite, bare, mfu = [], [], []
        for i in range(args.repeats):
            info = suite_step(size, args.tier)
            suite.append(info["step_time_s"])
            mfu.append(info["mfu"])
            bare.append(bare_step(size, TIERS[args.tier].round_budget_s))
            print(f"transformer-{size} pair {i + 1}: suite {suite[-1] * 1e3:.2f} ms, bare {bare[-1] * 1e3:.2f} ms, "
                  f"ratio {suite[-1] / bare[-1]:.4f}, MFU {mfu[-1]:.3f}", flush=True)  # fmt: skip
        ratios = [a / b for a, b in zip(suite, bare, strict=True)]
        results.append({
            "case": f"transformer-{size}-fp32",
            "tier": args.tier,
            "suite_step_s": suite,
            "bare_step_s": bare,
            "pair_ratios": ratios,
            "overhead_ratio": statistics.median(ratios),
            "overhead_target": 1.03,
            "mfu": mfu,
            "mfu_median": statistics.median(mfu),
            "mfu_target": 0.5,
        })  # fmt: skip
        r = results[-1]
        spread = f"{min(ratios):.3f}..{max(ratios):.3f}"
        print(f"transformer-{size}: harness overhead {r['overhead_ratio']:.4f} (median of {len(ratios)} pairs, "
              f"{spread}; target <= 1.03); MFU median {r['mfu_median']:.3f}", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
