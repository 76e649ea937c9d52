"""One case, end to end, where it runs (a worker process, or the pytest process under an
external launcher): preflight, build, warm up, time, assemble the result, accuracy.

``run_case(request, ranks, stage) -> Outcome`` is the whole pipeline; ``stage(name)`` is called
as each stage begins (the supervisor's watchdog names the stage a killed case was in). Nothing
crosses a pipe inside the timed region: the step times travel back in the Outcome.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from reports.metrics import METRICS
from reports.schema import SCHEMA
from workloads import Unsupported, accuracy, tta
from workloads.probe import matmul_peak_tflops
from workloads.registry import VariantFactory, build_case

from .distributed import Ranks
from .faults import with_fault
from .settings import CaseSpec, Settings, use_threads
from .telemetry import Sampler
from .timing import Refused, RoundPlan, latency, plan_rounds, time_rounds, timed_step, uncertainty, warm_up

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
    deadline: float | None = None  # time.monotonic() of the watchdog's kill (None: no watchdog)

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
# timing


@dataclasses.dataclass
class Timed:
    """What the timed rounds measured."""

    times: list[float]  # the reported step times (distributed: each round's slowest rank)
    cuda_events: bool
    own_times: list[float]  # this rank's own (distributed)
    stop: str  # why timing stopped
    telemetry: dict[str, Any]


def time_case(req: CaseRequest, case, plan: RoundPlan, ranks: Ranks) -> Timed:
    """The timed rounds with the sampler running."""
    s = req.settings
    step, event_times = timed_step(case, s.inject_slowdown)
    step, own_times = ranks.lockstep(with_fault(step, req.fault, case.device))  # distributed: a barrier ends each
    with Sampler(s.device, interval_s=s.telemetry_interval_s, session_root=req.session_root or None) as sampler:
        host_times, stop = time_rounds(step, plan, req.timer, req.disable_gc, ranks)
    times = event_times or host_times
    if ranks.active:  # distributed: each round's slowest rank
        times = ranks.slowest_per_round(event_times or own_times)
    telemetry = sampler.result.to_extra_info(samples=case.samples_per_step * len(times))
    return Timed(times, bool(event_times), own_times, stop, telemetry)


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
        "torch_threads": torch.get_num_threads(),  # the timed process's own (a rank's share, --threads)
        **throughput_metrics(case, step_times, peak),
    }


# Why a metric can be absent for reasons of the case itself (other reasons come from the sources).
def default_absent(info: dict[str, Any]) -> dict[str, str]:
    no_state = f"no training state in the {info['phase']} phase"
    no_formula = f"no formula for variant {info['variant']}" if info["phase"] == "train" else no_state
    return {
        "tokens_per_s": f"{info['family']} is not a sequence model",
        "peak_tflops": f"no matmul probe for {info.get('dtype')}",
        "mfu": "no peak to compare with",
        "model_state_bytes": no_state,
        "model_state_bytes_predicted": no_formula,
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


def assemble(req: CaseRequest, case, timed: Timed, peak: float | None, ranks: Ranks) -> dict[str, Any]:
    """The result fields of a measured case, with every null metric's reason (``absent``)."""
    info = measured_info(case, timed.times, timed.cuda_events, peak)
    bounds, reasons = uncertainty(timed.times, req.settings.stable_threshold)
    info |= bounds | {"timing_stop": timed.stop}
    telemetry = dict(timed.telemetry)
    reasons.update(telemetry.pop("absent", {}))
    info.update(telemetry)
    runnable = case.runnable
    info["model_state_bytes"] = runnable.model_state_bytes()
    own_prediction = getattr(runnable, "predicted_state_bytes", None)  # a trainer that knows its shard
    info["model_state_bytes_predicted"] = (
        own_prediction() if own_prediction else case.variant_obj.predicted_state_bytes(case.params, case.world_size)
    )
    info["model_bytes"] = runnable.model_bytes()
    more = runnable.extra_info()
    reasons.update(more.pop("absent", {}))
    info.update(more)
    if ranks.active:  # distributed: every rank's memory and state; the largest in the usual keys
        more = ranks.per_rank_info(info, case.device, timed.own_times)
        reasons.update(more.pop("absent"))
        info.update(more)
    info["_reasons"] = reasons
    return info


def accuracy_fields(req: CaseRequest, case) -> dict[str, Any]:
    """The accuracy fields the runnable measured, and its time to accuracy with
    --time-to-accuracy (private keys such as ``_correct`` stay until ``finish_info``)."""
    s = req.settings
    if not s.accuracy:
        acc = no_accuracy("disabled with --no-accuracy")
    else:
        try:
            with accuracy.deadline(req.deadline):
                acc = case.runnable.accuracy()
        except accuracy.OutOfTime as e:
            acc = no_accuracy(str(e))
    return acc if s.tta is None else tta.with_time_to_accuracy(acc, case.runnable, s.tta)


def no_accuracy(reason: str) -> dict[str, Any]:
    """The accuracy fields of a case that has none, with the reason."""
    return {"accuracy": None, "accuracy_metric": "top1", "bits_per_byte": None,
            "_reasons": {"accuracy": reason, "bits_per_byte": reason}}  # fmt: skip


def finish_info(info: dict[str, Any]) -> dict[str, Any]:
    """Resolve the collected reasons into ``absent`` once every field is in; keys private to the
    worker (``_``: the per-sample ``_correct`` of the accuracy task ...) are dropped."""
    reasons = info.pop("_reasons", {})
    for key in [k for k in info if k.startswith("_")]:
        del info[key]
    info["absent"] = absent_reasons(info, reasons)
    return info


# ------------------------------------------------------------------------------------------
# the pipeline


def build(req: CaseRequest, stage: Stage):
    """Stage ``build``: the case, or Refused where it cannot run here."""
    s = req.settings
    stage("build")
    use_threads(s.threads)  # a fork server started without them (another session's) forks with its own
    try:
        return build_case(req.family, req.size, req.factory(), s.device, s.world_size, s.batch_size, s.data_dir,
                          s.seed, req.phase, budget_level=s.tier_spec.accuracy_budget)  # fmt: skip
    except Unsupported as e:
        raise Refused(str(e)) from None


def conclude(req: CaseRequest, case, timed: Timed, ranks: Ranks, stage: Stage) -> Outcome:
    """After the timed rounds: the result's metrics, latency (inference) and accuracy."""
    peak, peaks = req.peak, {}
    if peak and case.flops_per_step / statistics.median(timed.times) / 1e12 > peak:
        # the case beat the peak: the probe ran slow (another process, a clock ramping up)
        peak = max(peak, ranks.broadcast(matmul_peak_tflops(case.device, case.compute_dtype)))
        peaks[peak_key(case.device, case.compute_dtype)] = peak
    stage("metrics")
    info = assemble(req, case, timed, peak, ranks)
    if case.phase == "infer" and not req.run_once:
        stage("latency")
        info.update(latency(case.runnable.latency_step(), case.device, req.settings.tier_spec.round_budget_s / 2))
    stage("accuracy")
    acc = accuracy_fields(req, case)
    info["_reasons"].update(acc.pop("_reasons", {}))
    info.update(acc)
    return Outcome("ok", finish_info(info), timed.times, peaks)


def run_case(req: CaseRequest, ranks: Ranks, stage: Stage) -> Outcome:
    """Run one case that passed the preflight (``bench.preflight``); a refusal when it is built,
    or when its measured warm-up step projects it past the timeout, becomes ``skipped``.
    Exceptions propagate to the caller, which records them with the stage they happened in."""
    case = None
    try:
        case = build(req, stage)
        stage("warm-up")
        warm = warm_up(case, req.settings.tier_spec, ranks, deadline=req.deadline) if not req.run_once else 0.0
        plan = plan_rounds(req.settings, case, warm, req.run_once)
        stage("timing")
        return conclude(req, case, time_case(req, case, plan, ranks), ranks, stage)
    except Refused as e:
        where = "build" if case is None else "warm-up"
        return Outcome("skipped", request_not_run(req, "skipped", str(e), where))
    finally:
        if case is not None:
            case.close()
