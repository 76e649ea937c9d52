"""Training variants: each wraps the stages of a plain step (autocast around the forward,
a scaler around backward and the optimizer step, DDP or a DeepSpeed engine around the model)
instead of rewriting the model.

A variant builds a ``Trainer`` for a model and a loss. Spellings: ``fp32``, ``amp-bf16``,
``amp-fp16``; DeepSpeed stages and their compositions live in ``workloads.zero`` and register
themselves in ``VARIANTS`` (``zero1``, ``zero2+bf16`` ...).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from .base import Unsupported

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Trainer(Protocol):
    """What a variant hands the harness: one training step, inference, and its state size."""

    model: nn.Module

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def predict(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def model_state_bytes(self) -> int: ...

    def close(self) -> None: ...


def tensor_bytes(tensors, seen: set[int] | None = None) -> int:
    """Bytes of distinct storages among ``tensors`` (shared or tied tensors count once).

    ``seen`` holds the storages already counted and is updated, so several calls can share it.
    Meta tensors hold no memory and are skipped.
    """
    seen = set() if seen is None else seen
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key in seen or storage.nbytes() == 0:
            continue
        seen.add(key)
        total += storage.nbytes()
    return total


def optimizer_state_tensors(optimizer: torch.optim.Optimizer):
    for state in optimizer.state.values():
        yield from (v for v in state.values() if isinstance(v, torch.Tensor))


class TorchTrainer:
    """Plain PyTorch step: AdamW, optional autocast and GradScaler, DDP across ranks."""

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        lr: float,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        grad_scaler: bool = False,
        world_size: int = 1,
    ):
        self.device = device
        self.module = model.to(device)
        self.model: nn.Module = self.module
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.module, device_ids=ids)
        self.loss_fn = loss_fn
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.autocast_dtype = autocast_dtype
        self.scaler = torch.amp.GradScaler(device.type) if grad_scaler else None

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            loss = self.loss_fn(self.model(inputs), targets)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        try:
            with self.autocast():
                return self.module(inputs)
        finally:
            self.module.train()

    def model_state_bytes(self) -> int:
        """Parameters + gradients + optimizer state, measured after a step.

        Gradients are freed by ``zero_grad(set_to_none=True)``, so they are counted at the
        size a backward pass allocates: one per trainable parameter.
        """
        params = list(self.module.parameters())
        grads = tensor_bytes(p for p in params if p.requires_grad)
        return tensor_bytes(params) + grads + tensor_bytes(optimizer_state_tensors(self.optimizer))

    def close(self) -> None:
        self.optimizer.state.clear()


class Variant:
    """A named way to train: refuses what the device cannot run, builds the Trainer."""

    name: str = ""
    phase: str = "train"
    compute_dtype: torch.dtype = torch.float32

    def check(self, device: torch.device, world_size: int) -> None:
        """Raise Unsupported with the reason when this variant cannot run here."""

    def trainer(self, model: nn.Module, loss_fn: LossFn, lr: float, device: torch.device, world_size: int) -> Trainer:
        raise NotImplementedError

    def predicted_state_bytes(self, n_params: int, world_size: int) -> int | None:
        """The model-state bytes the variant should hold per rank (None when no formula)."""
        return None


class FP32(Variant):
    name = "fp32"

    def trainer(self, model, loss_fn, lr, device, world_size):
        return TorchTrainer(model, loss_fn, lr, device, world_size=world_size)

    def predicted_state_bytes(self, n_params, world_size):
        return 16 * n_params  # fp32 params, grads, Adam m and v: 4 + 4 + 8 bytes, all replicated


class AMP(Variant):
    """Autocast around the forward; fp16 adds a GradScaler around backward and step."""

    def __init__(self, dtype: torch.dtype):
        self.compute_dtype = dtype
        self.name = {torch.bfloat16: "amp-bf16", torch.float16: "amp-fp16"}[dtype]

    def check(self, device, world_size):
        if not torch.amp.is_autocast_available(device.type):
            raise Unsupported(f"{self.name}: torch has no autocast for device type {device.type}")
        if device.type == "cuda":
            if self.compute_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                name = torch.cuda.get_device_name(device)
                raise Unsupported(f"{self.name}: {name} has no bfloat16 support (needs Ampere or newer)")

    def trainer(self, model, loss_fn, lr, device, world_size):
        return TorchTrainer(
            model,
            loss_fn,
            lr,
            device,
            autocast_dtype=self.compute_dtype,
            grad_scaler=self.compute_dtype is torch.float16,
            world_size=world_size,
        )

    def predicted_state_bytes(self, n_params, world_size):
        return 16 * n_params  # autocast keeps fp32 weights, grads and Adam state


VARIANTS: dict[str, Callable[[], Variant]] = {
    "fp32": FP32,
    "amp-bf16": lambda: AMP(torch.bfloat16),
    "amp-fp16": lambda: AMP(torch.float16),
}
