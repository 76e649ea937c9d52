"""Small models and data for the compression tests: a family's model at a size, its inputs, a quick fit."""

from __future__ import annotations

import torch
from torch import nn

from workloads import FAMILIES
from workloads.base import Workload
from workloads.tasks import task_for


def build(family: str, size: str, seed: int = 0) -> tuple[Workload, nn.Module]:
    W = FAMILIES[family]
    workload = W(W.Config.from_size(size))
    torch.manual_seed(seed)
    return workload, workload.build_model().eval()


def inputs(workload: Workload, batch_size: int, seed: int = 0) -> torch.Tensor:
    """The family's throughput inputs (images or tokens) for ``batch_size`` samples."""
    return workload.synthetic_batch(batch_size, torch.device("cpu"), torch.Generator().manual_seed(seed))[0]


def fit_task(workload: Workload, model: nn.Module, steps: int = 150, seed: int = 0) -> torch.Tensor:
    """Train ``model`` on the family's accuracy task (digits; next-byte text for the transformer)
    with its task loss; returns the held-out inputs."""
    task = task_for(workload)
    batches = task.train_batches(workload.accuracy_batch_size, seed)
    opt = torch.optim.AdamW(model.parameters(), lr=workload.accuracy_lr)
    model.train()
    for _ in range(steps):
        x, y = next(batches)
        loss = task.loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return torch.cat([x for x, _ in task.eval_batches()])
