"""Options of ``pytest bench`` and the tiers: which cases run, how long each is timed."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import torch

from reports.schema import FAMILY_ORDER, SIZE_ORDER, case_id, variant_rank
from workloads.base import check_choice
from workloads.tta import Target, TTAConfig

FAMILY_NAMES = FAMILY_ORDER
BASE_VARIANTS = ("fp32", "amp-bf16", "amp-fp16")
COMPRESSED_VARIANTS = ("int8", "int8-wo", "prune", "prune-unstructured", "lowrank", "distill")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask; all of them where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def use_threads(threads: int | None) -> None:
    """``--threads``: torch's intra-op threads in this process, and through OMP_NUM_THREADS and
    MKL_NUM_THREADS in what it starts (the fork server, ranks); None leaves torch's default."""
    if threads is None:
        return
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class CaseSpec(NamedTuple):
    """One case of the matrix, before it is built."""

    family: str
    size: str
    variant: str
    phase: str = "train"

    @property
    def id(self) -> str:
        return case_id(self.family, self.size, self.variant, self.phase)


@dataclasses.dataclass(frozen=True)
class Tier:
    sizes: dict[str, tuple[str, ...]]  # family -> sizes
    variants: tuple[str, ...]
    warmup_rounds: int  # untimed steps before timing (also estimate the step time) ...
    warmup_s: float  # ... and at least this long, so allocator, caches and clocks settle
    min_rounds: int
    max_rounds: int
    round_budget_s: float  # timed rounds fill about this much time, within min/max
    case_timeout_s: float  # default for --case-timeout (and the watchdog's limit)
    phases: tuple[str, ...] = ("train",)
    # sizes the compressed variants run at (l and xl only in the full tier); None: all of the tier's
    compress_sizes: tuple[str, ...] | None = ("xs", "s", "m")
    accuracy_budget: str = "standard"  # the accuracy task's budget level (workloads.budget)
    tta_runs: int = 5  # default of --tta-runs


TIERS: dict[str, Tier] = {
    # the whole matrix in minutes on a 2-core CPU; transformer m is the efficiency case
    "smoke": Tier(
        sizes={"dense": ("xs", "s"), "cnn": ("xs", "s"), "transformer": ("xs", "s", "m")},
        variants=BASE_VARIANTS,
        warmup_rounds=2,
        warmup_s=0.3,
        # 9 rounds: the fewest whose 95% interval of the median is not the whole range (x2..x8);
        # 3 s of rounds: at 1.5 s the slow-step cases timed 6-10 rounds and the quiet smoke tier's
        # median interval was 3.4% of the median
        min_rounds=9,
        max_rounds=2000,
        round_budget_s=3.0,
        case_timeout_s=70.0,
        accuracy_budget="smoke",
        tta_runs=3,
    ),
    "standard": Tier(
        sizes={f: ("xs", "s", "m") for f in FAMILY_NAMES},
        variants=BASE_VARIANTS + ("compile", "zero1", "zero2", "zero3", "fsdp2") + COMPRESSED_VARIANTS,
        phases=("train", "infer"),
        warmup_rounds=3,
        warmup_s=1.0,
        min_rounds=10,
        max_rounds=10000,
        round_budget_s=5.0,
        case_timeout_s=600.0,
    ),
    "full": Tier(
        sizes={f: SIZE_ORDER for f in FAMILY_NAMES},
        variants=BASE_VARIANTS
        + ("compile", "zero1", "zero2", "zero3", "zero3-offload", "fsdp2", "fsdp2-grad-op", "pipeline", "tp")
        + COMPRESSED_VARIANTS,
        phases=("train", "infer"),
        warmup_rounds=5,
        warmup_s=2.0,
        min_rounds=20,
        max_rounds=20000,
        round_budget_s=15.0,
        case_timeout_s=3600.0,
        compress_sizes=None,
        accuracy_budget="full",
    ),
}


def split_list(option: str, value: str | None, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    """Parse a comma list, refusing unknown names with the allowed values."""
    if value is None:
        return None
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ValueError(f"{option}: empty list; allowed: {', '.join(allowed)}")
    for item in items:
        check_choice(option, item, allowed)
    return items


@dataclasses.dataclass(frozen=True)
class Settings:
    tier: str = "smoke"
    families: tuple[str, ...] | None = None
    phases: tuple[str, ...] | None = None
    sizes: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    device: str = "cpu"
    world_size: int = 1
    batch_size: int | None = None
    data_dir: str | None = None
    telemetry_interval_s: float = 0.05
    case_timeout_s: float | None = None
    results_dir: str | None = "results"
    accuracy: bool = True
    seed: int = 0
    inject_slowdown: float = 0.0  # for evaluating regression gates: extra work per step
    stable_threshold: float = 0.05  # a result is stable when its median's CI half-width is within this
    target_ci: float | None = 0.02  # timing stops early once the CI half-width is within this (None: never)
    wait_quiet_s: float = 0.0  # before each case, wait up to this long for the machine to go quiet
    interleave: bool = False  # the variants of a family, size and phase timed side by side, in turns
    time_to_accuracy: bool = False  # --time-to-accuracy
    tta_runs: int | None = None  # None: the tier's
    tta_targets: tuple[Target, ...] = ()  # --tta-target, parsed (workloads.tta.parse_targets)
    round_budget_s: float | None = None  # --round-budget: the timed rounds' ceiling (None: the tier's)
    threads: int | None = None  # --threads: torch's intra-op threads per rank (None: torch's default)

    def __post_init__(self) -> None:
        check_choice("--tier", self.tier, tuple(TIERS))
        try:
            torch.device(self.device)
        except RuntimeError:
            raise ValueError(f"--device: {self.device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
        if self.world_size < 1:
            raise ValueError(f"--world-size must be >= 1, got {self.world_size}")
        if not 0.01 <= self.telemetry_interval_s <= 10:
            raise ValueError(
                f"--telemetry-interval must be between 0.01 and 10 seconds, got {self.telemetry_interval_s}"
            )
        if self.case_timeout_s is not None and self.case_timeout_s <= 0:
            raise ValueError(f"--case-timeout must be > 0 seconds, got {self.case_timeout_s}")
        if not 0.0 <= self.inject_slowdown <= 10.0:
            raise ValueError(f"--inject-slowdown must be between 0 and 10, got {self.inject_slowdown}")
        if not 0.0 < self.stable_threshold < 1.0:
            raise ValueError(
                f"--stable-threshold must be between 0 and 1 (a fraction of the median), got {self.stable_threshold}"
            )
        if self.target_ci is not None and not 0.0 < self.target_ci < 1.0:
            raise ValueError(f"--target-ci must be between 0 and 1 (a fraction of the median), got {self.target_ci}")
        if self.round_budget_s is not None and not 0.0 < self.round_budget_s <= 3600:
            raise ValueError(f"--round-budget must be between 0 and 3600 seconds, got {self.round_budget_s}")
        if self.threads is not None and not 1 <= self.threads <= usable_cpus():
            raise ValueError(
                f"--threads must be between 1 and {usable_cpus()} (the CPUs this process may use), got {self.threads}"
            )
        if not 0.0 <= self.wait_quiet_s <= 3600:
            raise ValueError(f"--wait-quiet must be between 0 and 3600 seconds, got {self.wait_quiet_s}")
        if self.interleave and self.world_size > 1:
            raise ValueError("--interleave times single-rank cases side by side; drop --world-size or --interleave")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        TTAConfig(1 if self.tta_runs is None else self.tta_runs, self.tta_targets)  # ValueError naming the bad option

    @property
    def tier_spec(self) -> Tier:
        """The tier, with ``--round-budget`` in place of its own where given."""
        tier = TIERS[self.tier]
        return tier if self.round_budget_s is None else dataclasses.replace(tier, round_budget_s=self.round_budget_s)

    @property
    def tta(self) -> TTAConfig | None:
        """The time-to-accuracy runs of each training case (None: --time-to-accuracy is off)."""
        if not self.time_to_accuracy:
            return None
        return TTAConfig(self.tta_runs or self.tier_spec.tta_runs, self.tta_targets)

    def accuracy_flops(self, family: str, size: str, phase: str) -> float:
        """FLOPs of a case's accuracy stage (accuracy task and time-to-accuracy runs), one rank."""
        from workloads.registry import accuracy_flops

        tta = self.tta
        return accuracy_flops(
            family, size, phase, self.tier_spec.accuracy_budget, accuracy=self.accuracy, tta_runs=tta.runs if tta else 0
        )

    @property
    def timeout_s(self) -> float:
        return self.case_timeout_s if self.case_timeout_s is not None else self.tier_spec.case_timeout_s

    def _tier_runs(self, variant: str, size: str) -> bool:
        """The tier's own matrix compresses up to ``compress_sizes``; variants asked for by name run."""
        limit = self.tier_spec.compress_sizes
        return bool(self.variants) or limit is None or variant not in COMPRESSED_VARIANTS or size in limit

    def matrix(self, variants_known: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> list[CaseSpec]:
        """Every case: the tier's families, sizes, phases and variants, narrowed or replaced by
        options. ``variants_known``: name -> (phases, baselines). A variant runs in the phases it
        has; the baselines it is compared with (fp32 inference for a compressed variant) run too,
        before it."""
        tier = self.tier_spec
        phases = self.phases or tier.phases
        chosen = self.variants or tier.variants
        if self.variants and not any(p in variants_known[v][0] for v in chosen for p in phases):
            have = "; ".join(f"{v}: {', '.join(variants_known[v][0])}" for v in chosen)
            raise ValueError(f"--variant {','.join(chosen)} runs in none of the phases {','.join(phases)} ({have})")
        cases = []
        for family in self.families or FAMILY_NAMES:
            sizes = self.sizes or tier.sizes[family]
            for size in sorted(sizes, key=SIZE_ORDER.index):
                for phase in phases:
                    names = {v for v in chosen if phase in variants_known[v][0] and self._tier_runs(v, size)}
                    names |= {
                        b for v in names for b in variants_known[v][1] if phase in variants_known.get(b, ((),))[0]
                    }
                    cases += [CaseSpec(family, size, v, phase) for v in sorted(names, key=variant_rank)]
        return cases
