"""Pruning: structured pruning shrinks real layers in every family and keeps the interface; pruning
units that are already zero changes nothing; unstructured pruning reaches the asked sparsity."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tests.compress_helpers import build, inputs
from workloads import FAMILIES
from workloads.base import count_params
from workloads.compress import prune_structured, prune_unstructured

pytest.importorskip("torch_pruning", reason="structured pruning needs torch-pruning (pip install -e '.[compression]')")


def halved_params(family: str, size: str) -> int:
    """Parameters expected at ratio 0.5: every hidden width and every head count halved; the model's
    input, its output layer and a transformer's residual width (embeddings, tied head) unchanged."""
    W = FAMILIES[family]
    cfg = W.Config.from_size(size)
    if family == "dense":
        return count_params(W(dataclasses.replace(cfg, width=cfg.width // 2)).build_model())
    if family == "cnn":
        stages = tuple((c // 2, n) for c, n in cfg.stages)
        narrow = dataclasses.replace(cfg, stages=stages, fc=tuple(w // 2 for w in cfg.fc))
        return count_params(W(narrow).build_model())
    d = cfg.d_model
    attn_removed = 3 * (d // 2) * (d + 1) + (d // 2) * d  # qkv rows (+bias) and proj columns of half the heads
    mlp_removed = 2 * d * (d + 1) + 2 * d * d  # half of the 4d hidden units: fc1 rows (+bias), fc2 columns
    return count_params(W(cfg).build_model()) - cfg.n_layer * (attn_removed + mlp_removed)


@pytest.mark.parametrize("family,size", [(f, s) for f in FAMILIES for s in ("xs", "s")])
def test_structured_half_shrinks_params_and_keeps_interface(family, size):
    workload, model = build(family, size)
    x = inputs(workload, 4)
    ref_shape = model(x).shape
    result = prune_structured(model, x, 0.5)
    assert result.params_after == halved_params(family, size) == count_params(result.model)
    assert result.params_after < 0.61 * result.params_before
    assert count_params(model) == result.params_before  # the trained model is left alone
    with torch.no_grad():
        assert result.model(inputs(workload, 3)).shape == (3, *ref_shape[1:])
    assert result.layers and all(c.after == c.before // 2 for c in result.layers)


def test_structured_dense_halves_hidden_widths():
    workload, model = build("dense", "xs")
    result = prune_structured(model, inputs(workload, 2), 0.5)
    linears = [m for m in result.model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(1024, 48), (48, 48), (48, 10)]
    assert {(c.name, c.before, c.after) for c in result.layers} == {("net.1", 96, 48), ("net.3", 96, 48)}


def test_structured_cnn_shrinks_convs_and_the_linear_after_flatten():
    workload, model = build("cnn", "xs")  # convs 8, 20 channels; 20 * 5 * 5 features into fc 120
    result = prune_structured(model, inputs(workload, 2), 0.5)
    convs = [m for m in result.model.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [4, 10]
    assert result.model.classifier[1].in_features == 10 * 5 * 5


def test_structured_transformer_prunes_heads_and_mlp_keeps_tied_head():
    workload, model = build("transformer", "s")  # d_model 128, 4 heads, vocab 256
    result = prune_structured(model, inputs(workload, 2), 0.5)
    m = result.model
    for block in m.blocks:
        assert block.attn.n_head == 2
        assert block.attn.qkv.out_features == 3 * 2 * 32  # whole heads go; head size 32 stays
        assert block.attn.proj.in_features == 64
        assert block.mlp[0].out_features == 256
    assert m.head.weight is m.wte.weight
    assert m.head.weight.shape == (256, 128)
    assert {c.what for c in result.layers} == {"out_features", "heads"}


def _zero_units(model: nn.Module) -> None:
    """Zero every second MLP unit and attention head of a GPT: pruning them must not change the output."""
    with torch.no_grad():
        for block in model.blocks:
            fc1, fc2 = block.mlp[0], block.mlp[2]
            fc1.weight[1::2] = 0
            fc1.bias[1::2] = 0
            fc2.weight[:, 1::2] = 0
            attn, hs = block.attn, block.attn.proj.in_features // block.attn.n_head
            for h in range(1, attn.n_head, 2):
                for part in range(3):  # q, k, v rows of head h
                    rows = slice(part * attn.proj.in_features + h * hs, part * attn.proj.in_features + (h + 1) * hs)
                    attn.qkv.weight[rows] = 0
                    attn.qkv.bias[rows] = 0
                attn.proj.weight[:, h * hs : (h + 1) * hs] = 0


def test_structured_pruning_of_zero_units_preserves_the_function():
    """The dependency graph maps indices through qkv's (3, heads, head_dim) layout correctly."""
    workload, model = build("transformer", "s")
    _zero_units(model)
    x = inputs(workload, 2)
    with torch.no_grad():
        ref = model(x)
        result = prune_structured(model, x, 0.5)
        out = result.model(x)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_structured_ratio_zero_changes_nothing():
    workload, model = build("dense", "xs")
    result = prune_structured(model, inputs(workload, 2), 0.0)
    assert result.params_after == result.params_before and result.layers == []


def test_structured_calls_fine_tune_on_the_pruned_model():
    workload, model = build("dense", "xs")
    seen = []
    result = prune_structured(model, inputs(workload, 2), 0.5, fine_tune=seen.append)
    assert seen == [result.model]


@pytest.mark.parametrize("family", ["dense", "cnn", "transformer"])
@pytest.mark.parametrize("sparsity", [0.3, 0.8])
def test_unstructured_reaches_asked_sparsity(family, sparsity):
    workload, model = build(family, "xs")
    x = inputs(workload, 3)
    result = prune_unstructured(model, sparsity)
    assert abs(result.sparsity - sparsity) <= 0.01
    assert result.model(x).shape == model(x).shape
    weights = [m.weight for m in result.model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert all(type(w) is nn.Parameter for w in weights)  # masks removed: plain dense tensors
    assert not any(name.endswith("_orig") or name.endswith("_mask") for name in result.model.state_dict())
    assert not any(bool((m.weight == 0).any()) for m in model.modules() if isinstance(m, nn.Linear))  # a copy


def test_unstructured_fine_tune_runs_with_masks_attached():
    _, model = build("dense", "xs")

    def fine_tune(m: nn.Module) -> None:
        assert hasattr(m.net[1], "weight_mask")
        with torch.no_grad():
            m.net[1].weight_orig.add_(1.0)  # a training step that would revive pruned weights

    result = prune_unstructured(model, 0.5, fine_tune=fine_tune)
    assert abs(result.sparsity - 0.5) <= 0.01


def test_unstructured_tied_weight_pruned_once_and_stays_tied():
    _, model = build("transformer", "xs")
    result = prune_unstructured(model, 0.5)
    assert result.model.head.weight is result.model.wte.weight
    assert abs(result.sparsity - 0.5) <= 0.01
