"""Small models and data for the compression tests: a family's model at a size, its inputs, a quick fit."""

from __future__ import annotations

import torch
from torch import nn

from workloads import FAMILIES
from workloads.base import Workload
from workloads.data import load_task


def build(family: str, size: str, seed: int = 0) -> tuple[Workload, nn.Module]:
    W = FAMILIES[family]
    workload = W(W.Config.from_size(size))
    torch.manual_seed(seed)
    return workload, workload.build_model().eval()


def inputs(workload: Workload, batch_size: int, seed: int = 0) -> torch.Tensor:
    """The family's throughput inputs (images or tokens) for ``batch_size`` samples."""
    return workload.synthetic_batch(batch_size, torch.device("cpu"), torch.Generator().manual_seed(seed))[0]


def fit_digits(workload: Workload, model: nn.Module, steps: int = 150, seed: int = 0) -> torch.Tensor:
    """Train ``model`` on digits with the family's task loss; returns the encoded test images."""
    task = load_task(None)
    x, y = workload.encode_images(task.x_train), task.y_train
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=workload.accuracy_lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(y), (workload.accuracy_batch_size,), generator=gen)
        loss = workload.task_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return workload.encode_images(task.x_test)
