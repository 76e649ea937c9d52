"""Figures for the telemetry sampler: overhead, sample delivery, peak-memory agreement.

Run ``python -m bench.figures.telemetry [--json PATH]``. It measures, at a 10 ms interval:

1. overhead: median step time with the sampler running over median step time without,
   measured side by side (alternating blocks, the order flipped every pair), on a dense
   and a transformer training case; target <= 1.01;
2. delivery: periodic samples delivered / requested during those runs; target >= 0.9;
3. peak memory: the sampler's CPU peak of the dense case against ``/usr/bin/time -v``'s
   "Maximum resident set size" for the same run as a process; target within 10%.
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
from torch import nn

from bench.telemetry import Sampler

Step = Callable[[], None]


def _train_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> Step:
    """One AdamW training step of ``model`` on a fixed ``(inputs, targets)`` batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    inputs, targets = batch

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets)
        loss.backward()
        optimizer.step()

    return step


class _TinyGPT(nn.Module):
    """Decoder-only transformer: token + position embedding, pre-norm causal blocks."""

    def __init__(self, vocab: int, d_model: int, n_head: int, n_layer: int, seq: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(seq, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_head, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos  # (B, T, d_model)
        x = self.blocks(x, mask=self.mask, is_causal=True)
        return self.head(x)  # (B, T, vocab)


def make_cases() -> dict[str, Step]:
    """The training steps the figures time, by name.

    Self-contained for now; to be switched to the ``workloads`` registry's cases once it
    lands (each value only needs to be a zero-argument training step).
    """
    torch.manual_seed(0)
    mlp = nn.Sequential(
        nn.Linear(1024, 2048), nn.ReLU(),
        nn.Linear(2048, 2048), nn.ReLU(),
        nn.Linear(2048, 2048), nn.ReLU(),
        nn.Linear(2048, 10),
    )  # fmt: skip
    dense = (torch.randn(256, 1024), torch.randint(0, 10, (256,)))
    vocab, seq, batch = 256, 128, 8
    gpt = _TinyGPT(vocab, d_model=512, n_head=8, n_layer=4, seq=seq)
    tokens = torch.randint(0, vocab, (batch, seq + 1))
    lm = (tokens[:, :-1], tokens[:, 1:].reshape(-1))
    return {"dense": _train_step(mlp, dense), "transformer": _train_step(gpt, lm)}


def _time_block(step: Step, n_steps: int) -> list[float]:
    times = []
    for _ in range(n_steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def measure_case(step: Step, interval_s: float, pairs: int, steps_per_block: int) -> dict:
    """Overhead and delivery for one case: ``pairs`` pairs of blocks, with and without the
    sampler, the order alternating so drift affects both sides alike."""
    _time_block(step, 3)  # warm-up
    with_times: list[float] = []
    without_times: list[float] = []
    pair_ratios = []
    delivered = requested = 0
    block_fractions = []
    for pair in range(pairs):
        blocks: dict[bool, list[float]] = {}
        for sampled in (True, False) if pair % 2 == 0 else (False, True):
            if sampled:
                with Sampler("cpu", interval_s=interval_s) as sampler:
                    blocks[sampled] = _time_block(step, steps_per_block)
                result = sampler.result
                delivered += result.n_samples
                requested += result.requested_samples
                block_fractions.append(result.n_samples / max(1, result.requested_samples))
            else:
                blocks[sampled] = _time_block(step, steps_per_block)
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
            f"(median of pairs {res['overhead_ratio_median_of_pairs']:.4f}; target <= 1.01, "
            f"{res['steps_each']} steps each); delivered "
            f"{res['samples_delivered']}/{res['samples_requested']} = "
            f"{res['delivered_fraction']:.3f} (min block {res['delivered_fraction_min_block']:.3f}"
            f", target >= 0.9)",
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
