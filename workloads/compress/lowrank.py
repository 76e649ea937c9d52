"""Low-rank factorization of Linear layers: ``W ~= B @ A`` from a truncated SVD.

An ``nn.Linear(in, out)`` becomes ``LowRankLinear``: ``Linear(in, r, bias=False)`` then ``Linear(r, out)``,
cheaper only where ``r * (in + out) < in * out``. Measured on an AVX2 CPU at batch 256, a d x d layer breaks
even near r = 0.35-0.45 d (r = d/4: 2.0-2.4x, r = d/8: 4-6x), not at d/2.

Kept spectral energy (sum of the kept squared singular values over the total) is reported per layer but is
a poor guide to accuracy (a digits MLP kept 60% of its energy at rank 32 of 1024 with unchanged accuracy):
``choose_rank`` picks the rank by the caller's validation score.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from ..base import count_params

# Layers whose smaller side is larger than this use torch.svd_lowrank (a full 4096^2 SVD took 54 s on a core).
FULL_SVD_MAX = 1024
MIN_FEATURES = 64  # smaller layers (a 10-class head) are left alone: little to save, much to lose


class LowRankLinear(nn.Sequential):
    """``Linear(in, rank, bias=False)`` then ``Linear(rank, out)``: ``y = B (A x) + b``."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.in_features, self.out_features, self.rank = in_features, out_features, rank


@dataclasses.dataclass(frozen=True)
class FactorizedLayer:
    name: str
    in_features: int
    out_features: int
    rank: int
    energy: float  # kept spectral energy in [0, 1]


@dataclasses.dataclass
class Factorized:
    model: nn.Module
    params_before: int
    params_after: int
    layers: list[FactorizedLayer]
    skipped: dict[str, str]  # layer name -> why it was left dense

    def summary(self) -> dict:
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "layers": {f.name: {"rank": f.rank, "energy": f.energy} for f in self.layers},
            "skipped": dict(self.skipped),
        }


def truncated_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(U_r, S_r, V_r, kept energy) of ``weight`` (out, in); ``svd_lowrank`` above ``FULL_SVD_MAX``."""
    w = weight.detach().float()
    total = float(w.square().sum())
    if min(w.shape) > FULL_SVD_MAX and rank < min(w.shape):
        u, s, v = torch.svd_lowrank(w, q=min(rank + 16, min(w.shape)), niter=4)
    else:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        v = vh.mT
    u, s, v = u[:, :rank], s[:rank], v[:, :rank]
    energy = float(s.square().sum()) / total if total > 0 else 1.0
    return u, s, v, min(energy, 1.0)


def factorize_layer(layer: nn.Linear, rank: int) -> tuple[LowRankLinear, float]:
    """A ``LowRankLinear`` of ``rank`` with the singular values split evenly between its two factors."""
    u, s, v, energy = truncated_svd(layer.weight, rank)
    root = s.sqrt()
    out = LowRankLinear(layer.in_features, layer.out_features, rank, bias=layer.bias is not None)
    out = out.to(device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        out[0].weight.copy_(root[:, None] * v.mT)  # A: (rank, in)
        out[1].weight.copy_(u * root[None, :])  # B: (out, rank)
        if layer.bias is not None:
            out[1].bias.copy_(layer.bias)
    return out, energy


def layer_rank(layer: nn.Linear, rank_fraction: float | None, rank: int | None) -> int:
    full = min(layer.in_features, layer.out_features)
    r = rank if rank is not None else round(rank_fraction * full)  # type: ignore[operator]
    return max(1, min(r, full))


def _skip_reason(
    name: str, layer: nn.Linear, r: int, tied: set[int], skip: Sequence[str], only_if_cheaper: bool
) -> str | None:
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in skip):
        return "skipped by name"
    if id(layer.weight) in tied:
        return "weight tied to another module"
    if min(layer.in_features, layer.out_features) < MIN_FEATURES:
        return f"smaller than {MIN_FEATURES} features"
    if only_if_cheaper and r * (layer.in_features + layer.out_features) >= layer.in_features * layer.out_features:
        return f"rank {r} is not cheaper than dense"
    return None


def _tied_weights(model: nn.Module) -> set[int]:
    owners: dict[int, int] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    return {pid for pid, n in owners.items() if n > 1}


def factorize_linear(
    model: nn.Module,
    rank_fraction: float | None = None,
    rank: int | None = None,
    skip: Sequence[str] = (),
    only_if_cheaper: bool = True,
    inplace: bool = False,
) -> Factorized:
    """Replace eligible ``nn.Linear`` layers by ``LowRankLinear`` of rank ``rank`` or ``rank_fraction`` x
    min(in, out).

    Left dense, with the reason in ``skipped``: names matching a ``skip`` pattern (fnmatch, e.g.
    ``"head"``, ``"*.proj"``), layers whose weight is tied to another module, layers under
    ``MIN_FEATURES`` on a side, and (``only_if_cheaper``) layers the rank would not make cheaper.
    Returns the model (a copy unless ``inplace``) and per-layer rank and kept energy.
    """
    if (rank_fraction is None) == (rank is None):
        raise ValueError("factorize_linear: give exactly one of rank_fraction and rank")
    if rank_fraction is not None and not 0.0 < rank_fraction <= 1.0:
        raise ValueError(f"rank_fraction must be in (0, 1], got {rank_fraction}")
    work = model if inplace else copy.deepcopy(model)
    params_before, tied = count_params(work), _tied_weights(work)
    layers, skipped = [], {}
    for name, layer in list(work.named_modules()):
        if not isinstance(layer, nn.Linear):
            continue
        r = layer_rank(layer, rank_fraction, rank)
        reason = _skip_reason(name, layer, r, tied, skip, only_if_cheaper)
        if reason is not None:
            skipped[name] = reason
            continue
        replacement, energy = factorize_layer(layer, r)
        parent_name, _, child = name.rpartition(".")
        setattr(work.get_submodule(parent_name), child, replacement)
        layers.append(FactorizedLayer(name, layer.in_features, layer.out_features, r, energy))
    return Factorized(work, params_before, count_params(work), layers, skipped)


@dataclasses.dataclass
class RankChoice:
    rank_fraction: float | None  # None: no candidate met the target
    scores: dict[float, float]  # every candidate -> evaluate(factorized model)
    target: float
    factorized: Factorized | None  # the chosen model, if any


def choose_rank(
    model: nn.Module,
    candidates: Iterable[float],
    evaluate: Callable[[nn.Module], float],
    target: float,
    **factorize_kwargs,
) -> RankChoice:
    """The smallest rank fraction whose factorized model scores ``evaluate(model') >= target``.

    Every candidate is evaluated (all scores are returned, for the report); ``evaluate`` is the caller's
    validation metric (e.g. accuracy, after an optional fine-tune inside it). ``model`` is not modified.
    """
    scores: dict[float, float] = {}
    chosen: Factorized | None = None
    for fraction in sorted(set(candidates)):
        result = factorize_linear(model, rank_fraction=fraction, **factorize_kwargs)
        scores[fraction] = float(evaluate(result.model))
        if chosen is None and scores[fraction] >= target:
            chosen = result
    fraction = next((f for f, s in scores.items() if s >= target), None)
    return RankChoice(fraction, scores, target, chosen)
