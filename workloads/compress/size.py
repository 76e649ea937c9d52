"""Bytes a (compressed) model keeps: the tensors it actually computes with, as saved.

- Plain modules: parameters and buffers, each storage once (tied weights count once).
- torchao tensor subclasses (``Int8Tensor`` ...): their inner tensors (int8 data, scales, zero points),
  found through ``__tensor_flatten__``, not the logical fp32 size the wrapper reports.
- ``torch.fx.GraphModule`` (what ``convert_pt2e`` returns): only the constants its graph reads
  (``get_attr`` nodes) and the state of the submodules it calls. ``convert_pt2e`` keeps the original fp32
  parameters as attributes beside the int8 ones; the graph no longer reads them, so they are not counted.
- ``torch.compile`` wrappers are unwrapped to the module they compile.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable

import torch
from torch import nn


def _leaf_tensors(t: torch.Tensor) -> Iterable[torch.Tensor]:
    """The plain tensors holding ``t``'s data: itself, or a tensor subclass's inner tensors, recursively."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if isinstance(t, nn.Parameter):
        t = t.data
    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()
        for name in names:
            inner = getattr(t, name)
            if isinstance(inner, torch.Tensor):
                yield from _leaf_tensors(inner)
    else:
        yield t


def tensors_bytes(tensors: Iterable[torch.Tensor | None], seen: set[tuple[int, str]] | None = None) -> int:
    """Bytes of the distinct storages behind ``tensors``; ``seen`` carries storages already counted."""
    seen = set() if seen is None else seen
    total = 0
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor):
            continue
        for t in _leaf_tensors(tensor):
            if t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = (storage.data_ptr(), str(t.device))
            if storage.nbytes() == 0 or key in seen:
                continue
            seen.add(key)
            total += storage.nbytes()
    return total


def _unwrap(module: nn.Module) -> nn.Module:
    while hasattr(module, "_orig_mod"):  # torch.compile's OptimizedModule
        module = module._orig_mod
    return module


def graph_tensors(gm: torch.fx.GraphModule) -> list[torch.Tensor]:
    """The tensors a GraphModule's graph reads: ``get_attr`` constants and the state of called submodules."""
    out: list[torch.Tensor] = []
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            value = operator.attrgetter(node.target)(gm)
            if isinstance(value, torch.Tensor):
                out.append(value)
        elif node.op == "call_module":
            sub = gm.get_submodule(node.target)
            out += [*sub.parameters(), *sub.buffers()]
    return out


def model_bytes(module: nn.Module) -> int:
    """Bytes of the tensors ``module`` computes with, deduplicated by storage (see the module docstring)."""
    module = _unwrap(module)
    if isinstance(module, torch.fx.GraphModule):
        return tensors_bytes(graph_tensors(module))
    return tensors_bytes([*module.parameters(), *module.buffers()])
