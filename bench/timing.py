"""How a case is timed: warm-up, the timing plan (rounds, budget, early stop), the timed step
(CUDA events on a GPU, an injected slowdown) and the rounds themselves, and the confidence
interval of the median step that says how far the figure can be trusted.

Adaptive rounds: the tier's timing budget is a ceiling. After the tier's minimum rounds the
95% confidence interval of the median step is checked at geometrically spaced counts (every
25% more rounds, so a few checks in all, each between two steps, never inside one); timing
stops as soon as its half-width is within ``--target-ci`` of the median (``timing_stop:
tight``), and goes on to the budget or the tier's maximum rounds when it is not.
"""

from __future__ import annotations

import dataclasses
import gc
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from reports.stats import MEDIAN_CI_MIN_SAMPLES, ci_half_width_rel, median_ci

from .distributed import Ranks
from .settings import Settings, Tier

CHECK_GROWTH = 1.25  # the CI is checked again after 25% more rounds


class Refused(Exception):
    """The case will not run here (status ``skipped``); the message says why."""


def warm_up(
    case, tier: Tier, ranks: Ranks, step: Callable[[], None] | None = None, deadline: float | None = None
) -> float:
    """Untimed steps before timing: ``tier.warmup_rounds``, then more until ``tier.warmup_s``
    has passed. Returns the steady step time (median of the steps after the first, which
    pays for first-touch allocation); it sets the round count and the case-timeout
    projection. Distributed: every rank runs the same number of steps and gets the slowest
    rank's estimate. ``deadline`` (``time.monotonic()``, the watchdog's): a step that would
    end past it at the last step's time is not started; the case is Refused (skipped, with
    the step time) instead of killed mid-warm-up as a timeout. The steps added to fill
    ``warmup_s`` are short by construction and are not checked."""
    step = step or case.step

    def run(n: int, check: bool = False) -> list[float]:
        times: list[float] = []
        for _ in range(n):
            if check and times and ranks.max(float(time.monotonic() + times[-1] > deadline)):  # type: ignore[operator]
                raise Refused(
                    f"a warm-up step took {times[-1]:.3g}s and another would run past --case-timeout "
                    f"({len(times)} of {n} warm-up steps done)"
                )
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return times

    times = run(max(tier.warmup_rounds, 1), check=deadline is not None)
    steady = ranks.max(statistics.median(times[1:] or times))
    more = (tier.warmup_s - sum(times)) / max(steady, 1e-9)
    more = int(ranks.max(min(max(more, 0.0), float(tier.max_rounds))))
    if more:
        times += run(more)
        steady = ranks.max(statistics.median(times[1:]))
    return steady


@dataclasses.dataclass(frozen=True)
class RoundPlan:
    """At least ``min_rounds``, at most ``max_rounds`` (the budget's ceiling); stop early once
    the median's CI half-width is within ``target_ci`` (None: never early)."""

    min_rounds: int
    max_rounds: int
    target_ci: float | None
    ceiling: str  # what set max_rounds: "budget", "max_rounds" or "once"


def plan_rounds(s: Settings, case, warm: float, run_once: bool = False) -> RoundPlan:
    """The timing plan from the measured warm-up step; Refused when the step projects the case
    (its ceiling of rounds, plus the accuracy stage's FLOPs at that rate) past the case timeout."""
    tier = s.tier_spec
    if run_once:
        return RoundPlan(1, 1, None, "once")
    by_budget = tier.round_budget_s / max(warm, 1e-9)
    rounds = int(min(tier.max_rounds, max(tier.min_rounds, by_budget)))
    projected = warm * rounds
    task = s.accuracy_flops(case.family, case.size, case.phase)
    projected += warm * task * case.data_ranks / case.flops_per_step
    if projected > s.timeout_s:
        raise Refused(
            f"projected {projected:.0f}s from the measured warm-up step of {warm:.3g}s "
            f"({rounds} timed rounds{' and the accuracy stage' if task else ''}), "
            f"over --case-timeout {s.timeout_s:g}s"
        )
    ceiling = "max_rounds" if by_budget > tier.max_rounds else "budget"
    return RoundPlan(min(tier.min_rounds, rounds), rounds, s.target_ci, ceiling)


def spin_cpu(seconds: float) -> None:
    """Busy this thread for ``seconds``: CPU work after the step, like a slower kernel.
    It watches the vDSO wall clock; a per-thread CPU clock costs a system call per read,
    and a loop of system calls disturbs the caches and TLB enough to slow the next step."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed_step(case, slowdown: float = 0.0) -> tuple[Callable[[], None], list[float]]:
    """The callable that is timed. On CUDA it also records each step with CUDA events; the
    event times become the reported step times (host timer otherwise). ``slowdown``
    (``--inject-slowdown``) adds that fraction of each step's own time to it, inside the timed
    call: CPU work after the step on a CPU, an idle GPU before the end event on CUDA."""
    if case.device.type != "cuda":
        if not slowdown:
            return case.step, []

        def slowed() -> None:
            start = time.perf_counter()
            case.step()
            spin_cpu(slowdown * (time.perf_counter() - start))

        return slowed, []
    event_times: list[float] = []

    def step() -> None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        host_start = time.perf_counter()
        start.record()
        case.runnable.step()
        if slowdown:  # idle the GPU between the step's kernels and the end event
            torch.cuda.synchronize(case.device)
            time.sleep(slowdown * (time.perf_counter() - host_start))
        end.record()
        end.synchronize()
        event_times.append(start.elapsed_time(end) / 1e3)

    return step, event_times


def _tight(times: list[float], target: float) -> bool:
    interval = median_ci(times)
    return interval is not None and ci_half_width_rel(interval, statistics.median(times)) <= target


def time_rounds(
    step: Callable[[], None], plan: RoundPlan, timer: Callable[[], float], disable_gc: bool, ranks: Ranks
) -> tuple[list[float], str]:
    """pytest-benchmark's pedantic loop, one iteration a round (the timer around each call, the
    garbage collector off with --benchmark-disable-gc, tracing paused), stopping early when the
    median is tight (``plan``). Returns the times and why timing stopped. Distributed: rank 0
    decides when to stop, so every rank times the same rounds."""
    times: list[float] = []
    gc_enabled, tracer = gc.isenabled(), sys.gettrace()
    if disable_gc:
        gc.disable()
    sys.settrace(None)
    stop, check_at = plan.ceiling, max(plan.min_rounds, MEDIAN_CI_MIN_SAMPLES)
    try:
        while len(times) < plan.max_rounds:
            start = timer()
            step()
            times.append(timer() - start)
            if plan.target_ci is not None and len(times) >= check_at:
                if ranks.broadcast(_tight(times, plan.target_ci)):
                    stop = "tight"
                    break
                check_at = max(check_at + 1, int(len(times) * CHECK_GROWTH))
    finally:
        sys.settrace(tracer)
        if gc_enabled:
            gc.enable()
    return times, stop


def uncertainty(times: list[float], threshold: float) -> tuple[dict[str, Any], dict[str, str]]:
    """``step_time_ci_s``, ``step_time_ci_rel`` and ``stable`` of the step times, and the reasons
    of the ones that cannot be computed."""
    interval = median_ci(times)
    info: dict[str, Any] = {"stable_threshold": threshold}
    if interval is None:
        why = f"{len(times)} timed rounds: a 95% interval of the median needs at least {MEDIAN_CI_MIN_SAMPLES}"
        info |= {"step_time_ci_s": None, "step_time_ci_rel": None, "stable": None}
        return info, {"step_time_ci_s": why, "step_time_ci_rel": why, "stable": why}
    rel = ci_half_width_rel(interval, statistics.median(times))
    return info | {"step_time_ci_s": list(interval), "step_time_ci_rel": rel, "stable": rel <= threshold}, {}


LATENCY_MIN_ROUNDS, LATENCY_MAX_ROUNDS = 20, 2000


def latency(step: Callable[[], None], device: torch.device, budget_s: float) -> dict[str, Any]:
    """Single-sample latency of an inference case: ``step`` (one forward pass at batch 1)
    timed one call at a time, after 3 untimed calls (a compiled model compiles for the new shape
    there), for about ``budget_s`` (20 to 2000 calls). p99 over fewer than 100 calls is close to
    the maximum: ``latency_samples`` says how many there were."""
    import numpy as np

    def once() -> float:
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    for _ in range(3):
        once()
    times = [once() for _ in range(LATENCY_MIN_ROUNDS)]
    while sum(times) < budget_s and len(times) < LATENCY_MAX_ROUNDS:
        times.append(once())
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    return {"latency_p50_s": p50, "latency_p90_s": p90, "latency_p99_s": p99, "latency_samples": len(times)}
