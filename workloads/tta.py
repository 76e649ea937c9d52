"""Time to accuracy, MLPerf Training's way: train until a stated quality on the held-out split,
several seeded runs, and report the mean time without the fastest and the slowest run.

A run trains a fresh model (seed ``ctx.seed + i``) on the fit split with the variant's trainer,
the case's batch and peak learning rate (``workloads.budget``) after a linear warm-up over ``WARMUP_STEPS``
steps held constant (no decay, so the time to a target does not depend on the tier's budget),
and evaluates every ``Workload.accuracy_eval_every`` steps and at its last step. It stops at the
first evaluation that meets the target: test accuracy >= target for digits, bits per byte
<= target for text. It may train at most the case's budget of steps (the tier's cap); a run
that has not met the target by then is reported as not reaching it, never with a time.

Time counts the training steps (batch, step, device sync) and the evaluations, as MLPerf's
does; building the model and the trainer is not counted.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from .accuracy import batches, case_budget, evaluate
from .base import check_choice
from .budget import Budget, set_lr
from .context import CaseContext
from .probe import synchronize
from .tasks import Task, task_for

WARMUP_STEPS = 10
TEXT_METRIC, DIGITS_METRIC = "bits_per_byte", "accuracy"
# Default targets per family and size: held-out accuracy (digits), bits per byte (text, lower is
# better). fp32 on a 2-core CPU met those of dense xs, s and transformer xs, s within about 100,
# 70, 100 and 150 steps of the TTA schedule (one seed); the others are set by analogy.
# fmt: off
DEFAULT_TARGETS: dict[str, dict[str, float]] = {
    "dense": {"xs": 0.90, "s": 0.92, "m": 0.93, "l": 0.93, "xl": 0.93},
    "cnn": {"xs": 0.90, "s": 0.93, "m": 0.93, "l": 0.93, "xl": 0.93},
    "transformer": {"xs": 4.1, "s": 4.1, "m": 4.0, "l": 4.0, "xl": 4.0},
}
# fmt: on

Target = tuple[str, float]  # ("dense", 0.9) or ("transformer-s", 2.5)


@dataclasses.dataclass(frozen=True)
class TTAConfig:
    """``runs`` seeded runs per case; ``targets`` override the defaults, for a family
    (``"dense"``) or one size of it (``"dense-s"``, which wins)."""

    runs: int = 5
    targets: tuple[Target, ...] = ()

    def __post_init__(self) -> None:
        if self.runs < 1:
            raise ValueError(f"--tta-runs must be >= 1, got {self.runs}")
        for key, value in self.targets:
            family, _, size = key.partition("-")
            check_choice("--tta-target family", family, tuple(DEFAULT_TARGETS))
            if size:
                check_choice("--tta-target size", size, tuple(DEFAULT_TARGETS[family]))
            if not (math.isfinite(value) and value > 0) or (family != "transformer" and value > 1):
                what = "bits per byte > 0" if family == "transformer" else "an accuracy in (0, 1]"
                raise ValueError(f"--tta-target {key}={value:g}: expected {what}")

    def target(self, family: str, size: str) -> float:
        given = dict(self.targets)
        return given.get(f"{family}-{size}", given.get(family, DEFAULT_TARGETS[family][size]))


def parse_targets(text: str | None) -> tuple[Target, ...]:
    """``"dense=0.9,transformer=2.5,transformer-s=2.3"`` -> (("dense", 0.9), ...)."""
    if not text:
        return ()
    targets = []
    for item in (part.strip() for part in text.split(",")):
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not key.strip() or math.isnan(number):
            raise ValueError(f"--tta-target: {item!r} is not FAMILY[-SIZE]=VALUE (e.g. dense=0.9,transformer-s=2.5)")
        targets.append((key.strip(), number))
    return tuple(targets)


def meets(metric: str, value: float, target: float) -> bool:
    return value <= target if metric == TEXT_METRIC else value >= target


def run_to_target(
    ctx: CaseContext, task: Task, budget: Budget, make_trainer: Callable, seed: int, target: float, metric: str
) -> dict[str, Any]:
    """One seeded run, stopped at the first evaluation that meets ``target``."""
    w, every = ctx.workload, ctx.workload.accuracy_eval_every
    torch.manual_seed(seed)
    trainer = make_trainer(w.build_model(), task.loss, budget.lr)
    data = batches(ctx, seed, budget.batch_size, task)
    spent, value, curve = 0.0, math.nan, []
    try:
        for step in range(1, budget.steps + 1):
            start = time.perf_counter()
            set_lr(trainer, budget.lr * min(1.0, step / WARMUP_STEPS))
            trainer.train_step(*next(data))
            synchronize(ctx.device)
            spent += time.perf_counter() - start
            if step % every and step != budget.steps:
                continue
            start = time.perf_counter()
            value = evaluate(ctx, trainer.predict, task=task)[metric]
            spent += time.perf_counter() - start
            curve.append([step, value])
            if meets(metric, value, target):
                return {"seed": seed, "reached": True, "time_s": spent, "steps": step, "value": value, "curve": curve}
    finally:
        trainer.close()
    return {
        "seed": seed,
        "reached": False,
        "time_s": None,
        "steps": None,
        "value": value,
        "spent_s": spent,
        "curve": curve,
    }


def summarize(runs: list[dict[str, Any]]) -> tuple[dict[str, Any], str | None]:
    """``time_to_accuracy_s`` and ``steps_to_accuracy``: the means over the runs left after
    dropping the fastest and the slowest (with fewer than 3 runs, over all of them). A run that
    did not reach the target counts as slowest; with too few runs reaching it, both are None and
    the reason is returned."""
    n = len(runs)
    ranked = sorted(runs, key=lambda r: r["time_s"] if r["reached"] else math.inf)
    kept = ranked[1:-1] if n >= 3 else ranked
    reached = sum(1 for r in runs if r["reached"])
    needed = n - 1 if n >= 3 else n
    if reached < needed:
        why = f"{reached} of {n} runs reached the target; the trimmed mean needs {needed}"
        return {"time_to_accuracy_s": None, "steps_to_accuracy": None}, why
    return {
        "time_to_accuracy_s": statistics.fmean(r["time_s"] for r in kept),
        "steps_to_accuracy": statistics.fmean(r["steps"] for r in kept),
    }, None


def time_to_accuracy(ctx: CaseContext, make_trainer: Callable, config: TTAConfig) -> dict[str, Any]:
    """``config.runs`` runs of a training variant (seeds ``ctx.seed``, ``ctx.seed + 1`` ...);
    the time-to-accuracy fields of the result, with ``_reasons`` for null ones."""
    task = task_for(ctx.workload, ctx.data_dir)
    budget = case_budget(ctx)
    metric = TEXT_METRIC if task.name == "text" else DIGITS_METRIC
    target = config.target(ctx.family, ctx.size)
    runs = [run_to_target(ctx, task, budget, make_trainer, ctx.seed + i, target, metric) for i in range(config.runs)]
    summary, why = summarize(runs)
    fields = {
        **summary,
        "tta_target": target,
        "tta_metric": metric,
        "tta_runs": runs,
        "tta_eval_every": ctx.workload.accuracy_eval_every,
        "tta_max_steps": budget.steps,
        "tta_includes_eval": True,
    }
    if why is not None:
        fields["_reasons"] = {"time_to_accuracy_s": why, "steps_to_accuracy": why}
    return fields


def with_time_to_accuracy(fields: dict[str, Any], runnable: Any, config: TTAConfig) -> dict[str, Any]:
    """``fields`` (a case's accuracy fields) with the time-to-accuracy fields of ``runnable``:
    its ``time_to_accuracy(config)``, or null with the reason for one that does not train."""
    run = getattr(runnable, "time_to_accuracy", None)
    if run is None:
        why = "time to accuracy trains a model: only training variants have it"
        more = {"time_to_accuracy_s": None, "steps_to_accuracy": None}
        more["_reasons"] = dict.fromkeys(more, why)
    else:
        more = run(config)
    reasons = {**fields.get("_reasons", {}), **more.pop("_reasons", {})}
    return {**fields, **more, "_reasons": reasons}
