"""How long the tables of a 500-benchmark results file take: ``python -m reports.bench_render``.

Writes a synthetic streamed results file (``results-*.jsonl``, ``reports.synthetic``; some
results oom or skipped) and times loading it and rendering all three tables in every
format; prints the best of ``--repeat`` runs.
The target: all tables of 500 benchmarks in under 2 seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from reports.load import load_jsonl
from reports.synthetic import synthetic_results, write_jsonl
from reports.table import FORMATS, build_tables, render_all


def measure(count: int = 500, repeat: int = 3) -> dict[str, float]:
    """Best-of-``repeat`` seconds to load the file and to build and render the tables."""
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_jsonl(Path(tmp) / "results-synthetic.jsonl", synthetic_results(count))
        for _ in range(repeat):
            start = time.perf_counter()
            run = load_jsonl(path)
            loaded = time.perf_counter()
            tables = build_tables([run])
            built = time.perf_counter()
            for fmt in FORMATS:
                render_all(tables, fmt)
            rendered = time.perf_counter()
            for name, seconds in (
                ("load", loaded - start),
                ("build", built - loaded),
                (f"render {len(FORMATS)} formats", rendered - built),
                ("github end to end", (built - start) + (rendered - built) / len(FORMATS)),
            ):
                timings[name] = min(timings.get(name, float("inf")), seconds)
        timings["benchmarks"] = float(len(run.results))
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports.bench_render", description=__doc__)
    parser.add_argument("--count", type=int, default=500, help="synthetic results to generate (default: 500)")
    parser.add_argument("--repeat", type=int, default=3, help="take the best of this many runs (default: 3)")
    args = parser.parse_args(argv)
    timings = measure(args.count, args.repeat)
    count = int(timings.pop("benchmarks"))
    print(f"{count} benchmarks in a results jsonl file, best of {args.repeat}:")
    for name, seconds in timings.items():
        print(f"  {name:<22} {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
