"""Quality on real data: train a model with a variant's trainer for the family's budget and
evaluate it on the held-out split, or evaluate a given model (an inference variant's).

The budget (steps, batch, learning rate) is fixed per family, so the variants of one case are
compared at equal work. Splits: ``test`` is the task's held-out split; ``validation`` a fixed
15% of its training split (seeded), which choices such as a low-rank factorization's rank are
made on; ``fit`` the rest of the training split, which every model here trains on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .context import CaseContext
from .data import load_task

EVAL_BATCH = 256
VALIDATION_FRACTION = 0.15
SPLITS = ("fit", "validation", "test")


def split(ctx: CaseContext, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(encoded inputs, labels) of split ``name`` of the case's task."""
    if name not in SPLITS:
        raise ValueError(f"split: unknown {name!r}; allowed: {', '.join(SPLITS)}")
    task = load_task(ctx.data_dir)
    if name == "test":
        return ctx.workload.encode_images(task.x_test), task.y_test
    n = len(task.y_train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    cut = int(n * VALIDATION_FRACTION)
    idx = order[:cut] if name == "validation" else order[cut:]
    return ctx.workload.encode_images(task.x_train[idx]), task.y_train[idx]


def evaluate(ctx: CaseContext, predict: Callable[[torch.Tensor], torch.Tensor], on: str = "test") -> dict[str, Any]:
    """Top-1 accuracy of ``predict`` (encoded inputs -> model output; it sets its own grad mode)
    on split ``on``. ``_correct`` holds each sample's verdict (for paired tests); the harness
    does not report it."""
    w = ctx.workload
    x, y = split(ctx, on)
    verdicts = []
    for i in range(0, len(y), EVAL_BATCH):
        out = predict(x[i : i + EVAL_BATCH].to(ctx.device))
        verdicts.append(w.class_logits(out).argmax(-1).cpu() == y[i : i + EVAL_BATCH])
    correct = torch.cat(verdicts)
    task = load_task(ctx.data_dir).name
    return {
        "accuracy": float(correct.float().mean()),
        "accuracy_metric": "top1",
        "accuracy_task": task,
        "_correct": correct.tolist(),
    }


def batches(ctx: CaseContext, steps: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``steps`` training batches of the fit split, this rank's shard of each, on the device (each
    data-parallel rank its own shard; ranks that share a batch, a pipeline's, the same one)."""
    w = ctx.workload
    x, y = split(ctx, "fit")
    gen = torch.Generator().manual_seed(seed)
    n, bs, rank, ranks = len(y), w.accuracy_batch_size, ctx.data_rank, ctx.data_ranks
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + bs * ranks > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos + rank * bs : pos + (rank + 1) * bs]
        pos += bs * ranks
        yield x[idx].to(ctx.device), y[idx].to(ctx.device)


def budget(ctx: CaseContext) -> int:
    """Optimizer steps of the accuracy task."""
    return ctx.workload.accuracy_steps if ctx.accuracy_steps is None else ctx.accuracy_steps


def train(ctx: CaseContext, step: Callable[[torch.Tensor, torch.Tensor], Any], steps: int, seed: int) -> None:
    """Call ``step(inputs, targets)`` on ``steps`` batches of the fit split."""
    for inputs, targets in batches(ctx, steps, seed):
        step(inputs, targets)


def train_and_evaluate(ctx: CaseContext, make_trainer: Callable[[nn.Module], Any]) -> dict[str, Any]:
    """Train a fresh model seeded with ``ctx.seed`` through ``make_trainer(model)`` on the real
    task for the family's budget (each rank its own shard of every batch), then evaluate it."""
    torch.manual_seed(ctx.seed)
    trainer = make_trainer(ctx.workload.build_model())
    steps = budget(ctx)
    try:
        train(ctx, trainer.train_step, steps, ctx.seed)
        result = evaluate(ctx, trainer.predict)
    finally:
        trainer.close()
    return result | {"accuracy_steps": steps}
