"""What a variant is told about the case it builds."""

from __future__ import annotations

import dataclasses

import torch

from .base import Workload


@dataclasses.dataclass(frozen=True)
class CaseContext:
    """One case's family, size, device and batch, as the variant sees it."""

    family: str
    size: str
    variant: str
    phase: str
    workload: Workload
    device: torch.device
    world_size: int = 1
    batch_size: int = 1
    seed: int = 0
    data_dir: str | None = None
    accuracy_steps: int | None = None  # None: the budget level's rule (workloads.budget)
    budget_level: str = "standard"  # the accuracy budget's level: smoke, standard or full

    @property
    def rank(self) -> int:
        if self.world_size > 1 and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return 0
