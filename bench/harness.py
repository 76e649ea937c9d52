"""One benchmark, end to end: build the case, time it with pytest-benchmark while the sampler
runs, derive the metrics of the result schema, measure accuracy, stream the result."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import pytest
import torch

from reports.metrics import SCHEMA
from workloads import Unsupported, build_case, get_variant
from workloads.probe import matmul_peak_tflops
from workloads.registry import accuracy_flops, estimate_accuracy_seconds, estimate_case_seconds, parse_device

from .distributed import Ranks
from .machine import machine_facts
from .results import ResultsStream
from .settings import Settings
from .telemetry import Sampler


class Session:
    """State shared by the benchmarks of one pytest session."""

    def __init__(self, settings: Settings, stream: ResultsStream | None = None, ranks: Ranks | None = None):
        self.settings = settings
        self.stream = stream
        self.ranks = ranks or Ranks()  # world size 1: every collective is a no-op
        self.rank_exits: list = []  # (rank, exit code, log) of the ranks rank 0 started
        self.peaks: dict[str, float] = {}
        self.fp32_accuracy: dict[tuple[str, str, int], float] = {}
        self.results: list[dict] = []

    def peak_tflops(self, device: torch.device, dtype: torch.dtype, reprobe: bool = False) -> float:
        """Matmul probe, once per session per device and dtype. ``reprobe`` runs it again and
        keeps the larger value: a case that beat the peak shows the first probe ran slow
        (another process on the machine, a clock ramping up)."""
        key = f"{device}:{str(dtype).removeprefix('torch.')}"
        if key not in self.peaks or reprobe:
            # distributed: rank 0's probe on every rank, so estimate-based skips agree
            probed = self.ranks.broadcast(matmul_peak_tflops(device, dtype))
            self.peaks[key] = max(self.peaks.get(key, 0.0), probed)
        return self.peaks[key]

    def machine_info(self) -> dict:
        return machine_facts(self.settings.device, self.peaks)

    def record(self, item: pytest.Item, extra_info: dict, stats: dict | None) -> None:
        self.results.append(extra_info)
        if self.stream is not None:
            group = f"{extra_info['family']}-{extra_info['size']}"
            self.stream.benchmark(item.name, item.nodeid, group, extra_info, stats)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc)


def absent_info(keys: dict[str, str]) -> dict:
    """The null metrics and their reasons, for a result that has no measurement."""
    return {**{k: None for k in keys}, "absent": dict(keys)}


def not_run_info(family: str, size: str, variant: str, device: str, world_size: int, status: str, reason: str) -> dict:
    return {
        "schema": SCHEMA,
        "id": f"{family}-{size}-{variant}",
        "family": family,
        "size": size,
        "variant": variant,
        "device": device,
        "world_size": world_size,
        "status": status,
        "reason": reason,
    }


def spin_cpu(seconds: float) -> None:
    """Busy this thread for ``seconds``: CPU work after the step, like a slower kernel.
    It watches the vDSO wall clock; a per-thread CPU clock costs a system call per read,
    and a loop of system calls disturbs the caches and TLB enough to slow the next step."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed_step(case, slowdown: float = 0.0) -> tuple[Callable[[], None], list[float]]:
    """The callable pytest-benchmark times. On CUDA it also records each step with CUDA
    events; the event times become the reported step times (host timer otherwise).
    ``slowdown`` (``--inject-slowdown``) adds that fraction of each step's own time to it,
    inside the timed call: CPU work after the step on a CPU, an idle GPU before the end
    event on CUDA."""
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
        case.trainer.train_step(*case.batch)
        if slowdown:  # idle the GPU between the step's kernels and the end event
            torch.cuda.synchronize(case.device)
            time.sleep(slowdown * (time.perf_counter() - host_start))
        end.record()
        end.synchronize()
        event_times.append(start.elapsed_time(end) / 1e3)

    return step, event_times


def warm_up(case, tier, ranks: Ranks) -> float:
    """Untimed steps before timing: ``tier.warmup_rounds``, then more until ``tier.warmup_s``
    has passed. Returns the steady step time (median of the steps after the first, which
    pays for first-touch allocation); it sets the round count and the case-timeout
    projection. Distributed: every rank runs the same number of steps and gets the slowest
    rank's estimate."""

    def run(n: int) -> list[float]:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            case.step()
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


def measured_info(case, step_times: list[float], cuda_events: bool, peak: float | None) -> dict:
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


def throughput_metrics(case, step_times: list[float], peak: float | None) -> dict:
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


def accuracy_metrics(case, session: Session) -> dict:
    s = session.settings
    if not s.accuracy:
        return absent_info({"accuracy": "disabled with --no-accuracy"}) | {"accuracy_metric": "top1"}
    info = case.accuracy()
    key = (case.family, case.size, case.world_size)
    if case.variant == "fp32":
        session.fp32_accuracy[key] = info["accuracy"]
    ref = session.fp32_accuracy.get(key)
    if ref is None:
        info["accuracy_reference"] = info["accuracy_delta"] = None
        info["absent"] = {
            k: f"no fp32 accuracy for {case.family}-{case.size} in this session"
            for k in ("accuracy_reference", "accuracy_delta")
        }
    else:
        info["accuracy_reference"] = ref
        info["accuracy_delta"] = info["accuracy"] - ref
    return info


def run_benchmark(item: pytest.Item, benchmark, session: Session, family: str, size: str, variant: str) -> dict:
    """Run one case through pytest-benchmark; return (and record) its extra_info."""
    s = session.settings
    tier = s.tier_spec
    benchmark.group = f"{family}-{size}"

    def refuse(status: str, reason: str) -> None:
        info = not_run_info(family, size, variant, s.device, s.world_size, status, reason)
        session.record(item, info, None)
        pytest.skip(f"{status}: {reason}" if status != "skipped" else reason)

    skip_reason = None
    try:
        var = get_variant(variant)
        device = parse_device(s.device)
        var.check(device, s.world_size)
    except Unsupported as e:
        skip_reason = str(e)
    skip_reason = session.ranks.agree(skip_reason)  # distributed: every rank skips together
    if skip_reason is not None:
        refuse("skipped", skip_reason)
    peak = session.peak_tflops(device, var.compute_dtype) if var.phase == "train" else None
    if peak:
        steps = tier.warmup_rounds + tier.min_rounds
        estimate = estimate_case_seconds(family, size, s.batch_size, peak, steps)
        if s.accuracy:
            estimate += estimate_accuracy_seconds(family, size, peak)
        if estimate > s.timeout_s:
            refuse(
                "skipped",
                f"estimated at least {estimate:.0f}s of compute at the measured "
                f"{str(var.compute_dtype).removeprefix('torch.')} peak of {peak * 1e3:.3g} GFLOP/s "
                f"on {s.device}, over --case-timeout {s.timeout_s:g}s",
            )

    try:
        case = build_case(family, size, variant, s.device, s.world_size, s.batch_size, s.data_dir, s.seed)
    except Unsupported as e:
        refuse("skipped", str(e))
    except Exception as e:
        if is_oom(e):
            refuse("oom", f"building the case: {e}")
        session.record(item, not_run_info(family, size, variant, s.device, s.world_size, "error", repr(e)), None)
        raise

    try:
        # warm-up, untimed for the result; it sets how many rounds fill the tier's budget
        warm = warm_up(case, tier, session.ranks)  # distributed: the same on every rank
        rounds = int(min(tier.max_rounds, max(tier.min_rounds, tier.round_budget_s / max(warm, 1e-9))))
        # the peak-based estimate is a lower bound; the measured step refines it
        projected = warm * rounds
        if s.accuracy:
            projected += warm * accuracy_flops(family, size) * case.world_size / case.flops_per_step
        if projected > s.timeout_s:
            case.close()
            refuse(
                "skipped",
                f"projected {projected:.0f}s from the measured warm-up step of {warm:.3g}s "
                f"({rounds} timed rounds{' and the accuracy task' if s.accuracy else ''}), "
                f"over --case-timeout {s.timeout_s:g}s",
            )

        step, event_times = timed_step(case, s.inject_slowdown)
        step, rank_times = session.ranks.lockstep(step)  # distributed: a barrier ends each step
        with Sampler(s.device, interval_s=s.telemetry_interval_s) as sampler:
            benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=0)
        step_times = event_times or list(benchmark.stats.stats.data)
        if session.ranks.active:  # distributed: each round's slowest rank
            step_times = session.ranks.slowest_per_round(event_times or rank_times)
        if peak and case.flops_per_step / statistics.median(step_times) / 1e12 > peak:
            peak = session.peak_tflops(case.device, case.compute_dtype, reprobe=True)
        info = measured_info(case, step_times, bool(event_times), peak)
        telemetry = sampler.result.to_extra_info(samples=case.samples_per_step * len(step_times))
        absent = dict(telemetry.pop("absent", {}))
        info.update(telemetry)
        info["model_state_bytes"] = case.trainer.model_state_bytes()
        info["model_state_bytes_predicted"] = case.variant_obj.predicted_state_bytes(case.params, case.world_size)
        info["model_bytes"] = case.model_bytes()
        variant_info = getattr(case.trainer, "extra_info", None)  # variant keys (ZeRO: paper formula ...)
        if variant_info is not None:
            more = variant_info()
            absent.update(more.pop("absent", {}))
            info.update(more)
        if session.ranks.active:  # distributed: every rank's memory and state; the largest in the usual keys
            more = session.ranks.per_rank_info(info, case.device, event_times or rank_times)
            absent.update(more.pop("absent"))
            info.update(more)
            if info["peak_mem_bytes"] is not None:
                absent.pop("peak_mem_bytes", None)
        case.close()
        acc = accuracy_metrics(case, session)
        absent.update(acc.pop("absent", {}))
        info.update(acc)
        if info["tokens_per_s"] is None:
            absent["tokens_per_s"] = f"{family} is not a sequence model"
        if info["peak_tflops"] is None:
            absent.update({"peak_tflops": "no matmul probe for this phase", "mfu": "no peak to compare with"})
        if info["model_state_bytes_predicted"] is None:
            absent["model_state_bytes_predicted"] = f"no formula for variant {variant}"
        info["absent"] = absent
    except Exception as e:
        if is_oom(e):
            refuse("oom", str(e))
        session.record(item, not_run_info(family, size, variant, s.device, s.world_size, "error", repr(e)), None)
        raise
    benchmark.extra_info.update(info)
    session.record(item, info, benchmark.stats.stats.as_dict())
    return info
