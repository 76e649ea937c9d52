"""Tensor parallelism (``tp``, ``torch.distributed.tensor.parallel``), registered into ``VARIANTS``.

The transformer's blocks in Megatron-LM's layout over all ranks (a 1-D device mesh): attention
``qkv`` ``ColwiseParallel`` (each rank computes n_head/N heads), ``proj`` ``RowwiseParallel``
(each rank multiplies its heads' slice; the outputs are all-reduced), the MLP's first Linear
colwise and its second rowwise. Embeddings, LayerNorms and the tied head stay replicated. The
fused ``qkv`` rows are reordered before sharding so that each rank's contiguous slice holds the
q, k and v rows of its own heads, and the attention module's head count is set to the local
one (as torchtitan does): the function computed is unchanged (``tests/test_parallel.py`` checks
the loss against fp32 on one rank). Runs with gloo on CPUs (DTensor's all-reduce) and NCCL on
GPUs; dense and CNN models are refused (no attention/MLP pair to shard), as is world size 1.

Like a pipeline, the ranks share one batch (``data_parallel = False``): ``samples_per_step`` is
``batch_size``. Model state per rank: the local shards of the sharded Linears plus every
replicated parameter, each with its gradient and AdamW m and v; predicted as
``16 (Ψs/N + Ψr)`` for Ψs sharded and Ψr replicated parameters (a rowwise Linear's bias is
replicated), ignoring padding of uneven shards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import Unsupported
from .state import tensor_bytes
from .transformer import GPT
from .variants import TorchTrainer, TrainVariant

# block-relative module -> (style, parameters that style shards)
PLAN: dict[str, tuple[str, tuple[str, ...]]] = {
    "attn.qkv": ("colwise", ("weight", "bias")),
    "attn.proj": ("rowwise", ("weight",)),
    "mlp.0": ("colwise", ("weight", "bias")),
    "mlp.2": ("rowwise", ("weight",)),
}


def sharded_params(model: GPT) -> int:
    """Parameters the plan shards (the rest are replicated)."""
    total = 0
    for block in model.blocks:
        for path, (_, names) in PLAN.items():
            module = block.get_submodule(path)
            total += sum(getattr(module, n).numel() for n in names if getattr(module, n, None) is not None)
    return total


def tp_state_bytes(n_params: int, n_sharded: int, world_size: int) -> int:
    """16 bytes per parameter this rank holds: its shard of the sharded ones, all replicated ones."""
    return round(16 * (n_sharded / world_size + n_params - n_sharded))


def heads_by_rank(qkv: nn.Linear, n_head: int, ranks: int) -> None:
    """Reorder the fused qkv rows from (3, n_head, hs) to (ranks, 3, n_head/ranks, hs), so a
    contiguous 1/ranks slice holds q, k and v of that rank's heads."""
    hs = qkv.out_features // (3 * n_head)
    order = torch.arange(qkv.out_features).view(3, ranks, n_head // ranks, hs).transpose(0, 1).reshape(-1)
    with torch.no_grad():
        qkv.weight.copy_(qkv.weight[order])
        if qkv.bias is not None:
            qkv.bias.copy_(qkv.bias[order])


def parallelize(model: GPT, device: torch.device, world_size: int) -> GPT:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    styles = {"colwise": ColwiseParallel, "rowwise": RowwiseParallel}
    mesh = init_device_mesh(device.type, (world_size,))
    for block in model.blocks:
        heads_by_rank(block.attn.qkv, block.attn.n_head, world_size)
        block.attn.n_head //= world_size  # the heads this rank computes
        parallelize_module(block, mesh, {path: styles[style]() for path, (style, _) in PLAN.items()})
    return model


class TPTrainer(TorchTrainer):
    """TorchTrainer (AdamW, fp32) on the tensor-parallel model; no DDP: the ranks share a batch."""

    def __init__(self, model: nn.Module, loss_fn, lr: float, device: torch.device, world_size: int):
        if not isinstance(model, GPT):
            raise Unsupported(
                f"tp: shards the transformer's attention and MLP Linears; a {type(model).__name__} model "
                "has none (use fsdp2 or pipeline)"
            )
        n_head = model.blocks[0].attn.n_head
        if n_head % world_size:
            raise Unsupported(f"tp: {n_head} attention heads do not split over {world_size} ranks")
        self.n_params = sum(p.numel() for p in model.parameters())
        self.n_sharded = sharded_params(model)
        self.full_bytes = tensor_bytes(model.state_dict().values())
        self.world_size = world_size
        super().__init__(parallelize(model.to(device), device, world_size), loss_fn, lr, device, world_size=1)

    def predicted_state_bytes(self) -> int:
        return tp_state_bytes(self.n_params, self.n_sharded, self.world_size)

    def model_bytes(self) -> int:
        return self.full_bytes

    def extra_info(self) -> dict[str, Any]:
        return {"tp_sharded_params": self.n_sharded}


class TensorParallel(TrainVariant):
    name = "tp"
    data_parallel = False

    def check(self, device: torch.device, world_size: int) -> None:
        if world_size < 2:
            raise Unsupported("tp: shards layers over the ranks and needs --world-size >= 2")
        if not torch.distributed.is_available():
            raise Unsupported("tp: this torch build has no torch.distributed")

    def trainer(self, model, loss_fn, lr, device, world_size):
        return TPTrainer(model, loss_fn, lr, device, world_size)

    def predicted_state_bytes(self, n_params: int, world_size: int) -> None:
        return None  # depends on which parameters the plan shards: the trainer's own
