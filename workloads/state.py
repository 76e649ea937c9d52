"""Model-state accounting shared by the variants: bytes of distinct storages, the state a
trainer holds at one moment by kind, and a meter that samples it through a training step."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch


def tensor_bytes(tensors, seen: set[int] | None = None) -> int:
    """Bytes of distinct storages among ``tensors`` (shared or tied tensors count once).

    ``seen`` holds the storages already counted and is updated, so several calls can share it.
    Meta tensors hold no memory and are skipped; a DTensor counts its local shard.
    """
    seen = set() if seen is None else seen
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor) or t.device.type == "meta":
            continue
        t = getattr(t, "_local_tensor", t)  # DTensor (FSDP2, tensor parallel): this rank's shard
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


@dataclasses.dataclass
class StateBytes:
    """Bytes held at one moment, by kind; ``total`` is what ``model_state_bytes`` reports."""

    params: int = 0
    grads: int = 0
    optimizer: int = 0
    moment: str = ""

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer

    def as_dict(self) -> dict:
        return {"params": self.params, "grads": self.grads, "optimizer": self.optimizer, "moment": self.moment}


def count_storages(kinds: dict[str, Iterable[torch.Tensor]], exclude: Iterable[torch.Tensor] = ()) -> dict[str, int]:
    """Bytes of distinct storages per kind; a storage counts once, under the first kind that
    holds it, and not at all when ``exclude`` (communication buffers) holds it."""
    seen: set[int] = set()
    for t in exclude:
        if t.device.type != "meta":
            seen.add(t.untyped_storage().data_ptr())
    out = {}
    for kind, tensors in kinds.items():
        out[kind] = tensor_bytes(tensors, seen)
    return out


class PeakMeter:
    """Samples ``held(moment)`` through one training step: after every gradient accumulation of
    ``params``, just before ``optimizer`` steps and after the step; keeps the largest total
    (``peak``). Subclasses that track more override ``observe``."""

    def __init__(
        self,
        held: Callable[[str], StateBytes],
        params: Iterable[torch.Tensor],
        optimizer: torch.optim.Optimizer | None,
    ):
        self.held, self.optimizer = held, optimizer
        self.params = [p for p in params if p.requires_grad]
        self.peak: StateBytes | None = None
        self._handles: list = []

    def observe(self, got: StateBytes) -> None:
        """Called with every sample."""

    def sample(self, moment: str) -> None:
        got = self.held(moment)
        self.observe(got)
        if self.peak is None or got.total > self.peak.total:
            self.peak = got

    def __enter__(self) -> PeakMeter:
        for p in self.params:
            self._handles.append(p.register_post_accumulate_grad_hook(lambda _p: self.sample("backward")))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_pre_hook(lambda *_: self.sample("optimizer step")))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.sample("after step")
