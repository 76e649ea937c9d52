"""Quality on real data: train a model with a variant's trainer for the case's budget and
evaluate it on the held-out split, or evaluate a given model (an inference variant's).

The task is the family's (``workloads.tasks``: digits, or text for the Transformer) and the
budget the case's (``workloads.budget``: it grows with the model and is capped per tier), so
the variants of one case are compared at equal work. Splits (``SPLITS``, see
``workloads.tasks``): ``test`` is the task's held-out split; ``validation`` a fixed 15% of its
training split, which choices such as a low-rank factorization's rank are made on; ``fit`` the
rest of the training split, which every model here trains on. Every function returns the
accuracy fields of the result schema.

Data-parallel ranks each read their own shard of every global batch (``ctx.data_rank`` of
``ctx.data_ranks``); the ranks of a pipeline or a tensor-parallel step share one batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .budget import Budget, accuracy_budget, set_lr
from .context import CaseContext
from .tasks import SPLITS, Task, task_for

# make_trainer(model, loss_fn, lr) -> a variant's Trainer around ``model``
MakeTrainer = Callable[[nn.Module, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], float], Any]

__all__ = [
    "SPLITS", "MakeTrainer", "OutOfTime", "batches", "case_budget", "deadline", "evaluate", "train",
    "train_and_evaluate",
]  # fmt: skip

EVAL_RESERVE = 0.1  # of the training still to do: what the evaluation after it may take (and noise)
_deadline: float | None = None


class OutOfTime(Exception):
    """Training for the accuracy task stopped: finishing it would pass the case's deadline."""


@contextlib.contextmanager
def deadline(at: float | None) -> Iterator[None]:
    """Within it, ``train`` on one rank stops with OutOfTime when, at its steps' pace so far, the
    rest of its budget would end past ``at`` (``time.monotonic()``; the case watchdog's kill):
    the case keeps what it measured and says why its accuracy is absent, instead of being killed.
    Ranks of a distributed case would have to agree to stop, so they are not checked."""
    global _deadline
    before, _deadline = _deadline, at
    try:
        yield
    finally:
        _deadline = before


def case_budget(ctx: CaseContext) -> Budget:
    """The accuracy budget of ``ctx``: its level's rule, or ``ctx.accuracy_steps`` steps."""
    return accuracy_budget(ctx.workload, ctx.size, ctx.budget_level, ctx.accuracy_steps)


def evaluate(
    ctx: CaseContext, predict: Callable[[torch.Tensor], torch.Tensor], on: str = "test", task: Task | None = None
) -> dict[str, Any]:
    """Score ``predict`` (model input -> model output; it sets its own grad mode) on split ``on``
    of the family's task: the accuracy fields, and ``_correct``, one bool per scored sample (an
    image, or a predicted byte) for paired tests; the harness drops keys that start with ``_``
    from the result."""
    task = task or task_for(ctx.workload, ctx.data_dir)
    scorer = task.scorer()
    for inputs, targets in task.eval_batches(on):
        scorer.add(predict(inputs.to(ctx.device)), targets)
    return scorer.result()


def batches(
    ctx: CaseContext, seed: int, batch_size: int | None = None, task: Task | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless training batches of the fit split on the device, ``batch_size`` (default: the
    budget's) per rank: each data-parallel rank its own shard of every global batch; ranks that
    share a batch (a pipeline's, tensor parallel's) the same one."""
    task = task or task_for(ctx.workload, ctx.data_dir)
    size = case_budget(ctx).batch_size if batch_size is None else batch_size
    for inputs, targets in task.train_batches(size, seed, ctx.data_rank, ctx.data_ranks):
        yield inputs.to(ctx.device), targets.to(ctx.device)


def train(ctx: CaseContext, trainer: Any, budget: Budget, seed: int, task: Task | None = None) -> None:
    """``budget.steps`` steps of ``trainer.train_step(inputs, targets)`` on batches of the fit
    split, the learning rate following the budget's schedule (``Budget.lr_at``)."""
    data = batches(ctx, seed, budget.batch_size, task)
    check = _deadline is not None and ctx.world_size == 1
    after_first = 0.0
    for step in range(budget.steps):
        if check and step >= 2:  # the pace of the steps after the first (which allocates)
            now = time.monotonic()
            rest = (now - after_first) / (step - 1) * (budget.steps - step) * (1 + EVAL_RESERVE)
            if now + rest > _deadline:  # type: ignore[operator]
                raise OutOfTime(
                    f"the accuracy task would run past --case-timeout: {step} of its {budget.steps} steps done, "
                    f"the rest about {rest:.0f}s with {_deadline - now:.0f}s left"  # type: ignore[operator]
                )
        set_lr(trainer, budget.lr_at(step))
        trainer.train_step(*next(data))
        if step == 0:
            after_first = time.monotonic()


def train_and_evaluate(ctx: CaseContext, make_trainer: MakeTrainer) -> dict[str, Any]:
    """Train a fresh model seeded with ``ctx.seed`` through ``make_trainer(model, loss_fn, lr)``
    on the fit split for the case's budget, then evaluate it on the test split."""
    task = task_for(ctx.workload, ctx.data_dir)
    budget = case_budget(ctx)
    torch.manual_seed(ctx.seed)
    trainer = make_trainer(ctx.workload.build_model(), task.loss, budget.lr)
    try:
        train(ctx, trainer, budget, ctx.seed, task)
        result = evaluate(ctx, trainer.predict, task=task)
    finally:
        trainer.close()
    return result | budget.fields()
