"""``--interleave``: the variants of one family, size and phase timed side by side, in turns.

On a shared machine the speed drifts within a second, so two variants timed one after the other
see different machines, and their ratio moves with whatever else runs. Here each variant runs in
its own worker process (isolated as usual); each is built and warmed up in turn (built at the
same time, the side built first timed 0.6-3% slower in A/A trials), then the supervisor gives
them turns in ABBA order (``bench.interleave.window_order``): every turn the same number of
steps on every side (about ``TURN_S`` of the fastest side's steps), after one untimed step that
refills the caches the other sides evicted when a turn holds 4 steps or more, until every side has
the tier's timing budget. Each result keeps its own id, stats and fields, plus ``interleave``:
the turns, and its step time over the reference's (fp32) with a 95% interval from the per-round
ratios (each round pairs the two sides' turns, so a drift that moves both cancels).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from reports.schema import REFERENCE_VARIANT
from reports.stats import median_ci

from .distributed import Ranks
from .faults import with_fault
from .interleave import window_order
from .pipeline import CaseRequest, Outcome, Timed, build, conclude, request_not_run
from .supervisor import Supervisor, Worker, oom_kill_count
from .telemetry import Sampler
from .timing import Refused, RoundPlan, plan_rounds, time_rounds, timed_step, warm_up
from .worker import Stages, failure_outcome, start_worker

TURN_S = 0.02  # a turn: about this long of the fastest side's steps
# Two worker processes of the same code differ by more than their paired turns show (memory
# layout, where their pages and threads land): 40 A/A trials of dense-xs fp32 against a twin of
# itself read a mean ratio of 0.994 with a spread (sd) of 0.65% from trial to trial, while each
# trial's interval from its turns was +-1.0% (median): 9 of the 40 held no 1.0. Every side's ratio
# interval is widened by this much of the ratio (95% of that spread), in quadrature.
PROCESS_FLOOR = 0.0125


# ------------------------------------------------------------------------------------------
# the worker: build, warm up, then run turns on demand


def turns_main(conn: Connection, req: CaseRequest, log: Path) -> None:
    """Worker entry: ``("ready", warm step)``, then a ``("turn", seconds)`` for each ``("turn",
    steps, untimed)`` received, and the Outcome after ``("finish",)``."""
    start_worker(log)
    stage, case = Stages(conn, req.id), None
    try:
        case = build(req, stage)
        stage("warm-up")
        warm = warm_up(case, req.settings.tier_spec, Ranks(), deadline=req.deadline)
        plan_rounds(req.settings, case, warm)  # refuses what would outlast the case timeout
        conn.send(("ready", warm))
        outcome = conclude(req, case, _turns(conn, req, case, stage), Ranks(), stage)
    except Refused as e:
        outcome = Outcome("skipped", request_not_run(req, "skipped", str(e), stage.current))
    except Exception as e:
        traceback.print_exc()
        outcome = failure_outcome(req, e, stage.current)
    finally:
        if case is not None:
            case.close()
    conn.send(("outcome", outcome))
    conn.close()


def _turns(conn: Connection, req: CaseRequest, case, stage: Stages) -> Timed:
    s = req.settings
    step, event_times = timed_step(case, s.inject_slowdown)
    step = with_fault(step, req.fault, case.device)
    times: list[float] = []
    stage("timing")
    with Sampler(s.device, interval_s=s.telemetry_interval_s, session_root=req.session_root or None) as sampler:
        while True:
            msg = conn.recv()
            if msg[0] == "finish":
                break
            _, steps, untimed = msg
            for _ in range(untimed):
                step()
            if event_times and untimed:  # CUDA: the untimed steps' event times are not results
                del event_times[-untimed:]
            got, _ = time_rounds(step, RoundPlan(steps, steps, None, "turn"), req.timer, req.disable_gc, Ranks())
            times += got
            conn.send(("turn", sum(got)))
    telemetry = sampler.result.to_extra_info(samples=case.samples_per_step * len(times))
    return Timed(event_times or times, bool(event_times), times, "interleaved", telemetry)


# ------------------------------------------------------------------------------------------
# the driver, in the supervisor


def _await(sup: Supervisor, req: CaseRequest, w: Worker, kind: str, deadline: float, oom_before: int):
    """The next message ``kind`` from ``w``, or the Outcome that ended it (skipped, error, death, timeout)."""
    while True:
        w.receive(sup.on_stage)
        for i, (got, value) in enumerate(w.messages):
            if got == kind:
                del w.messages[i]
                return value
        if w.outcome is not None:
            return w.outcome
        if not w.process.is_alive():
            w.receive(sup.on_stage)
            return w.outcome or sup.death(req, w, oom_before)
        if time.monotonic() > deadline:
            reason = f"still running after --case-timeout {req.settings.timeout_s:g}s (interleaved), in stage {w.stage}"
            return Outcome("timeout", request_not_run(req, "timeout", reason, w.stage))
        w.conn.poll(min(0.5, max(deadline - time.monotonic(), 0.0)))


def run_group(sup: Supervisor, reqs: list[CaseRequest]) -> dict[str, Outcome]:
    """Build every case of ``reqs`` in its own worker, time them in turns, finish each."""
    oom_before = oom_kill_count()
    deadline = time.monotonic() + sum(r.settings.timeout_s for r in reqs)
    reqs = [dataclasses.replace(r, deadline=deadline) for r in reqs]
    by_id = {r.id: r for r in reqs}
    workers: dict[str, Worker] = {}
    outcomes: dict[str, Outcome] = {}
    try:
        warm = {}
        for r in reqs:  # one at a time: built side by side, the side built first timed 0.6-3% slower
            w = sup.spawn(turns_main, r, sup.log_dir / f"{r.id}.log", duplex=True)
            got = _await(sup, r, w, "ready", min(deadline, time.monotonic() + r.settings.timeout_s), oom_before)
            if isinstance(got, Outcome):  # failed, refused or hung: it leaves at once, the others go on
                outcomes[r.id] = got
                sup.end([w])
            else:
                workers[r.id], warm[r.id] = w, got
        plan = _take_turns(sup, by_id, workers, warm, outcomes, deadline, oom_before)
        for case_id in warm:
            if case_id not in outcomes:
                workers[case_id].conn.send(("finish",))
                outcomes[case_id] = _await(sup, by_id[case_id], workers[case_id], "outcome", deadline, oom_before)
    finally:
        sup.end(list(workers.values()))
    _add_ratios(outcomes, plan)
    return outcomes


def _take_turns(sup, by_id, workers, warm, outcomes, deadline, oom_before) -> dict[str, Any]:
    """ABBA turns of equal steps until every side has the tier's budget of timed steps."""
    tier = next(iter(by_id.values())).settings.tier_spec
    names = list(warm)
    steps = max(1, round(TURN_S / max(min(warm.values(), default=TURN_S), 1e-9)))
    untimed = 1 if steps >= 4 else 0
    spent = dict.fromkeys(names, 0.0)
    rounds = 0
    max_rounds = max(tier.min_rounds, tier.max_rounds // steps)
    while names and min(spent[n] for n in names) < tier.round_budget_s and rounds < max_rounds:
        for case_id in window_order(names, rounds):
            workers[case_id].conn.send(("turn", steps, untimed))
            got = _await(sup, by_id[case_id], workers[case_id], "turn", deadline, oom_before)
            if isinstance(got, Outcome):  # this side failed: the others go on
                outcomes[case_id] = got
                names.remove(case_id)
                continue
            spent[case_id] += got
        rounds += 1
    return {"sides": list(warm), "rounds": rounds, "steps_per_turn": steps, "untimed_steps_per_turn": untimed}


def _add_ratios(outcomes: dict[str, Outcome], plan: dict[str, Any]) -> None:
    """Each side's step time over the reference's, from the rounds' paired turns, with its interval."""
    ok = {case_id: o for case_id, o in outcomes.items() if o.status == "ok"}
    ref = next((o for o in ok.values() if o.info["variant"] == REFERENCE_VARIANT), None)
    k = plan.get("steps_per_turn", 1)
    for outcome in ok.values():
        block = dict(plan) | {"reference": REFERENCE_VARIANT}
        if ref is not None:
            mine, theirs = _per_turn(outcome.step_times, k), _per_turn(ref.step_times, k)
            ratios = [a / b for a, b in zip(mine, theirs, strict=False) if b > 0]  # a side that failed has fewer
            ratio, interval = (statistics.median(ratios) if ratios else None), median_ci(ratios)
            floor = None if outcome is ref else PROCESS_FLOOR  # the reference against itself: exactly 1.0
            if interval is not None and floor is not None:
                interval = with_process_floor(ratio, interval)
            block |= {
                "step_time_ratio": ratio,
                "step_time_ratio_ci": list(interval) if interval else None,
                "process_floor": floor,
            }
        outcome.info["timing"] = "interleaved"
        outcome.info["interleave"] = block


def with_process_floor(ratio: float, interval: tuple[float, float]) -> tuple[float, float]:
    """The paired turns' interval of ``ratio``, each side widened in quadrature by ``PROCESS_FLOOR``
    of the ratio: what two processes of the same code differ by, which no number of turns shows."""
    floor = PROCESS_FLOOR * ratio
    low, high = interval
    return ratio - math.hypot(ratio - low, floor), ratio + math.hypot(high - ratio, floor)


def _per_turn(times: list[float], steps: int) -> list[float]:
    """The median step of each turn (``steps`` consecutive timed steps)."""
    return [statistics.median(times[i : i + steps]) for i in range(0, len(times) - steps + 1, steps)]
