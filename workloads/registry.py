"""Registry: family x size x variant x phase -> a runnable ``Case``.

``VARIANTS`` maps each variant's name to a picklable factory (a class or a
``functools.partial``): a worker process receives the factory itself, so a variant registered
by a plugin (``pytest -p my_variants``) runs there too. ``build_case`` refuses unsupported
combinations with ``Unsupported(reason)`` when the case is built; bench/ records them as skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import torch

from reports.schema import PHASES, SIZE_ORDER, case_id

from .base import Unsupported, Workload, check_choice
from .budget import BUDGET_LEVELS, DEFAULT_LEVEL, accuracy_budget, training_flops
from .cnn import CNN
from .compile import COMPILE_VARIANTS
from .compressed import Distill, Int8, Int8WeightOnly, LowRank, Prune, PruneUnstructured
from .context import CaseContext
from .dense import Dense
from .fsdp import FSDP_VARIANTS
from .pipeline_parallel import PIPELINE_VARIANTS
from .probe import synchronize
from .tasks import eval_samples
from .tensor_parallel import TensorParallel
from .transformer import Transformer
from .variants import AMP, FP32, Runnable, Variant
from .zero import ZERO_VARIANTS

FAMILIES: dict[str, type[Workload]] = {"dense": Dense, "cnn": CNN, "transformer": Transformer}

VariantFactory = Callable[[], Variant]
# One line per variant or family of spellings: ``compile[+bf16]`` (workloads.compile);
# ``zero1`` ... ``zero3-offload``, each also ``+bf16`` and ``+fp16`` (workloads.zero);
# ``fsdp2[-grad-op][+bf16]`` (workloads.fsdp); ``pipeline[-gpipe][+mK]``
# (workloads.pipeline_parallel); ``tp`` (workloads.tensor_parallel).
VARIANTS: dict[str, VariantFactory] = {
    "fp32": FP32,
    "amp-bf16": functools.partial(AMP, torch.bfloat16),
    "amp-fp16": functools.partial(AMP, torch.float16),
    **COMPILE_VARIANTS,
    **ZERO_VARIANTS,
    **FSDP_VARIANTS,
    **PIPELINE_VARIANTS,
    "tp": TensorParallel,
    "int8": Int8,
    "int8-wo": Int8WeightOnly,
    "prune": Prune,
    "prune-unstructured": PruneUnstructured,
    "lowrank": LowRank,
    "distill": Distill,
}


def variant_names() -> list[str]:
    """Every registered variant spelling."""
    return list(VARIANTS)


def variant_factory(name: str) -> VariantFactory:
    check_choice("variant", name, variant_names())
    return VARIANTS[name]


def get_variant(name: str) -> Variant:
    return variant_factory(name)()


def parse_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Unsupported(f"device {device}: CUDA is not available in this torch build/machine")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@dataclasses.dataclass
class Case:
    """One benchmark: ``step()`` runs one timed unit of work and ends with a device sync."""

    ctx: CaseContext
    variant_obj: Variant
    runnable: Runnable
    params: int
    flops_per_step: float  # all ranks: per sample x samples_per_step

    @property
    def id(self) -> str:
        return case_id(self.family, self.size, self.variant, self.phase)

    family = property(lambda self: self.ctx.family)
    size = property(lambda self: self.ctx.size)
    variant = property(lambda self: self.ctx.variant)
    phase = property(lambda self: self.ctx.phase)
    device = property(lambda self: self.ctx.device)
    world_size = property(lambda self: self.ctx.world_size)
    batch_size = property(lambda self: self.ctx.batch_size)
    seq_len = property(lambda self: self.ctx.workload.seq_len)
    compute_dtype = property(lambda self: self.variant_obj.compute_dtype)

    @property
    def data_ranks(self) -> int:
        """Ranks that step on batches of their own: the world size for data parallel variants,
        1 for a pipeline or tensor parallel step (its ranks share one batch)."""
        return self.ctx.data_ranks

    @property
    def samples_per_step(self) -> int:
        """Samples one step processes over all ranks: batch_size x data_ranks."""
        return self.batch_size * self.data_ranks

    @property
    def dtype(self) -> str:
        return str(self.compute_dtype).removeprefix("torch.")

    def step(self) -> None:
        self.runnable.step()
        synchronize(self.device)

    def static_info(self) -> dict:
        """The schema fields known before timing."""
        return {
            "id": self.id,
            "family": self.family,
            "size": self.size,
            "variant": self.variant,
            "phase": self.phase,
            "device": str(self.device),
            "dtype": self.dtype,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "params": self.params,
            "samples_per_step": self.samples_per_step,
            "flops_per_step": self.flops_per_step,
        }

    def close(self) -> None:
        self.runnable.close()


def workload(family: str, size: str) -> Workload:
    check_choice("family", family, tuple(FAMILIES))
    check_choice("size", size, SIZE_ORDER)
    W = FAMILIES[family]
    return W(W.Config.from_size(size))


def tier_batch_size(family: str, batch_size: int | None) -> int:
    bs = FAMILIES[family].default_batch_size if batch_size is None else batch_size
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    return bs


def check_case(variant: Variant, phase: str, device: torch.device, world_size: int) -> None:
    """Raise Unsupported when ``variant`` cannot run ``phase`` on ``device`` at ``world_size``."""
    check_choice("phase", phase, PHASES)
    if phase not in variant.phases:
        raise Unsupported(f"{variant.name}: no {phase} phase (it runs {', '.join(variant.phases)})")
    variant.check(device, world_size)


def case_context(
    family: str,
    size: str,
    var: Variant,
    phase: str,
    device: torch.device,
    world_size: int = 1,
    batch_size: int | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    accuracy_steps: int | None = None,
    budget_level: str = DEFAULT_LEVEL,
) -> CaseContext:
    """What the variant of a case sees (no model is built): ``build_case``'s, and ``--plan``'s."""
    return CaseContext(
        family, size, var.name, phase, workload(family, size), device, world_size, tier_batch_size(family, batch_size),
        seed, data_dir, accuracy_steps, var.data_parallel, budget_level,
    )  # fmt: skip


def build_case(
    family: str,
    size: str,
    variant: str | Variant,
    device: str = "cpu",
    world_size: int = 1,
    batch_size: int | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    phase: str | None = None,
    accuracy_steps: int | None = None,
    budget_level: str = DEFAULT_LEVEL,
) -> Case:
    """Build a runnable case, or raise ``Unsupported``/``ValueError`` with the reason.
    ``variant`` is a registered name or a Variant instance; ``phase`` defaults to its first;
    ``budget_level`` sizes the accuracy task (``workloads.budget``)."""
    var = get_variant(variant) if isinstance(variant, str) else variant
    phase = var.phases[0] if phase is None else phase
    check_choice("accuracy budget", budget_level, BUDGET_LEVELS)
    dev = parse_device(device)
    check_case(var, phase, dev, world_size)
    if world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise Unsupported(f"world size {world_size}: torch.distributed is not initialized")
    ctx = case_context(
        family, size, var, phase, dev, world_size, batch_size, data_dir, seed, accuracy_steps, budget_level
    )
    runnable = var.build(ctx)
    per_sample = runnable.flops_per_sample()
    if per_sample is None:
        per_sample = ctx.workload.flops_per_sample(phase)
    return Case(ctx, var, runnable, runnable.params(), float(per_sample * ctx.batch_size * ctx.data_ranks))


def estimate_case_seconds(
    family: str, size: str, phase: str, batch_size: int | None, peak_tflops: float, steps: int
) -> float:
    """Lower bound of the compute time of ``steps`` timed steps at the probed peak."""
    flops = workload(family, size).flops_per_sample(phase) * tier_batch_size(family, batch_size)
    return steps * flops / (peak_tflops * 1e12) if peak_tflops > 0 else math.inf


def accuracy_flops(
    family: str, size: str, phase: str, level: str = DEFAULT_LEVEL, *, accuracy: bool = True, tta_runs: int = 0
) -> float:
    """Analytic FLOPs of the accuracy stage (one rank), known before the case runs: for a
    training case the budget's training and one evaluation (``accuracy``), plus ``tta_runs``
    time-to-accuracy runs, each counted at its worst (the whole budget, every evaluation);
    for an inference case one evaluation of the given model."""
    w = workload(family, size)
    budget = accuracy_budget(w, size, level)
    evaluation = w.infer_flops_per_sample() * eval_samples(w)
    if phase != "train":
        return evaluation if accuracy else 0.0
    training = training_flops(w, budget)
    total = training + evaluation if accuracy else 0.0
    if tta_runs:
        evaluations = math.ceil(budget.steps / w.accuracy_eval_every)
        total += tta_runs * (training + evaluations * evaluation)
    return float(total)


__all__ = ["FAMILIES", "VARIANTS", "Case", "Unsupported", "build_case", "get_variant", "variant_names"]
