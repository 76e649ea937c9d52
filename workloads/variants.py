"""Variants: named ways to run a case. A variant builds what the harness runs, a
:class:`Runnable`: its timed step (a training step, or a forward pass for an inference
variant), its model and state sizes, its own result fields, and its quality on real data.

Training variants wrap the stages of a plain step (autocast around the forward, a scaler
around backward and the optimizer step, DDP or a DeepSpeed engine around the model) instead of
rewriting the model: they implement :meth:`TrainVariant.trainer`. Inference variants transform a
model (:class:`InferVariant`). A new variant is one file with its class and one line in
``workloads.registry.VARIANTS``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from . import accuracy, tta
from .base import Unsupported
from .context import CaseContext
from .state import optimizer_state_tensors, tensor_bytes

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Runnable(Protocol):
    """What a variant hands the harness for one case."""

    def step(self) -> None:
        """One timed unit of work on the case's fixed batch; the harness syncs the device after it."""

    def params(self) -> int:
        """Parameters of the model the step runs (a compressed model counts its own)."""

    def flops_per_sample(self) -> float | None:
        """FLOPs the step really does per sample where it differs from the family's analytic
        count (a pruned model), else None."""

    def model_state_bytes(self) -> int | None:
        """Parameters, gradients and optimizer state held by this rank (None: not applicable)."""

    def model_bytes(self) -> int:
        """Bytes of the model as saved."""

    def extra_info(self) -> dict[str, Any]:
        """The variant's own result fields, with an ``absent`` dict for the ones it could not measure."""

    def accuracy(self) -> dict[str, Any]:
        """Quality on the real-data task: the accuracy fields of the schema."""

    def close(self) -> None: ...


class Trainer(Protocol):
    """A training variant's step machinery around one model."""

    model: nn.Module

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def predict(self, inputs: torch.Tensor) -> torch.Tensor: ...

    def model_state_bytes(self) -> int: ...

    def close(self) -> None: ...


class Variant:
    """A named way to run a case: refuses what the device cannot run, builds the Runnable."""

    name: str = ""
    phases: tuple[str, ...] = ("train",)  # the phases it can run; a case runs one of them
    compute_dtype: torch.dtype = torch.float32
    # modules a worker process may import before the case starts (heavy, side-effect free)
    preload: tuple[str, ...] = ()
    # variants this one is compared with in the same phase: a session that runs it runs them too
    baselines: tuple[str, ...] = ()
    # Each rank steps on its own batch (DDP, ZeRO, FSDP): a step over world size N processes
    # N x batch_size samples. False (pipeline, tensor parallel): the ranks share one batch, a
    # step processes batch_size samples whatever N (``Case.samples_per_step``).
    data_parallel: bool = True

    def check(self, device: torch.device, world_size: int) -> None:
        """Raise Unsupported with the reason when this variant cannot run here."""

    def set_up(self, device: torch.device, say: Callable[[str], None]) -> None:
        """Once per session, in the pytest process before the cases start and outside their
        watchdog: machine set-up the variant's cases need, such as building an extension once
        per machine. ``say`` prints a line; raise to make the variant's cases fail with why."""

    def build(self, ctx: CaseContext) -> Runnable:
        """What the harness runs for ``ctx`` (``ctx.phase`` is one of ``phases``)."""
        raise NotImplementedError

    def predicted_state_bytes(self, n_params: int, world_size: int) -> int | None:
        """The model-state bytes the variant should hold per rank (None when no formula)."""
        return None


# ------------------------------------------------------------------------------------------
# training


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


class TrainStep:
    """The Runnable of a training variant: one optimizer step on the fixed batch per ``step``."""

    def __init__(self, variant: TrainVariant, ctx: CaseContext):
        self.variant, self.ctx = variant, ctx
        w = ctx.workload
        torch.manual_seed(ctx.seed)
        model = w.build_model()
        self.n_params = sum(p.numel() for p in model.parameters())
        self.trainer = variant.trainer(model, w.loss, w.lr, ctx.device, ctx.world_size)
        self.batch = w.synthetic_batch(ctx.batch_size, ctx.device, torch.Generator().manual_seed(ctx.seed))

    def step(self) -> None:
        self.trainer.train_step(*self.batch)

    def params(self) -> int:
        return self.n_params

    def flops_per_sample(self) -> float | None:
        return None

    def model_state_bytes(self) -> int | None:
        return self.trainer.model_state_bytes()

    def predicted_state_bytes(self) -> int | None:
        """The variant's formula; a trainer that knows more of the model (which parameters a
        pipeline stage or a tensor-parallel rank holds) gives its own."""
        own = getattr(self.trainer, "predicted_state_bytes", None)
        if own is not None:
            return own()
        return self.variant.predicted_state_bytes(self.n_params, self.ctx.world_size)

    def model_bytes(self) -> int:
        own = getattr(self.trainer, "model_bytes", None)  # ZeRO-3 holds only partitions: it counts itself
        if own is not None:
            return own()
        return tensor_bytes(self.trainer.model.state_dict().values())

    def extra_info(self) -> dict[str, Any]:
        own = getattr(self.trainer, "extra_info", None)  # variant keys (ZeRO: paper formula ...)
        return own() if own is not None else {}

    def accuracy(self) -> dict[str, Any]:
        """A fresh, seeded model trained with this variant on the real-data task."""
        return accuracy.train_and_evaluate(self.ctx, self.make_trainer)

    def time_to_accuracy(self, config: tta.TTAConfig) -> dict[str, Any]:
        """Seeded runs trained with this variant until the held-out target (``workloads.tta``)."""
        return tta.time_to_accuracy(self.ctx, self.make_trainer, config)

    def make_trainer(self, model: nn.Module, loss_fn: LossFn, lr: float) -> Trainer:
        """This variant's trainer around a fresh model of the accuracy task."""
        return self.variant.trainer(model, loss_fn, lr, self.ctx.device, self.ctx.world_size)

    def close(self) -> None:
        self.trainer.close()


class TrainVariant(Variant):
    """A training variant: builds a Trainer; the harness times one optimizer step."""

    phases = ("train",)

    def trainer(self, model: nn.Module, loss_fn: LossFn, lr: float, device: torch.device, world_size: int) -> Trainer:
        raise NotImplementedError

    def build(self, ctx: CaseContext) -> Runnable:
        return TrainStep(self, ctx)


class FP32(TrainVariant):
    """Plain fp32: training steps; in the infer phase, the trained reference's forward pass."""

    name = "fp32"
    phases = ("train", "infer")

    def build(self, ctx: CaseContext) -> Runnable:
        if ctx.phase == "infer":
            from .compressed import reference_step  # the compressed variants' module: its imports are lazy

            return reference_step(ctx)
        return super().build(ctx)

    def trainer(self, model, loss_fn, lr, device, world_size):
        return TorchTrainer(model, loss_fn, lr, device, world_size=world_size)

    def predicted_state_bytes(self, n_params, world_size):
        return 16 * n_params  # fp32 params, grads, Adam m and v: 4 + 4 + 8 bytes, all replicated


class AMP(TrainVariant):
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


# ------------------------------------------------------------------------------------------
# inference


class ForwardStep:
    """The Runnable of an inference variant: one forward pass of ``model`` on the fixed batch
    under ``torch.inference_mode`` per ``step``."""

    def __init__(self, ctx: CaseContext, model: Callable[[torch.Tensor], torch.Tensor], module: nn.Module):
        self.ctx, self.model, self.module = ctx, model, module
        gen = torch.Generator().manual_seed(ctx.seed)
        self.inputs, _ = ctx.workload.synthetic_batch(ctx.batch_size, ctx.device, gen)
        self.info: dict[str, Any] = {}

    def step(self) -> None:
        with torch.inference_mode():
            self.model(self.inputs)

    def latency_step(self) -> Callable[[], None]:
        """One forward pass of a single sample (latency at batch 1)."""
        one = self.inputs[:1]

        def step() -> None:
            with torch.inference_mode():
                self.model(one)

        return step

    def params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def flops_per_sample(self) -> float | None:
        return None

    def model_state_bytes(self) -> int | None:
        return None  # no training state: absent

    def predicted_state_bytes(self) -> int | None:
        return None

    def model_bytes(self) -> int:
        return tensor_bytes([*self.module.parameters(), *self.module.buffers()])

    def extra_info(self) -> dict[str, Any]:
        return dict(self.info)

    def accuracy(self) -> dict[str, Any]:
        def predict(inputs: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return self.model(inputs)

        return accuracy.evaluate(self.ctx, predict)

    def close(self) -> None:
        self.model = self.module = None  # type: ignore[assignment]


class InferVariant(Variant):
    """An inference variant: a model for the case (``model``), transformed by ``prepare``; the
    harness times one forward pass. Subclasses override ``model`` and ``prepare``."""

    phases = ("infer",)

    def model(self, ctx: CaseContext) -> nn.Module:
        """The model to transform (a fresh seeded one by default)."""
        torch.manual_seed(ctx.seed)
        return ctx.workload.build_model().to(ctx.device).eval()

    def prepare(self, ctx: CaseContext, model: nn.Module) -> nn.Module:
        return model

    def build(self, ctx: CaseContext) -> Runnable:
        module = self.prepare(ctx, self.model(ctx))
        return ForwardStep(ctx, module, module)
