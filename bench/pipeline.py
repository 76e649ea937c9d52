"""One case, end to end, where it runs (a worker process, or the pytest process under an
external launcher): preflight, build, warm up, time, assemble the result, accuracy.

``run_case(request, ranks, stage) -> Outcome`` is the whole pipeline; ``stage(name)`` is called
as each stage begins (the supervisor's watchdog names the stage a killed case was in). Nothing
crosses a pipe inside the timed region: the step times travel back in the Outcome.
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

from reports.metrics import METRICS
from reports.schema import SCHEMA
from workloads import Unsupported, tta
from workloads.probe import matmul_peak_tflops
from workloads.registry import VariantFactory, build_case

from .distributed import Ranks
from .faults import with_fault
from .settings import CaseSpec, Settings, Tier
from .telemetry import Sampler

Stage = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class CaseRequest:
    """Everything a worker needs to run one case (picklable)."""

    settings: Settings
    family: str
    size: str
    variant: str
    phase: str
    factory: VariantFactory  # the registry's factory itself: a plugin's variant runs in the worker too
    peak: float | None = None  # the matmul peak of the case's device and compute dtype (MFU)
    fault: str | None = None  # --inject-fault kind for this case
    timer: Callable[[], float] = time.perf_counter  # pytest-benchmark's timer
    disable_gc: bool = False  # --benchmark-disable-gc
    run_once: bool = False  # --benchmark-disable: one timed step
    session_root: int = 0  # the pid whose process tree is this session (contention)

    @property
    def spec(self) -> CaseSpec:
        return CaseSpec(self.family, self.size, self.variant, self.phase)

    @property
    def id(self) -> str:
        return self.spec.id


@dataclasses.dataclass
class Outcome:
    """How a case ended: its status and result fields, the raw step times, new peak probes."""

    status: str
    info: dict[str, Any]
    step_times: list[float] = dataclasses.field(default_factory=list)
    peaks: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def reason(self) -> str | None:
        return self.info.get("reason")


class Refused(Exception):
    """The case will not run here (status ``skipped``); the message says why."""


def not_run_info(
    spec: CaseSpec, device: str, world_size: int, status: str, reason: str, stage: str | None = None
) -> dict[str, Any]:
    """The result of a case that has no measurement: its status, the reason and the stage."""
    return {
        "schema": SCHEMA,
        "id": spec.id,
        "family": spec.family,
        "size": spec.size,
        "variant": spec.variant,
        "phase": spec.phase,
        "device": device,
        "world_size": world_size,
        "status": status,
        "reason": reason,
        "stage": stage,
    }


def request_not_run(req: CaseRequest, status: str, reason: str, stage: str | None = None) -> dict[str, Any]:
    return not_run_info(req.spec, req.settings.device, req.settings.world_size, status, reason, stage)


def peak_key(device: torch.device, dtype: torch.dtype) -> str:
    return f"{device}:{str(dtype).removeprefix('torch.')}"


# ------------------------------------------------------------------------------------------
# stages


def warm_up(case, tier: Tier, ranks: Ranks, step: Callable[[], None] | None = None) -> float:
    """Untimed steps before timing: ``tier.warmup_rounds``, then more until ``tier.warmup_s``
    has passed. Returns the steady step time (median of the steps after the first, which
    pays for first-touch allocation); it sets the round count and the case-timeout
    projection. Distributed: every rank runs the same number of steps and gets the slowest
    rank's estimate."""
    step = step or case.step

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        return times

    times = run(max(tier.warmup_rounds, 1))
    steady = ranks.max(statistics.median(times[1:] or times))
    more = (tier.warmup_s - sum(times)) / max(steady, 1e-9)
    more = int(ranks.max(min(max(more, 0.0), float(tier.max_rounds))))
    if more:
        times += run(more)
        steady = ranks.max(statistics.median(times[1:]))
    return steady


def plan_rounds(req: CaseRequest, case, warm: float) -> int:
    """Timed rounds that fill the tier's budget; Refused when the measured warm-up step projects
    the case (rounds, plus the accuracy task's FLOPs at that rate) past the case timeout."""
    s, tier = req.settings, req.settings.tier_spec
    if req.run_once:
        return 1
    rounds = int(min(tier.max_rounds, max(tier.min_rounds, tier.round_budget_s / max(warm, 1e-9))))
    projected = warm * rounds
    task = s.accuracy_flops(case.family, case.size, case.phase)
    projected += warm * task * case.world_size / case.flops_per_step
    if projected > s.timeout_s:
        raise Refused(
            f"projected {projected:.0f}s from the measured warm-up step of {warm:.3g}s "
            f"({rounds} timed rounds{' and the accuracy stage' if task else ''}), "
            f"over --case-timeout {s.timeout_s:g}s"
        )
    return rounds


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


def time_rounds(step: Callable[[], None], rounds: int, timer: Callable[[], float], disable_gc: bool) -> list[float]:
    """pytest-benchmark's pedantic loop, one iteration a round: the timer around each call,
    the garbage collector off with --benchmark-disable-gc, tracing paused."""
    times: list[float] = []
    gc_enabled, tracer = gc.isenabled(), sys.gettrace()
    if disable_gc:
        gc.disable()
    sys.settrace(None)
    try:
        for _ in range(rounds):
            start = timer()
            step()
            times.append(timer() - start)
    finally:
        sys.settrace(tracer)
        if gc_enabled:
            gc.enable()
    return times


def time_case(req: CaseRequest, case, rounds: int, ranks: Ranks):
    """The timed rounds with the sampler running. Returns (reported step times, cuda events
    used, this rank's own step times, telemetry)."""
    s = req.settings
    step, event_times = timed_step(case, s.inject_slowdown)
    step, own_times = ranks.lockstep(with_fault(step, req.fault, case.device))  # distributed: a barrier ends each
    with Sampler(s.device, interval_s=s.telemetry_interval_s, session_root=req.session_root or None) as sampler:
        host_times = time_rounds(step, rounds, req.timer, req.disable_gc)
    times = event_times or host_times
    if ranks.active:  # distributed: each round's slowest rank
        times = ranks.slowest_per_round(event_times or own_times)
    telemetry = sampler.result.to_extra_info(samples=case.samples_per_step * len(times))
    return times, bool(event_times), own_times, telemetry


# ------------------------------------------------------------------------------------------
# the result


def throughput_metrics(case, step_times: list[float], peak: float | None) -> dict[str, Any]:
    """Everything that follows from the step times: each one recomputable from the JSON."""
    step_time = statistics.median(step_times)
    samples_per_s = case.samples_per_step / step_time
    tflops = case.flops_per_step / step_time / 1e12
    return {
        "step_time_s": step_time,
        "step_times_s": step_times,
        "samples_per_s": samples_per_s,
        "tokens_per_s": samples_per_s * case.seq_len if case.seq_len else None,
        "tflops": tflops,
        "peak_tflops": peak,
        "mfu": tflops / peak if peak else None,
    }


def measured_info(case, step_times: list[float], cuda_events: bool, peak: float | None) -> dict[str, Any]:
    """The result of a timed case: its static fields, status ok, the timer and the metrics
    that follow from the step times."""
    return {
        "schema": SCHEMA,
        **case.static_info(),
        "status": "ok",
        "reason": None,
        "timer": "cuda-event" if cuda_events else "perf_counter",
        **throughput_metrics(case, step_times, peak),
    }


# Why a metric can be absent for reasons of the case itself (other reasons come from the sources).
def default_absent(info: dict[str, Any]) -> dict[str, str]:
    return {
        "tokens_per_s": f"{info['family']} is not a sequence model",
        "peak_tflops": f"no matmul probe for {info.get('dtype')}",
        "mfu": "no peak to compare with",
        "model_state_bytes": f"no training state in the {info['phase']} phase",
        "model_state_bytes_predicted": f"no formula for variant {info['variant']}",
    }


def absent_reasons(info: dict[str, Any], reasons: dict[str, str]) -> dict[str, str]:
    """One reason for every metric that is null: the source's own, else the case's, else
    that nothing measured it. Reasons of metrics that do have a value are dropped."""
    fallback = default_absent(info)
    out = {}
    for key in [*METRICS, *reasons]:
        if key in info and info[key] is None and key not in out:
            out[key] = reasons.get(key) or fallback.get(key) or f"not measured for variant {info['variant']}"
    return out


def assemble(req: CaseRequest, case, step_times, cuda_events, own_times, telemetry, peak, ranks) -> dict[str, Any]:
    """The result fields of a measured case, with every null metric's reason (``absent``)."""
    info = measured_info(case, step_times, cuda_events, peak)
    reasons: dict[str, str] = dict(telemetry.pop("absent", {}))
    info.update(telemetry)
    runnable = case.runnable
    info["model_state_bytes"] = runnable.model_state_bytes()
    info["model_state_bytes_predicted"] = case.variant_obj.predicted_state_bytes(case.params, case.world_size)
    info["model_bytes"] = runnable.model_bytes()
    more = runnable.extra_info()
    reasons.update(more.pop("absent", {}))
    info.update(more)
    if ranks.active:  # distributed: every rank's memory and state; the largest in the usual keys
        more = ranks.per_rank_info(info, case.device, own_times)
        reasons.update(more.pop("absent"))
        info.update(more)
    info["_reasons"] = reasons
    return info


def accuracy_fields(req: CaseRequest, case) -> dict[str, Any]:
    s = req.settings
    if not s.accuracy:
        acc = {"accuracy": None, "accuracy_metric": "top1", "_reasons": {"accuracy": "disabled with --no-accuracy"}}
    else:
        acc = case.runnable.accuracy()
    return acc if s.tta is None else tta.with_time_to_accuracy(acc, case.runnable, s.tta)


def finish_info(info: dict[str, Any]) -> dict[str, Any]:
    """Resolve the collected reasons into ``absent`` once every field is in."""
    reasons = info.pop("_reasons", {})
    for key in [k for k in info if k.startswith("_")]:  # private to the worker, e.g. per-sample "_correct"
        del info[key]
    info["absent"] = absent_reasons(info, reasons)
    return info


# ------------------------------------------------------------------------------------------
# the pipeline


def run_case(req: CaseRequest, ranks: Ranks, stage: Stage) -> Outcome:
    """Run one case that passed the preflight (``bench.preflight``); a refusal when it is built,
    or when its measured warm-up step projects it past the timeout, becomes ``skipped``.
    Exceptions propagate to the caller, which records them with the stage they happened in."""
    s, peak = req.settings, req.peak
    try:
        stage("build")
        case = build_case(req.family, req.size, req.factory(), s.device, s.world_size, s.batch_size, s.data_dir,
                          s.seed, req.phase, budget_level=s.tier_spec.accuracy_budget)  # fmt: skip
    except Unsupported as e:
        return Outcome("skipped", request_not_run(req, "skipped", str(e), "build"))
    peaks: dict[str, float] = {}
    try:
        stage("warm-up")
        warm = warm_up(case, s.tier_spec, ranks) if not req.run_once else 0.0
        rounds = plan_rounds(req, case, warm)
        stage("timing")
        times, cuda_events, own_times, telemetry = time_case(req, case, rounds, ranks)
        if peak and case.flops_per_step / statistics.median(times) / 1e12 > peak:
            # the case beat the peak: the probe ran slow (another process, a clock ramping up)
            peak = max(peak, ranks.broadcast(matmul_peak_tflops(case.device, case.compute_dtype)))
            peaks[peak_key(case.device, case.compute_dtype)] = peak
        stage("metrics")
        info = assemble(req, case, times, cuda_events, own_times, telemetry, peak, ranks)
        stage("accuracy")
        acc = accuracy_fields(req, case)
        info["_reasons"].update(acc.pop("_reasons", {}))
        info.update(acc)
    except Refused as e:
        return Outcome("skipped", request_not_run(req, "skipped", str(e), "warm-up"))
    finally:
        case.close()
    return Outcome("ok", finish_info(info), times, peaks)
