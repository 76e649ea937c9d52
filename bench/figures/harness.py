"""Figures of the core suite: harness overhead and workload efficiency.

    python -m bench.figures.harness [--size s] [--repeats 3] [--json PATH]

1. Harness overhead: the step time ``pytest bench`` reports for transformer-SIZE-fp32, over
   the median of a bare loop over the same step timed by ``torch.utils.benchmark``; the two
   are measured alternately, REPEATS times each, in one run. Target <= 1.03.
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
            "--variant", "fp32", "--no-accuracy", "--results-dir", "", "--benchmark-json", str(out),
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
    parser.add_argument("--size", default="m", help="transformer size (default m, the largest smoke size)")
    parser.add_argument("--tier", default="smoke")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    suite, bare, mfu = [], [], []
    for i in range(args.repeats):
        info = suite_step(args.size, args.tier)
        suite.append(info["step_time_s"])
        mfu.append(info["mfu"])
        bare.append(bare_step(args.size, TIERS[args.tier].round_budget_s))
        print(f"repeat {i + 1}: suite {suite[-1] * 1e3:.2f} ms, bare {bare[-1] * 1e3:.2f} ms, "
              f"ratio {suite[-1] / bare[-1]:.4f}, MFU {mfu[-1]:.3f}", flush=True)  # fmt: skip
    ratio = statistics.median(suite) / statistics.median(bare)
    result = {
        "case": f"transformer-{args.size}-fp32",
        "suite_step_s": suite,
        "bare_step_s": bare,
        "overhead_ratio": ratio,
        "overhead_target": 1.03,
        "mfu": mfu,
        "mfu_median": statistics.median(mfu),
        "mfu_target": 0.5,
    }
    print(f"harness overhead: {ratio:.4f} (target <= 1.03); MFU median {result['mfu_median']:.3f} (target >= 0.5)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
