"""Shared pieces of the workload families: the size order, the refusal type and FLOP helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from reports.schema import PHASES

# Nominal parameter counts the size tables aim at (each family within 30%).
NOMINAL_PARAMS: dict[str, int] = {
    "xs": 100_000,
    "s": 1_000_000,
    "m": 10_000_000,
    "l": 100_000_000,
    "xl": 1_000_000_000,
}


class Unsupported(Exception):
    """A combination that cannot run here; the message says why and what to do instead."""


def check_choice(what: str, value: Any, allowed: Sequence[Any]) -> None:
    """Raise ValueError naming the allowed values when ``value`` is not one of them."""
    if value not in allowed:
        raise ValueError(f"{what}: unknown {value!r}; allowed: {', '.join(map(str, allowed))}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def linear_params(dims: Sequence[tuple[int, int]]) -> int:
    """Weights and biases of a chain of Linear layers ``(in, out)``."""
    return sum(d_in * d_out + d_out for d_in, d_out in dims)


def linear_infer_flops(dims: Sequence[tuple[int, int]]) -> int:
    """Forward FLOPs of a chain of matmuls ``(in, out)`` per row."""
    return sum(2 * d_in * d_out for d_in, d_out in dims)


def linear_train_flops(dims: Sequence[tuple[int, int]], first_needs_input_grad: bool) -> int:
    """Training FLOPs of a chain of matmuls ``(in, out)`` per row: forward, weight grad, input grad.

    The first layer computes no input gradient when its input is data (no grad).
    """
    total = 0
    for i, (d_in, d_out) in enumerate(dims):
        mm = 2 * d_in * d_out
        total += mm + mm  # forward + weight gradient
        if i > 0 or first_needs_input_grad:
            total += mm  # input gradient
    return total


@dataclasses.dataclass(frozen=True)
class FamilyConfig:
    """Base for family configs: ``Config.from_size("m")`` reads the family's SIZES table."""

    SIZES: ClassVar[dict[str, dict[str, Any]]] = {}

    @classmethod
    def from_size(cls, size: str, **overrides: Any):
        check_choice("size", size, tuple(cls.SIZES))
        return cls(**{**cls.SIZES[size], **overrides})

    def n_params(self) -> int:
        """The model's parameters, counted from the config (tied weights once): what
        ``count_params(build_model())`` gives, without building it (tests compare the two)."""
        raise NotImplementedError(f"{type(self).__name__} does not count its parameters")


class Workload:
    """One model family: builds the model, batches, loss and analytic FLOPs for a config.

    Subclasses set ``name``, ``Config``, ``default_batch_size`` and the accuracy task
    (``accuracy_task``: ``"digits"`` or ``"text"``, see ``workloads.tasks``). Digits arrive as
    images (N, 1, 32, 32) in [0, 1] and are turned into the family's own input by
    ``encode_images``; the text task feeds byte tokens to a sequence model.
    """

    name: ClassVar[str]
    Config: ClassVar[type[FamilyConfig]]
    default_batch_size: ClassVar[int]
    seq_len: int | None = None
    accuracy_task: ClassVar[str] = "digits"
    # accuracy task budget (workloads.budget): samples (images, or tokens for text) per
    # parameter, steps at least / at most (per budget level), batch, peak lr (per size)
    accuracy_samples_per_param: ClassVar[float] = 0.1
    accuracy_min_steps: ClassVar[int] = 150
    accuracy_max_steps: ClassVar[dict[str, int]] = {"smoke": 150, "standard": 300, "full": 3000}
    accuracy_batch_size: ClassVar[int] = 64
    accuracy_lr: ClassVar[float] = 1e-3
    accuracy_lr_by_size: ClassVar[dict[str, float]] = {}
    accuracy_eval_every: ClassVar[int] = 10  # time to accuracy: steps between evaluations
    lr: ClassVar[float] = 1e-4

    def __init__(self, cfg: FamilyConfig):
        self.cfg = cfg

    # --- model and data -------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def synthetic_batch(
        self, batch_size: int, device: torch.device, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Training loss of the throughput batch."""
        return nn.functional.cross_entropy(output.float(), target)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images

    def class_logits(self, output: torch.Tensor) -> torch.Tensor:
        """(N, 10) class scores from the model output on encoded images."""
        return output

    def task_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(self.class_logits(output).float(), target)

    # --- FLOPs -----------------------------------------------------------
    def train_flops_per_sample(self) -> int:
        """Analytic FLOPs of forward + backward for one sample of the throughput batch."""
        raise NotImplementedError

    def infer_flops_per_sample(self) -> int:
        """Analytic FLOPs of a forward pass for one sample of the throughput batch."""
        raise NotImplementedError

    def flops_per_sample(self, phase: str) -> int:
        """The analytic FLOPs per sample of ``phase`` (train: forward + backward; infer: forward)."""
        check_choice("phase", phase, PHASES)
        return self.train_flops_per_sample() if phase == "train" else self.infer_flops_per_sample()

    def task_train_flops_per_sample(self) -> int:
        """Analytic FLOPs of forward + backward for one sample of the accuracy task."""
        return self.train_flops_per_sample()
