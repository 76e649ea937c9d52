"""``--interleave``: the variants of a case timed in turns, each in its own worker; every result
keeps its own id and stats and gains its step-time ratio to fp32 from paired turns."""

from __future__ import annotations

import math
import statistics

from bench.side_by_side import PROCESS_FLOOR, _per_turn
from tests.bench_runs import processes_with_mark, run


def test_variants_take_turns_and_carry_their_ratio(tmp_path):
    proc, results, mark = run(tmp_path, "--family", "dense", "--size", "xs", "--variant", "fp32,amp-bf16,amp-fp16",
                              "--no-accuracy", "--interleave", "--inject-fault", "dense-xs-amp-fp16=raise")  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-2000:]  # the injected fault fails its case
    fp32, bf16 = (results[f"dense-xs-{v}"]["extra_info"] for v in ("fp32", "amp-bf16"))
    assert results["dense-xs-amp-fp16"]["extra_info"]["status"] == "error"
    for info in (fp32, bf16):
        assert info["status"] == "ok" and info["timing"] == "interleaved"
        block = info["interleave"]
        assert block["sides"] == ["dense-xs-fp32", "dense-xs-amp-bf16", "dense-xs-amp-fp16"]
        assert len(info["step_times_s"]) == block["rounds"] * block["steps_per_turn"]
    assert fp32["interleave"]["step_time_ratio"] == 1.0
    ratio = bf16["interleave"]["step_time_ratio"]
    k = bf16["interleave"]["steps_per_turn"]
    paired = [
        a / b for a, b in zip(_per_turn(bf16["step_times_s"], k), _per_turn(fp32["step_times_s"], k), strict=True)
    ]
    assert ratio == statistics.median(paired)
    low, high = bf16["interleave"]["step_time_ratio_ci"]
    assert low <= ratio <= high
    assert bf16["interleave"]["process_floor"] == PROCESS_FLOOR and fp32["interleave"]["process_floor"] is None
    assert processes_with_mark(mark) == []


def test_per_turn_medians():
    assert _per_turn([1.0, 3.0, 2.0, 10.0, 12.0, 11.0], 3) == [2.0, 11.0]


STUCK = """
import time
from workloads.registry import VARIANTS
from workloads.variants import FP32

class Stuck(FP32):
    '''fp32 whose build never ends.'''
    name = "stuck"

    def build(self, ctx):
        time.sleep(600)

VARIANTS["stuck"] = Stuck
"""


def test_a_side_that_never_gets_ready_times_out_alone(tmp_path):
    """Sides are built one at a time, each within its own case timeout: a build that hangs is
    killed after it, and the sides built before it are still timed."""
    (tmp_path / "stuck_variant.py").write_text(STUCK)
    proc, results, mark = run(tmp_path, "-p", "stuck_variant", "--family", "dense", "--size", "xs", "--variant",
                              "fp32,stuck", "--no-accuracy", "--interleave", "--case-timeout", "10",
                              extra_path=tmp_path)  # fmt: skip
    out = proc.stdout[-3000:] + proc.stderr[-2000:]
    stuck, fp32 = (results[f"dense-xs-{v}"]["extra_info"] for v in ("stuck", "fp32"))
    assert stuck["status"] == "timeout" and "still running after --case-timeout 10s" in stuck["reason"], out
    assert fp32["status"] == "ok" and fp32["interleave"]["sides"] == ["dense-xs-fp32"], out
    assert processes_with_mark(mark) == []


def test_the_ratio_interval_has_a_floor_for_two_processes():
    from bench.side_by_side import with_process_floor

    low, high = with_process_floor(2.0, (2.0, 2.0))  # turns that agree perfectly: the floor alone
    assert (low, high) == (2.0 - 2.0 * PROCESS_FLOOR, 2.0 + 2.0 * PROCESS_FLOOR)
    low, high = with_process_floor(1.0, (0.9, 1.01))  # wide sides stay nearly as they were, never narrower
    assert 0.9 - 1e-3 < low < 0.9 and high == 1.0 + math.hypot(0.01, PROCESS_FLOOR)
