"""Feasibility probe for the compressed inference variants: speed and bytes against eager fp32.

Run ``python -m bench.figures.compression_probe [--families dense,transformer] [--size m] [--rounds 10]``.
For each family it builds the model at ``--size`` (random weights: speed does not depend on them), at the
family's default batch (dense 256, transformer 16 x 128 tokens), and times forward passes under
``torch.inference_mode`` in three processes, each timing eager fp32 interleaved with its variants
(round-robin, one forward each per round) so every speedup is a ratio measured side by side:

- ``eager``: int8 weight-only (torchao), structured pruning at ratio 0.5, low rank at ``--rank-fractions``;
- ``compiled``: fp32 under ``torch.compile`` with frozen weights;
- ``int8``: PT2E static int8 (it changes inductor's global settings, hence its own process).

It prints each variant's median forward time, its speedup over eager fp32 and its bytes over fp32's, with
the load average before and after. Targets: int8 >= 1.5x on dense-m and transformer-m; pruning at half the
channels >= 1.6x; low rank >= 1.3x on dense-m.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("eager", "compiled", "int8")
TARGETS = {"int8-static": 1.5, "prune-0.5": 1.6, "lowrank": 1.3}


def setup(family: str, size: str, seed: int = 0):
    import torch

    from workloads import FAMILIES

    W = FAMILIES[family]
    workload = W(W.Config.from_size(size))
    torch.manual_seed(seed)
    model = workload.build_model().eval()
    gen = torch.Generator().manual_seed(seed)
    batches = [workload.synthetic_batch(W.default_batch_size, torch.device("cpu"), gen)[0] for _ in range(3)]
    return model, batches


def built(build: Callable[[], object]) -> tuple[object, float]:
    """(what ``build`` returns, seconds it took)."""
    start = time.perf_counter()
    return build(), time.perf_counter() - start


def eager_variants(model, batches, rank_fractions: list[float]) -> dict:
    """name -> (model, seconds to build it) for the variants that run eagerly; ``model`` is left fp32."""
    from workloads.compress import factorize_linear, prune_structured, quantize_weight_only_int8

    out = {
        "int8-wo": built(lambda: quantize_weight_only_int8(model)),
        "prune-0.5": built(lambda: prune_structured(model, batches[0][:2], 0.5).model),
    }
    for fraction in rank_fractions:
        out[f"lowrank-{fraction:g}"] = built(lambda f=fraction: factorize_linear(model, rank_fraction=f).model)
    return out


def compiled_variants(model, batches) -> dict:
    import torch

    def build():
        torch._inductor.config.freezing = True  # as the int8 path: weights become constants
        compiled = torch.compile(model)
        with torch.inference_mode():
            compiled(batches[0])
        return compiled

    return {"fp32-compiled": built(build)}


def int8_variants(model, batches) -> dict:
    from workloads.compress import quantize_static_int8

    return {"int8-static": built(lambda: quantize_static_int8(model, batches[0], batches[1:]))}


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int = 2) -> dict[str, list[float]]:
    """Forward times of each callable, one call each per round, the order rotated every round."""
    import torch

    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    with torch.inference_mode():
        for i in range(warmup + rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                start = time.perf_counter()
                fns[name]()
                if i >= warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def worker(group: str, family: str, size: str, rounds: int, rank_fractions: list[float], threads: int) -> dict:
    import torch

    from workloads.compress import model_bytes

    torch.set_num_threads(threads)
    model, batches = setup(family, size)
    fp32_bytes = model_bytes(model)
    if group == "eager":
        variants = eager_variants(model, batches, rank_fractions)
    elif group == "compiled":
        variants = compiled_variants(model, batches)
    else:
        variants = int8_variants(model, batches)
    x = batches[0]
    fns = {"fp32-eager": lambda: model(x)} | {n: (lambda m=m: m(x)) for n, (m, _) in variants.items()}
    times = time_interleaved(fns, rounds)
    base = statistics.median(times["fp32-eager"])
    return {
        name: {
            "median_s": statistics.median(t),
            "baseline_s": base,  # eager fp32 in the same process, interleaved
            "speedup": base / statistics.median(t),
            "bytes_ratio": 1.0 if name == "fp32-eager" else model_bytes(variants[name][0]) / fp32_bytes,
            "build_s": 0.0 if name == "fp32-eager" else variants[name][1],
            "group": group,
        }
        for name, t in times.items()
    }


def run_worker(group: str, args: argparse.Namespace, family: str) -> dict:
    cmd = [
        sys.executable, "-m", "bench.figures.compression_probe", "--worker", group, "--families", family,
        "--size", args.size, "--rounds", str(args.rounds), "--rank-fractions", args.rank_fractions,
        "--threads", str(args.threads),
    ]  # fmt: skip
    env = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"$ {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"warning: {group} worker for {family} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


HEADERS = [
    "case",
    "variant",
    "process",
    "median ms",
    "its fp32 ms",
    "speedup",
    "bytes / fp32",
    "build s",
    "target",
    "met",
]


def report_row(case: str, name: str, r: dict) -> list[str]:
    target = next((v for k, v in TARGETS.items() if name.startswith(k)), None)
    return [
        case,
        name,
        r["group"],
        f"{1e3 * r['median_s']:.1f}",
        f"{1e3 * r['baseline_s']:.1f}",
        f"{r['speedup']:.2f}x",
        f"{r['bytes_ratio']:.3f}",
        f"{r['build_s']:.1f}",
        "" if target is None else f">= {target}x",
        "" if target is None else ("yes" if r["speedup"] >= target else "no"),
    ]


def report(results: dict[str, dict], size: str) -> str:
    """One row per variant; speedups are over the eager fp32 timed in the same process ("its fp32 ms")."""
    rows = [
        report_row(f"{family}-{size}", name, r) for family, variants in results.items() for name, r in variants.items()
    ]
    return tabulate(rows, headers=HEADERS, tablefmt="github")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default="dense,transformer")
    parser.add_argument("--size", default="m")
    parser.add_argument("--rounds", type=int, default=10, help="timed forwards of each variant (after 2 warm-up)")
    parser.add_argument("--rank-fractions", default="0.125,0.25,0.375")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each worker")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", choices=GROUPS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    fractions = [float(f) for f in args.rank_fractions.split(",") if f]
    if args.worker:
        print(json.dumps(worker(args.worker, args.families, args.size, args.rounds, fractions, args.threads)))
        return
    load_before = os.getloadavg()
    results: dict[str, dict] = {}
    for family in args.families.split(","):
        results[family] = {}
        for group in GROUPS:
            measured = run_worker(group, args, family)
            results[family] |= {k: v for k, v in measured.items() if k != "fp32-eager" or group == "eager"}
    print(report(results, args.size))
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {os.getloadavg()}; threads {args.threads}")
    if args.json:
        args.json.write_text(json.dumps({"size": args.size, "threads": args.threads, "results": results}, indent=1))


if __name__ == "__main__":
    main()
