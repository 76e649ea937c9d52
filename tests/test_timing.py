"""The timing plan: adaptive rounds stop when the median is tight, go on to the budget when it
is not; every result carries the interval of its median and whether it is stable."""

from __future__ import annotations

import itertools
import statistics
from types import SimpleNamespace

import pytest

from bench.distributed import Ranks
from bench.history import run_settings
from bench.settings import Settings, usable_cpus
from bench.timing import Refused, RoundPlan, plan_rounds, time_rounds, uncertainty
from reports.stats import median_ci


def fake_clock(durations):
    """A timer whose successive (start, end) pairs are ``durations`` apart."""
    now, it = [0.0], iter(durations)
    calls = itertools.count()

    def timer() -> float:
        if next(calls) % 2:  # end of a round
            now[0] += next(it)
        return now[0]

    return timer


def test_a_steady_step_stops_early_once_tight():
    plan = RoundPlan(min_rounds=6, max_rounds=1000, target_ci=0.02, ceiling="budget")
    steady = [0.010 + 0.0001 * (i % 3) for i in range(1000)]
    times, stop = time_rounds(lambda: None, plan, fake_clock(steady), False, Ranks())
    assert stop == "tight" and 6 <= len(times) < 100
    low, high = median_ci(times)
    assert (high - low) / 2 / statistics.median(times) <= 0.02


def test_a_noisy_step_goes_on_to_the_ceiling():
    plan = RoundPlan(min_rounds=6, max_rounds=200, target_ci=0.02, ceiling="budget")
    noisy = [0.010 * (1 + (i * 7919 % 100) / 50) for i in range(200)]  # spread over 1x..3x
    times, stop = time_rounds(lambda: None, plan, fake_clock(noisy), False, Ranks())
    assert stop == "budget" and len(times) == 200


def test_without_a_target_the_whole_budget_is_timed():
    plan = RoundPlan(min_rounds=6, max_rounds=50, target_ci=None, ceiling="max_rounds")
    times, stop = time_rounds(lambda: None, plan, fake_clock([0.01] * 50), False, Ranks())
    assert (len(times), stop) == (50, "max_rounds")


def test_uncertainty_fields_and_their_absence():
    info, absent = uncertainty([0.010, 0.011, 0.010, 0.012, 0.010, 0.011, 0.010, 0.010], 0.05)
    low, high = info["step_time_ci_s"]
    assert low <= statistics.median([0.010, 0.011, 0.010, 0.012, 0.010, 0.011, 0.010, 0.010]) <= high
    assert info["stable"] == (info["step_time_ci_rel"] <= 0.05) and absent == {}
    info, absent = uncertainty([0.01] * 5, 0.05)
    assert info["step_time_ci_s"] is None and info["stable"] is None
    assert "needs at least 6" in absent["stable"]


def test_the_plan_fills_the_budget_and_refuses_past_the_timeout():
    case = SimpleNamespace(family="dense", size="xs", phase="train", world_size=1, data_ranks=1, flops_per_step=1e9)
    s = Settings(accuracy=False)  # smoke: 3 s of rounds, 9 to 2000
    plan = plan_rounds(s, case, warm=0.01)
    assert (plan.min_rounds, plan.max_rounds, plan.ceiling, plan.target_ci) == (9, 300, "budget", 0.02)
    assert plan_rounds(s, case, warm=1e-6).ceiling == "max_rounds"
    assert plan_rounds(s, case, warm=0.01, run_once=True) == RoundPlan(1, 1, None, "once")
    with pytest.raises(Refused, match="projected 180s from the measured warm-up step of 20s"):
        plan_rounds(Settings(accuracy=False, case_timeout_s=60), case, warm=20.0)


def test_round_budget_replaces_the_tiers_ceiling_and_refuses_nonsense() -> None:
    case = SimpleNamespace(family="dense", size="xs", phase="train", world_size=1, data_ranks=1, flops_per_step=1e9)
    s = Settings(accuracy=False, round_budget_s=0.5)
    assert s.tier_spec.round_budget_s == 0.5 and s.tier_spec.min_rounds == Settings().tier_spec.min_rounds
    assert plan_rounds(s, case, warm=0.01).max_rounds == 50  # 0.5 s of 10 ms steps, not the tier's 3 s
    with pytest.raises(ValueError, match="--round-budget must be between 0 and 3600 seconds, got -1"):
        Settings(round_budget_s=-1)


@pytest.mark.parametrize("threads", [0, -1, usable_cpus() + 1])
def test_threads_refuses_what_this_process_cannot_run(threads: int) -> None:
    with pytest.raises(ValueError, match=f"--threads must be between 1 and {usable_cpus()} .*, got {threads}$"):
        Settings(threads=threads)


def test_threads_are_kept_with_the_run_settings_only_when_given() -> None:
    assert "threads" not in run_settings(Settings())
    assert run_settings(Settings(threads=1))["threads"] == 1
