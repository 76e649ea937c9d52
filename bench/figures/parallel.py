"""Figure for the parallel training techniques: DDP, ZeRO-3, FSDP2, a pipeline, and compile.

Run ``python -m bench.figures.parallel [--json PATH]``. It runs two ``pytest bench
--benchmark-only --no-accuracy`` sessions and reads the ``--benchmark-json`` they write:

1. ``--variant fp32,zero3,fsdp2,fsdp2-grad-op,pipeline --world-size 2 --family dense,transformer
   --size s`` (fp32 is DDP there; the pipeline's two ranks share one batch, the others each
   step on their own, so compare ``samples/s``, not step times);
2. ``--variant fp32,compile --family transformer --size s`` at world size 1.

It prints one table: step time, samples/s and its ratio to fp32 at the same world size, model
state per rank (the largest rank's) against its prediction, the pipeline's measured bubble
against the schedule's ideal, and compile's compile time and graph breaks. ``--case-timeout``
defaults to 600 s here: compiling the transformer's step takes tens of seconds on a small CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from tabulate import tabulate

from .zero import fmt, mib, ratio, run_pytest_bench

RUNS = (  # (world size, families, sizes, variants)
    (2, "dense,transformer", "s", "fp32,zero3,fsdp2,fsdp2-grad-op,pipeline"),
    (1, "transformer", "s", "fp32,compile"),
)
HEADERS = ["case", "variant", "ranks", "step ms", "samples/s", "vs fp32", "state MiB/rank", "predicted",
           "meas/pred", "bubble", "ideal", "compile s", "breaks"]  # fmt: skip


def rows(infos: list[dict]) -> list[dict]:
    """One row per measured case, with its fp32 at the same world size for the ratio."""
    ok = [i for i in infos if i.get("status") == "ok"]
    fp32 = {(i["family"], i["size"], i["world_size"]): i for i in ok if i["variant"] == "fp32"}
    out = []
    for i in ok:
        ref = fp32.get((i["family"], i["size"], i["world_size"]))
        state, predicted = i.get("model_state_bytes"), i.get("model_state_bytes_predicted")
        out.append(
            {
                "case": f"{i['family']}-{i['size']}",
                "variant": i["variant"],
                "world_size": i["world_size"],
                "step_time_s": i["step_time_s"],
                "samples_per_step": i["samples_per_step"],
                "samples_per_s": i["samples_per_s"],
                "vs_fp32": ratio(i["samples_per_s"], ref["samples_per_s"]) if ref else None,
                "model_state_bytes": state,
                "model_state_bytes_per_rank": i.get("model_state_bytes_per_rank"),
                "model_state_bytes_predicted": predicted,
                "measured_over_predicted": ratio(state, predicted),
                "bubble_measured": i.get("bubble_measured"),
                "bubble_measured_per_stage": i.get("bubble_measured_per_stage"),
                "bubble_ideal": i.get("bubble_ideal"),
                "compile_s": i.get("compile_s"),
                "graph_breaks": i.get("graph_breaks"),
                "compile_cache_hits": i.get("compile_cache_hits"),
                "peak_mem_bytes": i.get("peak_mem_bytes"),
            }
        )
    return out


def print_table(table: list[dict]) -> None:
    print("\nParallel training techniques (samples/s: all ranks; vs fp32: fp32 at the same world size,")
    print("DDP at 2 ranks; state: the largest rank's model state)\n")
    cells = [
        [r["case"], r["variant"], r["world_size"], fmt(r["step_time_s"] * 1e3, ".1f"), f"{r['samples_per_s']:.4g}",
         fmt(r["vs_fp32"], ".2f"), mib(r["model_state_bytes"]), mib(r["model_state_bytes_predicted"]),
         fmt(r["measured_over_predicted"]), fmt(r["bubble_measured"], ".2f"), fmt(r["bubble_ideal"], ".2f"),
         fmt(r["compile_s"], ".1f"), "-" if r["graph_breaks"] is None else r["graph_breaks"]]
        for r in table
    ]  # fmt: skip
    print(tabulate(cells, HEADERS, tablefmt="github"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case-timeout", default="600")
    parser.add_argument("--json", help="also write the table and every result here")
    parser.add_argument("--out-dir", help="keep the pytest-benchmark JSON and results here (default: a temp dir)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest bench (after --)")
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix="archbench-parallel-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    extra = ["--case-timeout", args.case_timeout, *args.pytest_args]
    infos: list[dict] = []
    for ws, families, sizes, variants in RUNS:
        infos += run_pytest_bench(ws, families, sizes, variants, out_dir, extra)
    table = rows(infos)
    print_table(table)
    for i in infos:
        if i.get("status") != "ok":
            print(f"not run: {i['id']} ws{i.get('world_size')}: {i.get('status')}: {i.get('reason')}")
    if args.json:
        Path(args.json).write_text(json.dumps({"table": table, "results": infos}, indent=1, default=str))
        print(f"\ntable written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
