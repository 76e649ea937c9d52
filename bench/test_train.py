"""Training throughput, efficiency and accuracy: family x size x variant.

Run ``pytest bench --benchmark-only`` (see the README for the options)."""

from __future__ import annotations

from .harness import run_benchmark

PHASE = "train"


def test_train(request, benchmark, archbench_session, case_spec):
    run_benchmark(request.node, benchmark, archbench_session, case_spec)
