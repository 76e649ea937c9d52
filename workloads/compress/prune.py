"""Pruning a trained model: structured (layers really shrink) and unstructured (zeros in dense weights).

``prune_structured`` removes whole channels with torch-pruning's dependency graph, so coupled layers shrink
together: MLP widths, conv channels and the Linear inputs after a flatten, MLP hidden widths and whole
attention heads. It keeps the model's interface: the layers that produce the model's output (found by
running ``example_inputs``) and every ``nn.Embedding`` (hence a transformer's residual width and a tied
output head) are left at their size. Attention modules are found by convention: a module with an int
``n_head`` or ``num_heads`` attribute and an ``nn.Linear`` child ``qkv`` whose output is (3, heads,
head_dim); after pruning the attribute is set to the heads left. Its forward must take widths from its
layers (``view(B, T, 3, n_head, -1)``), not from the input.

``prune_unstructured`` zeroes the smallest weights globally. The tensors stay dense: no speed-up, no smaller
file; sparse kernels pay only at >= 90% sparsity on CPU.

Neither fine-tunes on its own: pass ``fine_tune`` (the caller's training loop) to recover accuracy.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from ..base import count_params

FineTune = Callable[[nn.Module], None]
HEAD_COUNT_ATTRS = ("n_head", "num_heads")
QKV_NAME = "qkv"
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclasses.dataclass(frozen=True)
class LayerChange:
    """One layer's width before and after (``what``: out_features, out_channels or heads)."""

    name: str
    what: str
    before: int
    after: int


@dataclasses.dataclass
class Pruned:
    model: nn.Module
    ratio: float
    params_before: int
    params_after: int
    layers: list[LayerChange]

    def summary(self) -> dict:
        return {
            "prune_ratio": self.ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "layers": {f"{c.name}.{c.what}": [c.before, c.after] for c in self.layers},
        }


@dataclasses.dataclass
class Sparsified:
    model: nn.Module
    sparsity: float  # achieved, over the pruned weights
    layers: dict[str, float]  # layer name -> its sparsity


def _as_tuple(inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)


def output_layers(model: nn.Module, example_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> list[nn.Module]:
    """The leaf modules whose output tensor is (an element of) the model's output."""
    produced: dict[int, nn.Module] = {}
    hooks = [
        m.register_forward_hook(lambda mod, _inp, out: produced.__setitem__(id(out), mod))
        for m in model.modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            out = model(*_as_tuple(example_inputs))
    finally:
        for h in hooks:
            h.remove()
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [produced[id(o)] for o in outs if id(o) in produced]


def attention_modules(model: nn.Module) -> dict[nn.Module, str]:
    """Attention modules by the convention in the module docstring -> the name of their head-count attribute."""
    found = {}
    for module in model.modules():
        attr = next((a for a in HEAD_COUNT_ATTRS if isinstance(getattr(module, a, None), int)), None)
        if attr is not None and isinstance(getattr(module, QKV_NAME, None), nn.Linear):
            found[module] = attr
    return found


def _widths(model: nn.Module, attention: dict[nn.Module, str]) -> dict[tuple[str, str], int]:
    widths = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            widths[(name, "out_features")] = m.out_features
        elif isinstance(m, nn.modules.conv._ConvNd):
            widths[(name, "out_channels")] = m.out_channels
        if m in attention:
            widths[(name, "heads")] = getattr(m, attention[m])
    return widths


def prune_structured(
    model: nn.Module,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    ratio: float,
    importance_p: int = 2,
    ignored_layers: list[nn.Module] | None = None,
    fine_tune: FineTune | None = None,
    inplace: bool = False,
) -> Pruned:
    """Remove the fraction ``ratio`` of channels (and of attention heads) with the smallest L-p group norm.

    Returns the pruned model (a copy unless ``inplace``) with the parameter counts and every layer whose
    width changed. Layers in ``ignored_layers`` (of ``model``) keep their output width, besides the ones
    the module docstring lists. ``fine_tune(pruned)`` runs last when given. A pruned model has a new
    structure: save the module, not a state_dict.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    import torch_pruning as tp

    names = {id(m): n for n, m in model.named_modules()}
    work = model if inplace else copy.deepcopy(model)
    by_name = dict(work.named_modules())
    example = _as_tuple(example_inputs)
    ignored = [by_name[names[id(m)]] for m in ignored_layers or []]
    ignored += output_layers(work, example) + [m for m in work.modules() if isinstance(m, nn.Embedding)]
    attention = attention_modules(work)
    before, params_before = _widths(work, attention), count_params(work)
    was_training = work.training
    work.eval()
    with torch.enable_grad():  # the dependency graph is traced through autograd
        pruner = tp.pruner.BasePruner(
            work,
            example,
            importance=tp.importance.GroupMagnitudeImportance(p=importance_p),
            pruning_ratio=ratio,
            ignored_layers=ignored,
            num_heads={getattr(m, QKV_NAME): getattr(m, attr) for m, attr in attention.items()},
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=ratio,
        )
        pruner.step()
    for m, attr in attention.items():
        setattr(m, attr, pruner.num_heads[getattr(m, QKV_NAME)])
    work.train(was_training)
    after = _widths(work, attention)
    changes = [LayerChange(n, what, before[(n, what)], w) for (n, what), w in after.items() if w != before[(n, what)]]
    if fine_tune is not None:
        fine_tune(work)
    return Pruned(work, ratio, params_before, count_params(work), changes)


def _prunable_weights(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and conv layers, one place per distinct weight (a tied weight is pruned once)."""
    seen, out = set(), []
    for name, m in model.named_modules():
        if isinstance(m, PRUNABLE) and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append((name, m))
    return out


def prune_unstructured(
    model: nn.Module, sparsity: float, fine_tune: FineTune | None = None, inplace: bool = False
) -> Sparsified:
    """Zero the fraction ``sparsity`` of all Linear/conv weights with the smallest magnitude, globally.

    Uses ``torch.nn.utils.prune.global_unstructured``; ``fine_tune(model)`` runs while the masks are attached
    (pruned weights stay zero), then ``prune.remove`` leaves plain dense tensors with zeros. Returns the
    model (a copy unless ``inplace``), the achieved sparsity over those weights, and each layer's.
    """
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    from torch.nn.utils import prune

    work = model if inplace else copy.deepcopy(model)
    layers = _prunable_weights(work)
    params = [(m, "weight") for _, m in layers]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=sparsity)
    if fine_tune is not None:
        fine_tune(work)
    for m, name in params:
        prune.remove(m, name)
    per_layer = {name: float((m.weight == 0).float().mean()) for name, m in layers}
    zeros = sum(int((m.weight == 0).sum()) for _, m in layers)
    total = sum(m.weight.numel() for _, m in layers)
    return Sparsified(work, zeros / total if total else 0.0, per_layer)
