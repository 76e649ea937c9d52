"""Figures for the telemetry sampler: overhead, sample delivery, peak-memory agreement.

Run ``python -m bench.figures.telemetry [--json PATH]``. It measures, at a 10 ms interval:

1. overhead: median step time with the sampler running over median step time without,
   measured side by side (alternating blocks, the order flipped every pair), on a dense
   and a transformer training case; target <= 1.01;
2. delivery: periodic samples delivered / requested during those runs; target >= 0.9;
3. peak memory: the sampler's CPU peak of the dense case against ``/usr/bin/time -v``'s
   "Maximum resident set size" for the same run as a process; target within 10%.
   The sampler resets the kernel's high-water mark when its window opens, which also resets
   what ``time -v`` reports, so both then cover the window onwards; the peak of the sampled
   RSS alone ("sampled only") is printed too, as the check independent of that counter.

Overhead is a wall-clock figure: on a machine whose cores other processes also use, it
measures their load more than the sampler (the load average is printed for that reason).
The sampling thread's own CPU time per sample is printed as well.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from bench.telemetry import Sampler

Step = Callable[[], None]


def make_cases() -> dict[str, Step]:
    """The training steps the figures time, by name: the suite's own dense and transformer
    cases at size m (fp32), built through the workloads registry."""
    from workloads import build_case

    return {family: build_case(family, "m", "fp32").step for family in ("dense", "transformer")}


def _time_block(step: Step, n_steps: int, cpu_times: list[float] | None = None) -> list[float]:
    """Wall time of each of ``n_steps`` steps; this process's CPU time of each is appended
    to ``cpu_times`` when given."""
    times = []
    for _ in range(n_steps):
        cpu_start, start = time.process_time(), time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


def measure_case(step: Step, interval_s: float, pairs: int, steps_per_block: int) -> dict:
    """Overhead and delivery for one case: ``pairs`` pairs of blocks, with and without the
    sampler, the order alternating so drift affects both sides alike."""
    _time_block(step, 3)  # warm-up
    with_times: list[float] = []
    without_times: list[float] = []
    pair_ratios = []
    cpu: dict[bool, list[float]] = {True: [], False: []}
    delivered = requested = 0
    sampler_cpu_s = sampled_s = 0.0
    block_fractions = []
    for pair in range(pairs):
        blocks: dict[bool, list[float]] = {}
        for sampled in (True, False) if pair % 2 == 0 else (False, True):
            if sampled:
                with Sampler("cpu", interval_s=interval_s) as sampler:
                    blocks[sampled] = _time_block(step, steps_per_block, cpu[sampled])
                result = sampler.result
                delivered += result.n_samples
                requested += result.requested_samples
                sampler_cpu_s += result.sampler_cpu_s or 0.0
                sampled_s += result.duration_s
                block_fractions.append(result.n_samples / max(1, result.requested_samples))
            else:
                blocks[sampled] = _time_block(step, steps_per_block, cpu[sampled])
        with_times += blocks[True]
        without_times += blocks[False]
        pair_ratios.append(statistics.median(blocks[True]) / statistics.median(blocks[False]))
    med_with, med_without = statistics.median(with_times), statistics.median(without_times)
    return {
        "step_s_without": med_without,
        "step_s_with": med_with,
        "overhead_ratio": med_with / med_without,
        # the same, pair by pair: robust to the machine's load drifting during the run
        "overhead_ratio_median_of_pairs": statistics.median(pair_ratios),
        # CPU seconds of this process per step (sampler thread included), with / without:
        # the sampling cost itself, less sensitive than wall time to other processes' load
        "cpu_time_ratio": statistics.median(cpu[True]) / statistics.median(cpu[False]),
        # the sampling thread's own CPU time: per periodic sample, and in % of one core
        "sampler_cpu_us_per_sample": sampler_cpu_s / max(1, delivered) * 1e6,
        "sampler_cpu_pct_of_core": sampler_cpu_s / sampled_s * 100,
        "steps_each": len(with_times),
        "delivered_fraction": delivered / requested if requested else None,
        "delivered_fraction_min_block": min(block_fractions),
        "samples_delivered": delivered,
        "samples_requested": requested,
    }


def _child(interval_s: float, steps: int) -> None:
    """Run the dense case under the sampler and print its peak as one JSON line."""
    step = make_cases()["dense"]
    _time_block(step, 3)
    with Sampler("cpu", interval_s=interval_s) as sampler:
        _time_block(step, steps)
    result = sampler.result
    print(
        json.dumps(
            {
                "peak_mem_bytes": result.peak_mem_bytes,
                # the largest sampled RSS, without the kernel high-water mark
                "sampled_peak_bytes": max(result.series["mem_bytes"]),
            }
        )
    )


def measure_peak_agreement(interval_s: float, steps: int) -> dict:
    """Run the dense case as ``/usr/bin/time -v python -m ... --child`` and compare."""
    time_bin = shutil.which("time") or "/usr/bin/time"
    cmd = [time_bin, "-v", sys.executable, "-m", "bench.figures.telemetry", "--child"]
    cmd += ["--interval", str(interval_s), "--child-steps", str(steps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no maximum RSS in /usr/bin/time output:\n{proc.stderr}")
    time_rss = int(match.group(1)) * 1024
    return {
        "time_v_max_rss_bytes": time_rss,
        "sampler_peak_bytes": child["peak_mem_bytes"],
        "sampler_ratio": child["peak_mem_bytes"] / time_rss,
        "sampled_only_peak_bytes": child["sampled_peak_bytes"],
        "sampled_only_ratio": child["sampled_peak_bytes"] / time_rss,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.figures.telemetry")
    parser.add_argument("--json", metavar="PATH", help="also write the figures here")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds (default 0.01)")
    parser.add_argument("--pairs", type=int, default=12, help="with/without block pairs")
    parser.add_argument("--steps-per-block", type=int, default=2)
    parser.add_argument("--cases", default="dense,transformer", help="comma list")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", type=int, default=20, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.interval, args.child_steps)
        return 0

    figures: dict = {
        "interval_s": args.interval,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_1m_start": os.getloadavg()[0],  # other processes sharing the cores skew it
    }
    cases = make_cases()
    names = [n.strip() for n in args.cases.split(",")]
    for name in names:
        if name not in cases:
            parser.error(f"unknown case {name!r}; choose from {sorted(cases)}")
    figures["cases"] = {}
    for name in names:
        res = measure_case(cases[name], args.interval, args.pairs, args.steps_per_block)
        figures["cases"][name] = res
        print(
            f"{name:12s} step {res['step_s_without'] * 1e3:8.2f} ms without, "
            f"{res['step_s_with'] * 1e3:8.2f} ms with -> overhead {res['overhead_ratio']:.4f} "
            f"(median of pairs {res['overhead_ratio_median_of_pairs']:.4f}, CPU time "
            f"{res['cpu_time_ratio']:.4f}; target <= 1.01, "
            f"{res['steps_each']} steps each); delivered "
            f"{res['samples_delivered']}/{res['samples_requested']} = "
            f"{res['delivered_fraction']:.3f} (min block {res['delivered_fraction_min_block']:.3f}"
            f", target >= 0.9); sampler thread {res['sampler_cpu_us_per_sample']:.1f} us CPU per "
            f"sample = {res['sampler_cpu_pct_of_core']:.2f}% of one core",
            flush=True,
        )
    peak = measure_peak_agreement(args.interval, args.child_steps)
    figures["peak_mem"] = peak
    print(
        f"peak memory  /usr/bin/time -v {peak['time_v_max_rss_bytes'] / 2**20:.1f} MiB, "
        f"sampler {peak['sampler_peak_bytes'] / 2**20:.1f} MiB (ratio {peak['sampler_ratio']:.3f}),"
        f" sampled only {peak['sampled_only_peak_bytes'] / 2**20:.1f} MiB "
        f"(ratio {peak['sampled_only_ratio']:.3f}); target within 10%"
    )
    figures["loadavg_1m_end"] = os.getloadavg()[0]
    print(
        f"load average (1 min) {figures['loadavg_1m_start']:.2f} at start, "
        f"{figures['loadavg_1m_end']:.2f} at end, on {figures['cpu_count']} CPUs"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
