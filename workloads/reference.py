"""Trained references: each family and size's fp32 model trained on the real-data task once,
cached on disk, and the starting point of every inference variant (fp32 inference itself, and
each compression technique, which transforms it).

The cache key holds everything the trained weights depend on: family, size and config, the
seed, the training budget (steps, batch, learning rate), the task's data (a hash of it), and
the torch version. The cache lives in ``$ARCHBENCH_CACHE`` (default
``~/.cache/archbench``)/``references``; files are written atomically, so a killed worker never
leaves half a file.
"""

from __future__ import annotations

import dataclasses
import functools
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
from .context import CaseContext
from .data import load_task
from .variants import TorchTrainer

CACHE_ENV = "ARCHBENCH_CACHE"
REFERENCE_STEPS_FACTOR = 2  # the reference trains twice the accuracy budget of a training variant


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "archbench") / "references"


@functools.lru_cache(maxsize=4)
def data_fingerprint(data_dir: str | None) -> str:
    """A hash of the task's data: a reference trained on other data is another reference."""
    task = load_task(data_dir)
    h = hashlib.sha256(task.name.encode())
    for t in (task.x_train, task.y_train, task.x_test, task.y_test):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def reference_steps(ctx: CaseContext) -> int:
    return REFERENCE_STEPS_FACTOR * accuracy.budget(ctx)


def reference_key(ctx: CaseContext) -> dict[str, Any]:
    w = ctx.workload
    return {
        "family": ctx.family,
        "size": ctx.size,
        "config": {k: str(v) for k, v in dataclasses.asdict(w.cfg).items()},
        "seed": ctx.seed,
        "steps": reference_steps(ctx),
        "batch": w.accuracy_batch_size,
        "lr": w.accuracy_lr,
        "data": data_fingerprint(ctx.data_dir),
        "torch": str(torch.__version__),
    }


def cache_path(ctx: CaseContext) -> Path:
    key = json.dumps(reference_key(ctx), sort_keys=True)
    return cache_dir() / f"{ctx.family}-{ctx.size}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def train_reference(ctx: CaseContext) -> nn.Module:
    """The family's fp32 model trained on the fit split with AdamW (the fp32 variant's trainer)."""
    w = ctx.workload
    torch.manual_seed(ctx.seed)
    trainer = TorchTrainer(w.build_model(), w.task_loss, w.accuracy_lr, ctx.device)
    accuracy.train(ctx, trainer.train_step, reference_steps(ctx), ctx.seed)
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
