"""Before a case starts: refuse what cannot run here, or what the measured matmul peak says
would outlast the case timeout, without building anything. It runs where the session runs (the
pytest process), so a refused case costs no worker; the peak itself is probed by the executor
once per device and compute dtype."""

from __future__ import annotations

from collections.abc import Callable

from workloads import Unsupported
from workloads.probe import DTYPES
from workloads.registry import check_case, estimate_case_seconds, parse_device, variant_factory

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
        var = variant_factory(spec.variant)()
        device = parse_device(s.device)
        check_case(var, spec.phase, device, s.world_size)
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
    tier = s.tier_spec
    steps = tier.warmup_rounds + tier.min_rounds
    estimate = estimate_case_seconds(spec.family, spec.size, spec.phase, s.batch_size, peak, steps)
    estimate += s.accuracy_flops(spec.family, spec.size, spec.phase) / (peak * 1e12)
    if estimate > s.timeout_s:
        raise Refused(
            f"estimated at least {estimate:.0f}s of compute at the measured {dtype} peak of "
            f"{peak * 1e3:.3g} GFLOP/s on {s.device}, over --case-timeout {s.timeout_s:g}s"
        )
    return peak
