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
    data_parallel: bool = True  # the variant's: each rank its own batch (False: one batch for all)
    budget_level: str = "standard"  # the accuracy budget's level: smoke, standard or full

    @property
    def rank(self) -> int:
        if self.world_size > 1 and torch.distributed.is_initialized():
            return torch.distributed.get_rank()
        return 0

    @property
    def data_rank(self) -> int:
        """This rank's place among the ranks that read different data (0 when they share it)."""
        return self.rank if self.data_parallel else 0

    @property
    def data_ranks(self) -> int:
        """How many ranks read different data: the world size, or 1 when the ranks share a batch."""
        return self.world_size if self.data_parallel else 1
