"""``--plan``: the matrix that would run, each case's predicted skip (with the reason) or its
estimated wall time, and the total, without running anything.

A case's estimate, first rule that applies:

1. **The variant check** (``bench.preflight.check_spec``, as the preflight runs it): a device
   that cannot run the variant skips the case, at no cost.
2. **Earlier runs** in ``--results-dir`` with the same tier, case timeout, accuracy setting and
   batch size (``bench.history``): the median of their wall times, and the newest one's outcome
   (a case skipped then is predicted skipped, with that reason).
3. **The model**: the preflight's own lower bound at the matmul peak (``over_timeout``: over
   the case timeout, skipped before it is built); a step time, measured in an earlier run at the
   same batch size or else ``flops_per_step / (peak * EFFICIENCY[family])``; the bench's own
   rule for the timed rounds and the projection from the warm-up step (``bench.timing.
   plan_rounds``: over the timeout, skipped after its warm-up, which it still costs; the
   budget's ceiling of rounds, where ``--target-ci`` may stop sooner); then
   ``overhead + warm-up + rounds * step + accuracy task at the step's FLOP rate``.

An inference case adds what its build costs before any step: the training its compressed variant
runs (fine-tunes, distillation students: ``prepare_flops``) and ``COMPILE_S`` for a variant that
compiles its forward (``preparation``, rule 3 only); and the first case of a family and size
whose trained reference is not in the cache, whatever its rule, that reference's training
(``charge_references``). Training runs at the task's rate: peak times ``TASK_EFFICIENCY``.

Peaks come from the newest earlier run, else ``NOMINAL_PEAKS`` (this project's 2-core
calibration VM, under the load it had: a first estimate on another machine is rough). Fixed
costs (session start, a case's worker start and build) are seconds on the calibration VM scaled
by how much slower its float32 peak is than this machine's (``slowness``). The session adds the
peak probes (8 matmuls of ``PROBE_N``^3 per device and dtype).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from types import SimpleNamespace

from workloads import Unsupported
from workloads.probe import DTYPES
from workloads.registry import case_context, parse_device, tier_batch_size, variant_factory, workload

from .history import History, Past
from .preflight import check_spec, over_timeout
from .settings import CaseSpec, Settings
from .timing import Refused, plan_rounds

# Calibration (README "Plan"): the project's 2-core AVX2 VM, quiet. Peaks: the sessions' probes
# (float32 of a --no-accuracy smoke run at xs and s; bfloat16, float16 of a full smoke run);
# EFFICIENCY: fp32's achieved FLOP rate over that float32 peak, geomean over xs and s, two runs.
NOMINAL_PEAKS = {"cpu:float32": 0.137, "cpu:bfloat16": 0.018, "cpu:float16": 0.0132}
NOMINAL_CUDA_PEAKS = {"float32": 20.0, "bfloat16": 100.0, "float16": 100.0}
CALIBRATION_PEAK = NOMINAL_PEAKS["cpu:float32"]
EFFICIENCY = {"dense": 0.35, "cnn": 0.15, "transformer": 0.36}  # achieved / matmul peak, geomean
CASE_OVERHEAD_S = 2.0  # worker start, build (model, data), metrics, results: calibration seconds
SESSION_START_S = 12.0  # pytest and torch, the fork server's imports, the summary: calibration seconds
PROBE_N = {"cpu": 1024, "cuda": 4096}
# compiling inference variants: calibration seconds of export, calibration and compile (int8's
# prepare_s) or of the compiled model's recompiles (latency at batch 1, evaluation batches): the
# median of dense s and m and transformer s and m at the standard tier
COMPILE_S = {"int8": 60.0, "compile": 40.0}
# the accuracy task's training (references, fine-tunes, students) over the float32 peak: its batch
# is not the throughput batch. Geomean of the standard tier's on that VM: dense s and m 0.29,
# transformer s 0.36 and m 0.58 (cnn: not measured, the throughput figure)
TASK_EFFICIENCY = {"dense": 0.29, "cnn": 0.15, "transformer": 0.45}


@dataclasses.dataclass(frozen=True)
class Estimate:
    """What ``--plan`` predicts for one case."""

    spec: CaseSpec
    runs: bool  # False: predicted skip
    seconds: float  # its expected wall time (a skip after the warm-up still costs that)
    reason: str | None = None  # why it is skipped
    basis: str = "model"  # "variant check", "earlier run", "median of N earlier runs", "model", ...
    step_s: float | None = None
    dtype: str | None = None  # the compute dtype, whose peak the session probes (None: no probe)
    prepare_s: float = 0.0  # of ``seconds``: training and compiling in its build (inference cases)
    prepare_what: str | None = None


@dataclasses.dataclass
class Plan:
    settings: Settings
    estimates: list[Estimate]
    startup_s: float
    probes_s: float
    history: History

    @property
    def total_s(self) -> float:
        return self.startup_s + self.probes_s + sum(e.seconds for e in self.estimates)


def peak_for(device: str, dtype: str, peaks: dict[str, float]) -> float | None:
    """TFLOP/s of a device and dtype: measured before, else nominal; None without a probe (int8)."""
    if dtype not in DTYPES:
        return None
    key = f"{device}:{dtype}"
    if key in peaks:
        return peaks[key]
    if device.startswith("cuda"):
        return NOMINAL_CUDA_PEAKS[dtype]
    return NOMINAL_PEAKS.get(key)


def slowness(s: Settings, peaks: dict[str, float]) -> float:
    """How much slower this machine's float32 matmul is than the calibration VM's (fixed costs
    scale with it); 1 on the calibration VM, and for GPUs, whose host side it does not tell."""
    if s.device.startswith("cuda"):
        return 1.0
    peak = peak_for(s.device, "float32", peaks) or CALIBRATION_PEAK
    return CALIBRATION_PEAK / peak


def flops_per_step(spec: CaseSpec, s: Settings) -> float:
    bs = tier_batch_size(spec.family, s.batch_size)
    return float(workload(spec.family, spec.size).flops_per_sample(spec.phase) * bs * s.world_size)


def warm_up_seconds(s: Settings, step: float) -> float:
    """``pipeline.warm_up``: the tier's warm-up rounds, then more until its warm-up time."""
    tier = s.tier_spec
    return max(max(tier.warmup_rounds, 1) * step, tier.warmup_s)


def from_past(spec: CaseSpec, past: Sequence[Past]) -> Estimate:
    """Earlier runs with these settings: the newest one's outcome, the median of their wall times
    (a shared machine's speed moves from run to run)."""
    info, wall = past[0].info, statistics.median(p.wall_s or 0.0 for p in past)
    basis = "earlier run" if len(past) == 1 else f"median of {len(past)} earlier runs"
    if info.get("status") == "skipped":
        return Estimate(spec, False, wall, str(info.get("reason")), basis)
    return Estimate(spec, True, wall, None, basis, info.get("step_time_s"))


def with_dtype(e: Estimate, dtype: str | None) -> Estimate:
    return dataclasses.replace(e, dtype=dtype if dtype in DTYPES else None)


def model(spec: CaseSpec, s: Settings, history: History, peak: float | None, slow: float) -> Estimate:
    """Rule 3 of the module docstring."""
    flops = flops_per_step(spec, s)
    measured = history.step_time(spec, s, tier_batch_size(spec.family, s.batch_size))
    if measured is None and not peak:
        return Estimate(spec, True, CASE_OVERHEAD_S * slow, None, "model, no peak for its dtype")
    step = measured or flops / (peak * 1e12 * EFFICIENCY.get(spec.family, 0.05))  # type: ignore[operator]
    basis = "model, step measured before" if measured else "model"
    overhead, warm = CASE_OVERHEAD_S * slow, warm_up_seconds(s, step)
    case = SimpleNamespace(family=spec.family, size=spec.size, phase=spec.phase, data_ranks=s.world_size,
                           flops_per_step=flops)  # fmt: skip
    try:
        rounds = plan_rounds(s, case, step).max_rounds  # the budget's ceiling (--target-ci may stop sooner)
    except Refused as refused:
        return Estimate(spec, False, overhead + warm, str(refused), basis, step)
    accuracy = step * s.accuracy_flops(spec.family, spec.size, spec.phase) * s.world_size / flops
    return Estimate(spec, True, overhead + warm + rounds * step + accuracy, None, basis, step)


def preparation(spec: CaseSpec, s: Settings, variant, peaks: dict[str, float]) -> tuple[float, list[str]]:
    """Seconds an inference case's variant spends in its build (fine-tunes, students, compiles),
    and on what; the reference's training is charged apart (``charge_references``)."""
    if spec.phase != "infer":
        return 0.0, []
    own = getattr(variant, "prepare_flops", None)
    flops = own(plan_context(spec.family, spec.size, variant, s)) if own is not None else 0.0
    seconds, what = task_seconds(spec.family, flops, s, peaks), ["fine-tunes or trains students"] if flops else []
    if spec.variant in COMPILE_S:
        seconds += COMPILE_S[spec.variant] * slowness(s, peaks)
        what.append("compiles")
    return seconds, what


def plan_context(family: str, size: str, variant, s: Settings):
    """The case's context as its worker would build it (no model), at the tier's accuracy budget."""
    return case_context(family, size, variant, "infer", parse_device(s.device), 1, s.batch_size, s.data_dir, s.seed,
                        None, s.tier_spec.accuracy_budget)  # fmt: skip


def task_seconds(family: str, flops: float, s: Settings, peaks: dict[str, float]) -> float:
    """Seconds of accuracy-task training of ``flops`` at fp32's peak times ``TASK_EFFICIENCY``."""
    peak = peak_for(str(parse_device(s.device)), "float32", peaks) or CALIBRATION_PEAK
    return flops / (peak * 1e12 * TASK_EFFICIENCY.get(family, 0.05))


def charge_references(s: Settings, estimates: list[Estimate], peaks: dict[str, float]) -> list[Estimate]:
    """The first inference case of each family and size that is built, where the trained reference
    is not in the cache, trains it: its estimate gains that training, whatever it was based on."""
    from workloads.reference import is_cached, reference_flops

    fp32, seen, out = variant_factory("fp32")(), set(), []
    for e in estimates:
        pair = (e.spec.family, e.spec.size)
        built = e.runs or e.seconds > 0  # a skip at no cost builds nothing
        if e.spec.phase == "infer" and built and pair not in seen:
            seen.add(pair)
            ctx = plan_context(*pair, fp32, s)
            if not is_cached(ctx):
                train = task_seconds(e.spec.family, reference_flops(ctx), s, peaks)
                what = ", ".join(["trains the reference", *filter(None, [e.prepare_what])])
                e = dataclasses.replace(e, seconds=e.seconds + train, prepare_s=e.prepare_s + train, prepare_what=what)
        out.append(e)
    return out


def estimate(spec: CaseSpec, s: Settings, history: History, peaks: dict[str, float]) -> Estimate:
    """The estimate of one case (the module docstring's rules, in order)."""
    try:
        variant, device = check_spec(spec, s)
    except Unsupported as e:
        return Estimate(spec, False, 0.0, str(e), "variant check")
    dtype = str(variant.compute_dtype).removeprefix("torch.")
    past = history.same_settings(spec, s)
    if past:
        return with_dtype(from_past(spec, past), dtype)
    peak = peak_for(str(device), dtype, peaks)
    if peak:
        reason = over_timeout(spec, s, peak, dtype, "measured" if f"{device}:{dtype}" in peaks else "nominal")
        if reason is not None:
            return with_dtype(Estimate(spec, False, 0.0, reason, "model"), dtype)
    e = model(spec, s, history, peak, slowness(s, peaks))
    prepare_s, what = preparation(spec, s, variant, peaks)
    if prepare_s:
        e = dataclasses.replace(e, seconds=e.seconds + prepare_s, prepare_s=prepare_s, prepare_what=", ".join(what))
    return with_dtype(e, dtype)


def probe_seconds(s: Settings, estimates: Sequence[Estimate], peaks: dict[str, float]) -> float:
    """The peak probes of the dtypes the cases to run need: 8 matmuls at the probe's size."""
    n = PROBE_N["cuda" if s.device.startswith("cuda") else "cpu"]
    device, total = str(parse_device(s.device)), 0.0
    for dtype in sorted({e.dtype for e in estimates if e.dtype is not None}):
        peak = peak_for(device, dtype, peaks)
        if peak:
            total += 8 * 2 * n**3 / (peak * 1e12)
    return total


def make_plan(s: Settings, matrix: Sequence[CaseSpec], history: History) -> Plan:
    """Every case's estimate, the session's start-up and its peak probes."""
    peaks = dict(history.peaks)
    estimates = charge_references(s, [estimate(spec, s, history, peaks) for spec in matrix], peaks)
    slow = slowness(s, peaks)
    return Plan(s, estimates, SESSION_START_S * slow, probe_seconds(s, estimates, peaks), history)


# ------------------------------------------------------------------------------------------
# output


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = max(0, math.ceil(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _line(i: int, width: int, e: Estimate) -> str:
    head = f"{i:>3}  {e.spec.id:<{width}}  {e.spec.phase:<5}"
    if e.runs:
        step = f", step ~{e.step_s:.3g}s" if e.step_s else ""
        build = f"; {duration(e.prepare_s)} of it before timing: {e.prepare_what}" if e.prepare_s >= 1 else ""
        return f"{head}  {duration(e.seconds):>7}  ({e.basis}{step}{build})"
    cost = f" after {duration(e.seconds)}" if e.seconds >= 1 else ""
    return f"{head}  {'skip':>7}  {e.reason} ({e.basis}{cost})"


def render_plan(plan: Plan) -> str:
    s = plan.settings
    width = max((len(e.spec.id) for e in plan.estimates), default=10)
    known = sum("earlier run" in e.basis for e in plan.estimates)
    where = f"{len(plan.history.runs)} earlier run(s) in {s.results_dir}" if plan.history.runs else "no earlier run"
    lines = [
        f"archbench plan: tier {s.tier}, device {s.device}, world size {s.world_size}, case timeout"
        f" {s.timeout_s:g}s, accuracy {'on' if s.accuracy else 'off'}",
        f"estimates: {where}; {known} case(s) from an earlier run with these settings, the others from the"
        " model (README: Plan)",
        "",
        *(_line(i, width, e) for i, e in enumerate(plan.estimates, start=1)),
        "",
    ]
    runs = [e for e in plan.estimates if e.runs]
    skipped = len(plan.estimates) - len(runs)
    lines.append(
        f"total: {len(plan.estimates)} cases, {len(runs)} to run, {skipped} predicted skipped;"
        f" about {duration(plan.total_s)} (start-up {duration(plan.startup_s)},"
        f" peak probes {duration(plan.probes_s)})"
    )
    return "\n".join(lines) + "\n"
