"""Before a case starts: refuse what cannot run here, or what the measured matmul peak says
would outlast the case timeout, without building anything. It runs where the session runs (the
pytest process), so a refused case costs no worker; the peak itself is probed by the executor
once per device and compute dtype."""

from __future__ import annotations

from collections.abc import Callable

import torch

from workloads import Unsupported
from workloads.probe import DTYPES
from workloads.registry import check_case, estimate_case_seconds, parse_device, variant_factory
from workloads.variants import Variant

from .distributed import Ranks
from .pipeline import Refused, peak_key
from .settings import CaseSpec, Settings

# (device, dtype name) -> TFLOP/s, measured where the cases run
Probe = Callable[[str, str], float]


def preflight(spec: CaseSpec, s: Settings, ranks: Ranks, peaks: dict[str, float], probe: Probe) -> float | None:
    """Raise Refused with the reason, or return the matmul peak of the case's device and
    compute dtype (None where no probe exists for the dtype, int8 say). New probes go into
    ``peaks``."""
    reason, var, device = None, None, None
    try:
        var, device = check_spec(spec, s)
    except Unsupported as e:
        reason = str(e)
    reason = ranks.agree(reason)  # under a launcher: every rank skips together
    if reason is not None:
        raise Refused(reason)
    dtype = str(var.compute_dtype).removeprefix("torch.")
    if dtype not in DTYPES:
        return None
    key = peak_key(device, var.compute_dtype)
    if key not in peaks:
        peaks[key] = probe(str(device), dtype)
    peak = peaks[key]
    reason = over_timeout(spec, s, peak, dtype)
    if reason is not None:
        raise Refused(reason)
    return peak


def check_spec(spec: CaseSpec, s: Settings) -> tuple[Variant, torch.device]:
    """The case's variant and device; Unsupported with the reason when the device cannot run it."""
    var = variant_factory(spec.variant)()
    device = parse_device(s.device)
    check_case(var, spec.phase, device, s.world_size)
    return var, device


def lower_bound_seconds(spec: CaseSpec, s: Settings, peak: float) -> float:
    """The least compute a case needs at ``peak`` TFLOP/s: its warm-up and minimum timed rounds,
    plus the accuracy stage's FLOPs (the accuracy task, and time-to-accuracy runs at their worst)."""
    tier = s.tier_spec
    steps = tier.warmup_rounds + tier.min_rounds
    estimate = estimate_case_seconds(spec.family, spec.size, spec.phase, s.batch_size, peak, steps)
    estimate += s.accuracy_flops(spec.family, spec.size, spec.phase) / (peak * 1e12)
    return estimate


def over_timeout(spec: CaseSpec, s: Settings, peak: float, dtype: str, source: str = "measured") -> str | None:
    """Why the case is refused before it is built (its lower bound is over the case timeout), or None."""
    estimate = lower_bound_seconds(spec, s, peak)
    if estimate <= s.timeout_s:
        return None
    return (
        f"estimated at least {estimate:.0f}s of compute at the {source} {dtype} peak of "
        f"{peak * 1e3:.3g} GFLOP/s on {s.device}, over --case-timeout {s.timeout_s:g}s"
    )
