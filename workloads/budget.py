"""The accuracy task's training budget: how many steps of how large a batch at which learning
rate, known before a case runs (the case-timeout projection reads it).

The rule, per family (its ``accuracy_*`` attributes) and budget level (a tier's)::

    samples = accuracy_samples_per_param * parameters       # images, or tokens for text
    steps   = clamp(ceil(samples / samples_per_step), accuracy_min_steps, accuracy_max_steps[level])
    lr      = accuracy_lr_by_size.get(size, accuracy_lr)    # larger models take smaller steps

so a larger model trains on at least as many samples as a smaller one, up to the level's cap,
and the smoke level stays short. Training uses AdamW with a linear warm-up over the first tenth
of the steps and a cosine decay to a tenth of the peak rate at the last step.
"""

from __future__ import annotations

import dataclasses
import math

from .base import Workload, check_choice

BUDGET_LEVELS = ("smoke", "standard", "full")
DEFAULT_LEVEL = "standard"
FINAL_LR_FRACTION = 0.1  # the cosine decays to this fraction of the peak


@dataclasses.dataclass(frozen=True)
class Budget:
    """One case's accuracy-task training: ``steps`` optimizer steps of ``batch_size`` samples
    per rank (``samples_per_step`` images or tokens), peak learning rate ``lr``."""

    steps: int
    batch_size: int
    lr: float
    samples_per_step: int
    sample_unit: str  # "images" or "tokens"
    level: str

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"budget: steps, batch size and lr must be > 0, got {self}")

    @property
    def warmup_steps(self) -> int:
        return max(1, self.steps // 10)

    @property
    def train_samples(self) -> int:
        return self.steps * self.samples_per_step

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step`` (0-based): linear warm-up, then cosine to 10%."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, self.steps - 1 - self.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return self.lr * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)

    def fields(self) -> dict:
        """The budget as result fields."""
        return {
            "accuracy_steps": self.steps,
            "accuracy_batch_size": self.batch_size,
            "accuracy_lr": self.lr,
            "accuracy_train_samples": self.train_samples,
            "accuracy_sample_unit": self.sample_unit,
            "accuracy_budget": self.level,
        }


def samples_per_step(workload: Workload) -> int:
    """Samples one optimizer step of the accuracy task reads per rank (tokens for text)."""
    per_sample = workload.seq_len if workload.accuracy_task == "text" else 1
    return workload.accuracy_batch_size * (per_sample or 1)


def accuracy_budget(workload: Workload, size: str, level: str = DEFAULT_LEVEL, steps: int | None = None) -> Budget:
    """The budget of ``workload`` at ``size`` for budget ``level``; ``steps`` overrides the rule."""
    check_choice("accuracy budget", level, BUDGET_LEVELS)
    W = type(workload)
    per_step = samples_per_step(workload)
    if steps is None:
        wanted = math.ceil(W.accuracy_samples_per_param * W.Config.from_size(size).n_params() / per_step)
        steps = min(max(wanted, W.accuracy_min_steps), W.accuracy_max_steps[level])
    return Budget(
        steps=steps,
        batch_size=W.accuracy_batch_size,
        lr=W.accuracy_lr_by_size.get(size, W.accuracy_lr),
        samples_per_step=per_step,
        sample_unit="tokens" if W.accuracy_task == "text" else "images",
        level=level,
    )


def training_flops(workload: Workload, budget: Budget, steps: int | None = None) -> float:
    """Analytic FLOPs of ``steps`` (default: the budget's) accuracy-task training steps of
    ``workload`` at the budget's batch, one rank."""
    steps = budget.steps if steps is None else steps
    return float(workload.task_train_flops_per_sample() * budget.batch_size * steps)


def set_lr(trainer, lr: float) -> bool:
    """Set the learning rate of ``trainer``: its own ``set_lr`` (a pipeline's, whose optimizer
    comes with its first step), else its optimizer's (a TorchTrainer's, or a DeepSpeed
    engine's); False when it has none this can reach (its rate then stays constant)."""
    own = getattr(trainer, "set_lr", None)
    if own is not None:
        own(lr)
        return True
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is None:
        optimizer = getattr(getattr(trainer, "engine", None), "optimizer", None)
    groups = getattr(optimizer, "param_groups", None)
    if not groups:
        return False
    for group in groups:
        group["lr"] = lr
    return True
