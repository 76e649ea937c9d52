"""Registry: family x size x variant -> a runnable ``Case``.

``build_case`` refuses unsupported combinations with ``Unsupported(reason)`` when the case is
built; bench/ turns that into ``pytest.skip(reason)``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch

from .base import SIZE_ORDER, Unsupported, Workload, check_choice, count_params
from .cnn import CNN
from .data import load_task
from .dense import Dense
from .probe import synchronize
from .transformer import Transformer
from .variants import VARIANTS, Trainer, Variant, tensor_bytes

FAMILIES: dict[str, type[Workload]] = {"dense": Dense, "cnn": CNN, "transformer": Transformer}


def variant_names() -> list[str]:
    """Every registered variant spelling (DeepSpeed ones when workloads.zero imports)."""
    from . import zero  # noqa: F401  (registers zero variants; imports deepspeed lazily)

    return list(VARIANTS)


def get_variant(name: str) -> Variant:
    check_choice("variant", name, variant_names())
    return VARIANTS[name]()


def parse_device(device: str) -> torch.device:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device: {device!r} is not a torch device ({e})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Unsupported(f"device {device}: CUDA is not available in this torch build/machine")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@dataclasses.dataclass
class Case:
    """One benchmark: ``step()`` runs one timed unit of work and ends with a device sync."""

    id: str
    family: str
    size: str
    variant: str
    phase: str
    device: torch.device
    compute_dtype: torch.dtype
    world_size: int
    batch_size: int
    seq_len: int | None
    params: int
    flops_per_step: float  # all ranks
    workload: Workload
    variant_obj: Variant
    trainer: Trainer
    batch: tuple[torch.Tensor, torch.Tensor]
    data_dir: str | None = None
    seed: int = 0
    step_fn: Callable[[], None] | None = None

    @property
    def samples_per_step(self) -> int:
        return self.batch_size * self.world_size

    @property
    def dtype(self) -> str:
        return str(self.compute_dtype).removeprefix("torch.")

    def step(self) -> None:
        inputs, targets = self.batch
        self.trainer.train_step(inputs, targets)
        synchronize(self.device)

    def model_bytes(self) -> int:
        """Bytes of the model's state_dict tensors, as saved (tied weights once)."""
        own = getattr(self.trainer, "model_bytes", None)  # ZeRO-3 holds only partitions: it counts itself
        if own is not None:
            return own()
        return tensor_bytes(self.trainer.model.state_dict().values())

    def static_info(self) -> dict:
        """The schema fields known before timing."""
        return {
            "id": self.id,
            "family": self.family,
            "size": self.size,
            "variant": self.variant,
            "phase": self.phase,
            "device": str(self.device),
            "dtype": self.dtype,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "params": self.params,
            "samples_per_step": self.samples_per_step,
            "flops_per_step": self.flops_per_step,
        }

    def accuracy(self, steps: int | None = None) -> dict:
        """Train a fresh, seeded model of this case on the real-data task and evaluate it.

        The budget (steps, batch, learning rate) is fixed per family, so variants of one case
        are compared at equal work. Returns the accuracy fields of the schema.
        """
        w = self.workload
        task = load_task(self.data_dir)
        steps = w.accuracy_steps if steps is None else steps
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        trainer = self.variant_obj.trainer(w.build_model(), w.task_loss, w.accuracy_lr, self.device, self.world_size)
        try:
            x_train = w.encode_images(task.x_train)
            x_test = w.encode_images(task.x_test)
            n, bs = len(task.y_train), w.accuracy_batch_size
            rank = torch.distributed.get_rank() if self.world_size > 1 else 0
            order = torch.randperm(n, generator=gen)
            pos = 0
            for _ in range(steps):
                if pos + bs * self.world_size > n:
                    order, pos = torch.randperm(n, generator=gen), 0
                idx = order[pos + rank * bs : pos + (rank + 1) * bs]
                pos += bs * self.world_size
                trainer.train_step(x_train[idx].to(self.device), task.y_train[idx].to(self.device))
            correct = 0
            for i in range(0, len(task.y_test), 256):
                out = trainer.predict(x_test[i : i + 256].to(self.device))
                pred = w.class_logits(out).argmax(-1).cpu()
                correct += int((pred == task.y_test[i : i + 256]).sum())
        finally:
            trainer.close()
        return {
            "accuracy": correct / len(task.y_test),
            "accuracy_metric": "top1",
            "accuracy_task": task.name,
            "accuracy_steps": steps,
        }

    def close(self) -> None:
        self.trainer.close()


def tier_batch_size(workload: type[Workload], batch_size: int | None) -> int:
    bs = workload.default_batch_size if batch_size is None else batch_size
    if bs < 1:
        raise ValueError(f"batch_size must be >= 1, got {bs}")
    return bs


def build_case(
    family: str,
    size: str,
    variant: str,
    device: str = "cpu",
    world_size: int = 1,
    batch_size: int | None = None,
    data_dir: str | None = None,
    seed: int = 0,
) -> Case:
    """Build a runnable case, or raise ``Unsupported``/``ValueError`` with the reason."""
    check_choice("family", family, tuple(FAMILIES))
    check_choice("size", size, SIZE_ORDER)
    var = get_variant(variant)
    dev = parse_device(device)
    var.check(dev, world_size)
    if world_size > 1 and not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise Unsupported(f"world size {world_size}: torch.distributed is not initialized")
    W = FAMILIES[family]
    workload = W(W.Config.from_size(size))
    bs = tier_batch_size(W, batch_size)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = workload.build_model()
    params = count_params(model)
    trainer = var.trainer(model, workload.loss, W.lr, dev, world_size)
    batch = workload.synthetic_batch(bs, dev, gen)
    return Case(
        id=f"{family}-{size}-{variant}",
        family=family,
        size=size,
        variant=variant,
        phase=var.phase,
        device=dev,
        compute_dtype=var.compute_dtype,
        world_size=world_size,
        batch_size=bs,
        seq_len=workload.seq_len,
        params=params,
        flops_per_step=float(workload.train_flops_per_sample() * bs * world_size),
        workload=workload,
        variant_obj=var,
        trainer=trainer,
        batch=batch,
        data_dir=data_dir,
        seed=seed,
    )


def estimate_case_seconds(family: str, size: str, batch_size: int | None, peak_tflops: float, steps: int) -> float:
    """Lower bound of the compute time of ``steps`` throughput steps at the probed peak."""
    W = FAMILIES[family]
    workload = W(W.Config.from_size(size))
    flops = workload.train_flops_per_sample() * tier_batch_size(W, batch_size)
    return steps * flops / (peak_tflops * 1e12) if peak_tflops > 0 else math.inf


def accuracy_flops(family: str, size: str) -> float:
    """Analytic training FLOPs of the accuracy task's whole budget (one rank)."""
    W = FAMILIES[family]
    return float(W(W.Config.from_size(size)).task_train_flops_per_sample() * W.accuracy_batch_size * W.accuracy_steps)


def estimate_accuracy_seconds(family: str, size: str, peak_tflops: float) -> float:
    """Lower bound of the accuracy task's compute time at the probed peak."""
    return accuracy_flops(family, size) / (peak_tflops * 1e12) if peak_tflops > 0 else math.inf


__all__ = ["FAMILIES", "Case", "Unsupported", "build_case", "get_variant", "variant_names"]
