"""PyTorch FSDP2 variants (``torch.distributed.fsdp.fully_shard``), registered into ``VARIANTS``.

Spelling: ``fsdp2`` shards parameters, gradients and AdamW state over the ranks and gathers each
layer's parameters only while it computes (FSDP2's default: every group reshards after forward
except the root, whose parameters would be gathered again at once for backward), like ZeRO-3;
``fsdp2-grad-op`` keeps every group's gathered parameters from forward to backward
(``reshard_after_forward=False``: only gradients and optimizer state stay sharded through the
step), like ZeRO-2. A ``+bf16`` suffix adds FSDP2's ``MixedPrecisionPolicy`` (bf16 gathered
parameters and compute, gradients reduced in fp32, fp32 sharded parameters and AdamW state), e.g.
``fsdp2-grad-op+bf16``. Each layer is sharded first (the transformer's blocks; each Linear or
Conv2d of the dense and CNN models), then the root: what is left (embeddings, final norm, the
tied head) forms the root's group. At world size 1 the process becomes a 1-rank group.

Measured model state (``model_state_bytes``): the peak, over one instrumented step (the second,
when AdamW's state exists), of this rank's sharded parameters (their padded local storage),
sharded gradients, AdamW state and the gathered parameters of the groups that stay unsharded
between forward and backward (the root in ``fsdp2``, every group in ``fsdp2-grad-op``). It is
sampled at the end of forward, after every gradient accumulation in backward, before the
optimizer step and after it. A layer gathered only while it computes, and the unsharded
gradients of a group until its reduce-scatter, are FSDP2's temporary buffers, as ZeRO-3's
gathered layers and reduce buckets are (``workloads/zero.py``): their peak is reported apart
(``fsdp_gathered_bytes``) and shows in ``peak_mem_bytes``.

Prediction (``model_state_bytes_predicted``), Ψ parameters, Ψr of them in the root's own group,
N ranks, b bytes per gathered parameter (4 fp32, 2 bf16); sharded state is 4Ψ/N parameters +
8Ψ/N AdamW m and v + 4Ψ/N gradients (fp32 in both precisions):

- ``fsdp2``: at the step all of it, 16Ψ/N; during backward, before the root's reduce-scatter,
  the root's parameters are gathered (bΨr) where its gradient shard (4Ψr/N) is not yet:
  ``16Ψ/N + max(0, bΨr - 4Ψr/N)``. Dense and CNN models have no root parameters: 16Ψ/N.
- ``fsdp2-grad-op``: at the end of forward every parameter is gathered, no gradient exists
  yet: ``12Ψ/N + max(bΨ, 4Ψ/N)`` (the ZeRO paper's stage-2 fp32 form ``4Ψ + 12Ψ/N``).

The formulas ignore the padding of each parameter's first dimension to a multiple of N.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.machinery
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .base import Unsupported
from .state import PeakMeter, StateBytes, count_storages, optimizer_state_tensors, tensor_bytes
from .variants import LossFn, TrainVariant
from .zero import ensure_process_group

BASES: dict[str, bool | None] = {"fsdp2": None, "fsdp2-grad-op": False}  # name -> reshard_after_forward
PRECISIONS: dict[str, torch.dtype] = {"": torch.float32, "+bf16": torch.bfloat16}


def fsdp2_state_bytes(
    n_params: int, root_params: int, world_size: int, compute_bytes: int, reshard_after_forward: bool
) -> int:
    """Model-state bytes per rank at FSDP2's peak (see the module docstring)."""
    if n_params < 0 or not 0 <= root_params <= n_params or world_size < 1 or compute_bytes not in (2, 4):
        raise ValueError(
            "need 0 <= root_params <= n_params, world_size >= 1, compute_bytes 2 or 4; "
            f"got {root_params}, {n_params}, {world_size}, {compute_bytes}"
        )
    psi, n, b = n_params, world_size, compute_bytes
    if reshard_after_forward:
        return round(16 * psi / n + max(0.0, b * root_params - 4 * root_params / n))
    return round(12 * psi / n + max(b * psi, 4 * psi / n))


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules sharded before the root: the blocks of a model that keeps them in a
    ModuleList, else every module that owns parameters itself (Linear, Conv2d)."""
    lists = [m for m in model.children() if isinstance(m, nn.ModuleList)]
    if lists:
        return [block for blocks in lists for block in blocks]
    return [m for m in model.modules() if m is not model and any(True for _ in m.parameters(recurse=False))]


def root_params(model: nn.Module, units: list[nn.Module]) -> int:
    """Parameters not inside any unit: the root group's own (a tied weight counts once)."""
    inside = {id(p) for u in units for p in u.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in inside)


# --------------------------------------------------------------------------------------
# Counting what FSDP2 holds


@dataclasses.dataclass
class FSDPStateBytes(StateBytes):
    """StateBytes with the gathered parameters FSDP2 keeps between forward and backward (part
    of ``params``) and, apart, the temporary buffers of the moment (not model state)."""

    unsharded: int = 0
    gathered: int = 0

    def as_dict(self) -> dict:
        return super().as_dict() | {"unsharded_params": self.unsharded, "gathered": self.gathered}


def fsdp_params(model: nn.Module) -> Iterator[tuple[Any, bool]]:
    """(FSDPParam, kept unsharded after forward) of every parameter FSDP2 manages in ``model``.
    Reads FSDP2's parameter groups (``torch.distributed.fsdp._fully_shard``, torch 2.13)."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if not isinstance(module, FSDPModule):
            continue
        group = module._get_fsdp_state()._fsdp_param_group  # noqa: SLF001 (no public accessor)
        if group is None:
            continue
        for fsdp_param in group.fsdp_params:
            yield fsdp_param, group.post_forward_mesh_info is None


def held_state(model: nn.Module, optimizer: torch.optim.Optimizer, moment: str = "") -> FSDPStateBytes:
    """What this rank holds now, by kind (the gathered buffers of the moment apart)."""
    sharded, grads, kept, gathered = [], [], [], []
    for fsdp_param, keeps in fsdp_params(model):
        sharded.append(fsdp_param.sharded_param)
        grads.append(fsdp_param.sharded_param.grad)
        (kept if keeps else gathered).extend(fsdp_param.all_gather_outputs)
        unsharded = getattr(fsdp_param, "_unsharded_param", None)  # created by the first gather
        if unsharded is not None:
            gathered.append(unsharded.grad)  # until the group's reduce-scatter
    got = count_storages(
        {"params": sharded, "unsharded": kept, "grads": grads, "optimizer": optimizer_state_tensors(optimizer)}
    )
    params = got["params"] + got["unsharded"]
    return FSDPStateBytes(params, got["grads"], got["optimizer"], moment, got["unsharded"], tensor_bytes(gathered))


class StateMeter(PeakMeter):
    """Samples ``held_state`` through one step (see the module docstring), after the gradient
    accumulations of the gathered parameters; keeps the largest total, and the largest
    temporary buffers apart (``gathered``)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        unsharded = [getattr(p, "_unsharded_param", None) for p, _ in fsdp_params(model)]
        super().__init__(lambda m: held_state(model, optimizer, m), [p for p in unsharded if p is not None], optimizer)
        self.gathered = 0

    def observe(self, got: FSDPStateBytes) -> None:
        self.gathered = max(self.gathered, got.gathered)


# --------------------------------------------------------------------------------------
# The trainer


class FSDPTrainer:
    """AdamW training of a ``fully_shard``-ed model; implements ``Trainer``."""

    MEASURE_AT_STEP = 2  # AdamW creates its state in the first step: measure the second

    def __init__(self, variant: FSDP2, model: nn.Module, loss_fn: LossFn, lr: float, device: torch.device,
                 world_size: int):  # fmt: skip
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        ensure_process_group(device, world_size)
        self.variant, self.loss_fn, self.world_size = variant, loss_fn, world_size
        self.n_params = sum(p.numel() for p in model.parameters())
        self.full_bytes = tensor_bytes(model.state_dict().values())  # before sharding: the whole model
        units = shard_units(model)
        self.root_params = root_params(model, units)
        options: dict[str, Any] = {"reshard_after_forward": variant.reshard_after_forward}
        if variant.compute_dtype is not torch.float32:
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=variant.compute_dtype, reduce_dtype=torch.float32)
        model.to(device)
        for unit in units:
            fully_shard(unit, **options)
        self.model: nn.Module = fully_shard(model, **options)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.steps = 0
        self.state: FSDPStateBytes | None = None
        self.gathered: int | None = None

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        meter = StateMeter(self.model, self.optimizer) if self.steps == self.MEASURE_AT_STEP else None
        if meter is not None:
            meter.__enter__()
        try:
            out = self.model(inputs)
            if meter is not None:
                meter.sample("end of forward")
            loss = self.loss_fn(out, targets)
            loss.backward()
            self.optimizer.step()
        finally:
            if meter is not None:
                meter.__exit__()
                self.state, self.gathered = meter.peak, meter.gathered
        self.optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        try:
            return self.model(inputs)
        finally:
            self.model.train()

    def model_state_bytes(self) -> int:
        """Peak over the instrumented step (the state now, before that step has run)."""
        if self.state is None:
            return held_state(self.model, self.optimizer, "now").total
        return self.state.total

    def predicted_state_bytes(self) -> int:
        return self.variant.state_bytes(self.n_params, self.root_params, self.world_size)

    def model_bytes(self) -> int:
        return self.full_bytes

    def extra_info(self) -> dict:
        info: dict = {
            "fsdp_root_params": self.root_params,
            "fsdp_gathered_bytes": self.gathered,
            "model_state_breakdown": self.state.as_dict() if self.state else None,
            "absent": {},
        }
        if self.state is None:
            why = f"fewer than {self.MEASURE_AT_STEP} steps ran"
            info["absent"] |= {"fsdp_gathered_bytes": why, "model_state_breakdown": why}
        return info

    def close(self) -> None:
        self.optimizer.state.clear()


# --------------------------------------------------------------------------------------
# The variants


class FSDP2(TrainVariant):
    """FSDP2 full sharding (``fsdp2``) or gradient and optimizer sharding (``fsdp2-grad-op``)."""

    def __init__(self, base: str, precision: str = ""):
        if base not in BASES or precision not in PRECISIONS:
            raise ValueError(f"fsdp2 variant: unknown {base + precision!r}")
        self.name = base + precision
        self.reshard_after_forward = BASES[base]
        self.compute_dtype = PRECISIONS[precision]

    @property
    def compute_bytes(self) -> int:
        return torch.empty((), dtype=self.compute_dtype).element_size()

    def check(self, device: torch.device, world_size: int) -> None:
        if not torch.distributed.is_available():
            raise Unsupported(f"{self.name}: this torch build has no torch.distributed")
        if not has_fully_shard():
            raise Unsupported(f"{self.name}: torch {torch.__version__} has no FSDP2 fully_shard")
        if device.type == "cuda" and self.compute_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise Unsupported(f"{self.name}: {torch.cuda.get_device_name(device)} has no bfloat16 support")

    def trainer(self, model, loss_fn, lr, device, world_size):
        return FSDPTrainer(self, model, loss_fn, lr, device, world_size)

    def state_bytes(self, n_params: int, root_params: int, world_size: int) -> int:
        reshard = self.reshard_after_forward is not False
        return fsdp2_state_bytes(n_params, root_params, world_size, self.compute_bytes, reshard)

    def predicted_state_bytes(self, n_params: int, world_size: int) -> int:
        """The formula for a model whose parameters all sit in sharded layers (no root group);
        the trainer gives the model's own (``FSDPTrainer.predicted_state_bytes``)."""
        return self.state_bytes(n_params, 0, world_size)


def has_fully_shard() -> bool:
    """Whether this torch ships FSDP2 (``torch.distributed.fsdp._fully_shard``), found without
    importing it: importing ``torch.distributed.fsdp`` takes 2 s, which ``--plan`` paid per session."""
    fsdp = [os.path.join(path, "fsdp") for path in torch.distributed.__path__]
    return importlib.machinery.PathFinder.find_spec("_fully_shard", fsdp) is not None


FSDP_VARIANTS = {b + p: functools.partial(FSDP2, b, p) for b in BASES for p in PRECISIONS}
