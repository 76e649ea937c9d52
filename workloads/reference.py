"""Trained references: each family and size's fp32 model trained on the real-data task once,
cached on disk, and the starting point of every inference variant (fp32 inference itself, and
each compression technique, which transforms it).

The reference trains on the fit split of the family's task (``workloads.tasks``: digits, or
the text corpus for the transformer) with the fp32 variant's trainer, at the case's accuracy budget
(``workloads.budget``: its level, steps, batch, peak learning rate and schedule): the same training
as the fp32 training case's accuracy stage at that tier, so ``accuracy_reference`` means what the
train phase's fp32 accuracy means. The cache key holds everything the trained weights depend on:
family, size and config, the seed, the training budget (level, steps, batch, learning rate and
its schedule), the task's data (``Task.identity``: a hash of the digits, or the corpus's sha256,
and the split), and the torch version. The cache lives in ``$ARCHBENCH_CACHE`` (default
``~/.cache/archbench``)/``references``; files are written atomically, so a killed worker never
leaves half a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import accuracy
from .budget import FINAL_LR_FRACTION, Budget, training_flops
from .context import CaseContext
from .tasks import task_for
from .variants import FP32

CACHE_ENV = "ARCHBENCH_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "archbench") / "references"


def reference_budget(ctx: CaseContext) -> Budget:
    """The reference's training: the case's accuracy budget (fine-tunes and students take theirs
    from it)."""
    return accuracy.case_budget(ctx)


def reference_key(ctx: CaseContext) -> dict[str, Any]:
    w = ctx.workload
    budget = reference_budget(ctx)
    return {
        "family": ctx.family,
        "size": ctx.size,
        "config": {k: str(v) for k, v in dataclasses.asdict(w.cfg).items()},
        "seed": ctx.seed,
        "budget": budget.level,
        "steps": budget.steps,
        "batch": budget.batch_size,
        "lr": budget.lr,
        "schedule": f"warm-up {budget.warmup_steps}, cosine to {FINAL_LR_FRACTION:g}",
        "data": task_for(w, ctx.data_dir).identity(),
        "torch": str(torch.__version__),
    }


def cache_path(ctx: CaseContext) -> Path:
    key = json.dumps(reference_key(ctx), sort_keys=True)
    return cache_dir() / f"{ctx.family}-{ctx.size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def is_cached(ctx: CaseContext) -> bool:
    """Whether the reference of ``ctx`` is on disk (``--plan``: a cold cache trains it in the first
    case). The key's data hash loads the task: only computed where its family and size have a file."""
    if not any(cache_dir().glob(f"{ctx.family}-{ctx.size}-*.pt")):
        return False
    return cache_path(ctx).is_file()


def reference_flops(ctx: CaseContext) -> float:
    """Analytic FLOPs of training the reference (one rank)."""
    return training_flops(ctx.workload, reference_budget(ctx))


def train_reference(ctx: CaseContext) -> nn.Module:
    """The family's fp32 model trained on the fit split with the fp32 variant's trainer (AdamW,
    the budget's learning-rate schedule), on one rank."""
    ctx = dataclasses.replace(ctx, world_size=1)
    task = task_for(ctx.workload, ctx.data_dir)
    budget = reference_budget(ctx)
    torch.manual_seed(ctx.seed)
    trainer = FP32().trainer(ctx.workload.build_model(), task.loss, budget.lr, ctx.device, 1)
    try:
        accuracy.train(ctx, trainer, budget, ctx.seed, task)
    finally:
        trainer.close()
    return trainer.module.eval()


def _save(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def trained_reference(ctx: CaseContext) -> tuple[nn.Module, dict[str, Any]]:
    """The trained fp32 model of the case's family and size (eval mode, on its device), from the
    cache or trained now; and what is known of it: ``cached`` (bool), ``train_s``, ``path``."""
    import time

    path = cache_path(ctx)
    model = ctx.workload.build_model()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["model"])
            return model.to(ctx.device).eval(), {"cached": True, "train_s": state["train_s"], "path": str(path)}
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError):  # a bad file: train again
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    trained = train_reference(ctx)
    train_s = time.perf_counter() - start
    cpu_state = {k: v.detach().cpu() for k, v in trained.state_dict().items()}
    _save(path, {"model": cpu_state, "train_s": train_s, "key": reference_key(ctx)})
    return trained.to(ctx.device).eval(), {"cached": False, "train_s": train_s, "path": str(path)}
