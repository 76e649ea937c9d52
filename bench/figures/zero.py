"""Figures for the ZeRO variants: measured vs predicted model state, ZeRO-3 scaling, throughput cost.

Run ``python -m bench.figures.zero [--json PATH]``. For each world size (default 1 and 2) it
runs ``pytest bench --benchmark-only --no-accuracy`` on the dense and transformer cases
(default size s) for fp32 (DDP at world size > 1) and ZeRO stages 1-3, in fp32 and +bf16,
reads the ``--benchmark-json`` it writes and prints:

1. model state per rank (the largest rank's), measured against ``model_state_bytes_predicted``
   (DeepSpeed's implementation) and ``model_state_bytes_paper`` (the ZeRO paper), with
   DeepSpeed's own estimator where it has one; target: within 10% of the prediction for
   stages 1-3 at world size 2;
2. ZeRO-3 model state at world size N over world size 1; target <= 0.55 at N = 2;
3. throughput of each stage over fp32 at the same world size.

The world-size > 1 runs start their ranks themselves (gloo, ``DS_ACCELERATOR=cpu`` on CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tabulate import tabulate

ROOT = Path(__file__).resolve().parents[2]
STAGE_VARIANTS = ("zero1", "zero2", "zero3")


def run_pytest_bench(
    world_size: int, families: str, sizes: str, variants: str, out_dir: Path, extra: list[str]
) -> list[dict]:
    """One ``pytest bench`` session; returns the extra_info of every benchmark that ran."""
    json_path = out_dir / f"ws{world_size}.json"
    cmd = [
        sys.executable, "-m", "pytest", str(ROOT / "bench"), "--benchmark-only", "-q", "-p", "no:cacheprovider",
        "--family", families, "--size", sizes, "--variant", variants, "--world-size", str(world_size),
        "--no-accuracy", "--results-dir", str(out_dir / f"ws{world_size}"), "--benchmark-json", str(json_path),
        *extra,
    ]  # fmt: skip
    env = os.environ | {"DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if not json_path.exists():
        raise SystemExit(
            f"pytest bench (world size {world_size}) wrote no JSON:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
        )
    infos = [b["extra_info"] for b in json.loads(json_path.read_text())["benchmarks"]]
    if proc.returncode != 0:
        print(f"warning: pytest bench (world size {world_size}) exited {proc.returncode}", file=sys.stderr)
    return infos


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / 2**20:.3f}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def figures(infos: list[dict]) -> dict:
    """The three figures from the results of all runs."""
    by_key = {(i["family"], i["size"], i["variant"], i["world_size"]): i for i in infos if i.get("status") == "ok"}
    state_rows, scaling_rows, throughput_rows = [], [], []
    for (family, size, variant, ws), info in sorted(by_key.items()):
        if not variant.startswith("zero"):
            continue
        measured, predicted = info["model_state_bytes"], info["model_state_bytes_predicted"]
        state_rows.append(
            {
                "case": f"{family}-{size}",
                "variant": variant,
                "world_size": ws,
                "params": info["params"],
                "measured_bytes": measured,
                "measured_per_rank": info.get("model_state_bytes_per_rank", [measured]),
                "predicted_bytes": predicted,
                "measured_over_predicted": ratio(measured, predicted),
                "paper_bytes": info.get("model_state_bytes_paper"),
                "measured_over_paper": ratio(measured, info.get("model_state_bytes_paper")),
                "deepspeed_estimate_bytes": info.get("model_state_bytes_deepspeed_estimate"),
                "breakdown": info.get("model_state_breakdown"),
            }
        )
        if variant.startswith("zero3") and ws > 1 and (family, size, variant, 1) in by_key:
            one = by_key[(family, size, variant, 1)]
            scaling_rows.append(
                {
                    "case": f"{family}-{size}",
                    "variant": variant,
                    "world_size": ws,
                    "bytes_ws1": one["model_state_bytes"],
                    "bytes_wsN": measured,
                    "ratio": ratio(measured, one["model_state_bytes"]),
                }
            )
    for (family, size, variant, ws), info in sorted(by_key.items()):
        fp32 = by_key.get((family, size, "fp32", ws))
        if fp32 is None:
            continue
        throughput_rows.append(
            {
                "case": f"{family}-{size}",
                "variant": variant,
                "world_size": ws,
                "samples_per_s": info["samples_per_s"],
                "step_time_s": info["step_time_s"],
                "step_time_s_per_rank": info.get("step_time_s_per_rank"),
                "vs_fp32": ratio(info["samples_per_s"], fp32["samples_per_s"]),
                "peak_mem_bytes": info.get("peak_mem_bytes"),
            }
        )
    return {"model_state": state_rows, "zero3_scaling": scaling_rows, "throughput": throughput_rows}


def print_figures(fig: dict) -> None:
    print("\n1. Model state per rank (largest rank), MiB; target at world size 2: within 10% of predicted\n")
    rows = [
        [r["case"], r["variant"], r["world_size"], mib(r["measured_bytes"]), mib(r["predicted_bytes"]),
         fmt(r["measured_over_predicted"]), mib(r["paper_bytes"]), fmt(r["measured_over_paper"]),
         mib(r["deepspeed_estimate_bytes"]),
         "/".join(mib(r["breakdown"][k]) for k in ("params", "grads", "optimizer")) if r["breakdown"] else "-"]
        for r in fig["model_state"]
    ]  # fmt: skip
    print(
        tabulate(
            rows,
            ["case", "variant", "ranks", "measured", "predicted", "meas/pred", "paper", "meas/paper", "DS estimate",
             "params/grads/optim"],
            tablefmt="github",
        )
    )  # fmt: skip
    print("\n2. ZeRO-3 model state per rank, world size N over world size 1; target <= 0.55 at N = 2\n")
    rows = [[r["case"], r["variant"], r["world_size"], mib(r["bytes_ws1"]), mib(r["bytes_wsN"]), fmt(r["ratio"])]
            for r in fig["zero3_scaling"]]  # fmt: skip
    print(tabulate(rows, ["case", "variant", "N", "ws1 MiB", "wsN MiB", "wsN/ws1"], tablefmt="github"))
    print("\n3. Throughput vs fp32 at the same world size (fp32 is DDP at world size > 1)\n")
    rows = [
        [r["case"], r["variant"], r["world_size"], f"{r['samples_per_s']:.4g}", f"{r['step_time_s'] * 1e3:.2f}",
         fmt(r["vs_fp32"], ".2f"), mib(r["peak_mem_bytes"])]
        for r in fig["throughput"]
    ]  # fmt: skip
    print(
        tabulate(rows, ["case", "variant", "ranks", "samples/s", "step ms", "vs fp32", "peak MiB"], tablefmt="github")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default="dense,transformer")
    parser.add_argument("--sizes", default="s")
    parser.add_argument("--world-sizes", default="1,2")
    parser.add_argument("--precisions", default="fp32,bf16", help="fp32 and/or bf16 ZeRO variants")
    parser.add_argument("--json", help="also write the figures and every result here")
    parser.add_argument("--out-dir", help="keep the pytest-benchmark JSON and results here (default: a temp dir)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest bench (after --)")
    args = parser.parse_args(argv)
    suffixes = {"fp32": "", "bf16": "+bf16"}
    variants = ["fp32"] + [s + suffixes[p] for p in args.precisions.split(",") for s in STAGE_VARIANTS]
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="archbench-zero-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    infos: list[dict] = []
    for ws in (int(w) for w in args.world_sizes.split(",")):
        infos += run_pytest_bench(ws, args.families, args.sizes, ",".join(variants), out_dir, args.pytest_args)
    skipped = [f"{i['id']} ws{i.get('world_size')}: {i.get('reason')}" for i in infos if i.get("status") != "ok"]
    fig = figures(infos)
    print_figures(fig)
    for line in skipped:
        print(f"not run: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": fig, "results": infos}, indent=1, default=str))
        print(f"\nfigures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
