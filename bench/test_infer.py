"""Inference latency, throughput and quality: family x size x variant (``--phase infer``).

Run ``pytest bench --benchmark-only --phase infer`` (see the README for the options)."""

from __future__ import annotations

from .harness import run_benchmark

PHASE = "infer"


def test_infer(request, benchmark, archbench_session, case_spec):
    run_benchmark(request.node, benchmark, archbench_session, case_spec)
