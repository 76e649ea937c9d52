"""Quality on real data: train a model with a variant's trainer for the case's budget and
evaluate it on the held-out split, or evaluate a given model (an inference variant's).

The task is the family's (``workloads.tasks``: digits, or text for the Transformer) and the
budget the case's (``workloads.budget``: it grows with the model and is capped per tier), so
the variants of one case are compared at equal work. Every function returns the accuracy
fields of the result schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .budget import Budget, accuracy_budget, set_lr
from .context import CaseContext
from .tasks import Task, task_for

# make_trainer(model, loss_fn, lr) -> a variant's Trainer around ``model``
MakeTrainer = Callable[[nn.Module, Callable[[torch.Tensor, torch.Tensor], torch.Tensor], float], Any]


def case_budget(ctx: CaseContext) -> Budget:
    """The accuracy budget of ``ctx``: its level's rule, or ``ctx.accuracy_steps`` steps."""
    return accuracy_budget(ctx.workload, ctx.size, ctx.budget_level, ctx.accuracy_steps)


def evaluate(
    ctx: CaseContext, predict: Callable[[torch.Tensor], torch.Tensor], task: Task | None = None
) -> dict[str, Any]:
    """Score ``predict`` (model input -> model output; it sets its own grad mode) on the
    held-out split of the family's task: the accuracy fields, and ``_correct``, one bool per
    scored sample (an image, or a predicted byte) for paired tests; the harness drops keys
    that start with ``_`` from the result."""
    task = task or task_for(ctx.workload, ctx.data_dir)
    scorer = task.scorer()
    for inputs, targets in task.eval_batches():
        scorer.add(predict(inputs.to(ctx.device)), targets)
    return scorer.result()


def train_and_evaluate(ctx: CaseContext, make_trainer: MakeTrainer) -> dict[str, Any]:
    """Train a fresh model seeded with ``ctx.seed`` through ``make_trainer`` on the real task
    for the case's budget (each rank its own shard of every batch), then evaluate it."""
    w = ctx.workload
    task = task_for(w, ctx.data_dir)
    budget = case_budget(ctx)
    torch.manual_seed(ctx.seed)
    trainer = make_trainer(w.build_model(), task.loss, budget.lr)
    try:
        batches = task.train_batches(budget.batch_size, ctx.seed, ctx.rank, ctx.world_size)
        for step in range(budget.steps):
            set_lr(trainer, budget.lr_at(step))
            inputs, targets = next(batches)
            trainer.train_step(inputs.to(ctx.device), targets.to(ctx.device))
        result = evaluate(ctx, trainer.predict, task)
    finally:
        trainer.close()
    return result | budget.fields()
