"""Quality on real data: train a model with a variant's trainer for the family's budget and
evaluate it on the held-out split, or evaluate a given model (an inference variant's).

The budget (steps, batch, learning rate) is fixed per family, so the variants of one case are
compared at equal work. Every function returns the accuracy fields of the result schema.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .context import CaseContext
from .data import load_task

EVAL_BATCH = 256


def evaluate(ctx: CaseContext, predict: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, Any]:
    """Top-1 accuracy of ``predict`` (encoded inputs -> model output; it sets its own grad mode)
    on the held-out split."""
    w = ctx.workload
    task = load_task(ctx.data_dir)
    x_test = w.encode_images(task.x_test)
    correct = 0
    for i in range(0, len(task.y_test), EVAL_BATCH):
        out = predict(x_test[i : i + EVAL_BATCH].to(ctx.device))
        pred = w.class_logits(out).argmax(-1).cpu()
        correct += int((pred == task.y_test[i : i + EVAL_BATCH]).sum())
    return {"accuracy": correct / len(task.y_test), "accuracy_metric": "top1", "accuracy_task": task.name}


def train_and_evaluate(ctx: CaseContext, make_trainer: Callable[[nn.Module], Any]) -> dict[str, Any]:
    """Train a fresh model seeded with ``ctx.seed`` through ``make_trainer(model)`` on the real
    task for the family's budget (each data-parallel rank its own shard of every batch; ranks
    that share a batch, a pipeline's, all get the same one), then evaluate it."""
    w = ctx.workload
    task = load_task(ctx.data_dir)
    steps = w.accuracy_steps if ctx.accuracy_steps is None else ctx.accuracy_steps
    gen = torch.Generator().manual_seed(ctx.seed)
    torch.manual_seed(ctx.seed)
    trainer = make_trainer(w.build_model())
    try:
        x_train = w.encode_images(task.x_train)
        n, bs, rank, ranks = len(task.y_train), w.accuracy_batch_size, ctx.data_rank, ctx.data_ranks
        order, pos = torch.randperm(n, generator=gen), 0
        for _ in range(steps):
            if pos + bs * ranks > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos + rank * bs : pos + (rank + 1) * bs]
            pos += bs * ranks
            trainer.train_step(x_train[idx].to(ctx.device), task.y_train[idx].to(ctx.device))
        result = evaluate(ctx, trainer.predict)
    finally:
        trainer.close()
    return result | {"accuracy_steps": steps}
