"""The result of one sampled window, and the ``archbench/1`` keys it fills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .contention import Contention


@dataclass
class TelemetryResult:
    """What a :class:`Sampler` measured over one window. ``None`` means not measured; the
    reason is in ``absent`` (or ``energy_reason`` for energy)."""

    duration_s: float
    n_samples: int  # periodic samples delivered (the opening and closing readings excluded)
    requested_samples: int  # floor(duration_s / interval_s)
    peak_mem_bytes: int | None
    mem_source: str  # "cuda-allocator" | "rss-tree"
    power_w: float | None  # mean power over the window
    energy_j: float | None
    energy_source: str  # "nvml-energy" | "nvml-power" | "rapl" | "none"
    energy_reason: str | None  # why absent, or why approximate
    util_pct: float | None  # mean GPU utilization, or process-tree CPU % of one core
    series: dict[str, list[Any]]  # t, mem_bytes, power_w, util_pct; <= max_points each
    gpu: dict[str, dict[str, Any]] = field(default_factory=dict)  # NVML index -> extras
    absent: dict[str, str] = field(default_factory=dict)  # field name -> reason
    sampler_cpu_s: float | None = None  # CPU time the sampling thread itself used
    contention: Contention = field(default_factory=Contention)  # other work on the machine

    def to_extra_info(self, samples: int) -> dict[str, Any]:
        """The ``archbench/1`` schema keys this result fills, for ``samples`` samples
        processed in the window (all ranks)."""
        if samples <= 0:
            raise ValueError(f"samples must be positive, got {samples}")
        energy_per_sample = samples_per_j = None
        absent = {k: v for k, v in self.absent.items() if k in ("peak_mem_bytes", "power_w")}
        if self.contention.reason is not None:
            absent["contention"] = self.contention.reason
        if self.energy_j is not None and self.energy_j > 0:
            energy_per_sample = self.energy_j / samples
            samples_per_j = samples / self.energy_j
        else:
            reason = self.energy_reason or "energy was not measured"
            absent["energy_j_per_sample"] = absent["samples_per_j"] = reason
        return {
            "peak_mem_bytes": self.peak_mem_bytes,
            "mem_source": self.mem_source,
            "power_w": self.power_w,
            "energy_j_per_sample": energy_per_sample,
            "samples_per_j": samples_per_j,
            "energy_source": self.energy_source,
            "energy_reason": self.energy_reason,
            "util_pct": self.util_pct,
            "gpu_telemetry": self.gpu,
            "telemetry_samples": self.n_samples,
            "telemetry_requested_samples": self.requested_samples,
            "telemetry": self.series,
            "contention": self.contention.to_dict(),
            "absent": absent,
        }
