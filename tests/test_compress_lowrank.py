"""Low-rank factorization: exact at full rank, fewer parameters at low rank, energy in [0, 1] and monotone,
only cheaper layers replaced, and the rank chosen by the caller's score."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.compress_helpers import build, inputs
from workloads.base import count_params
from workloads.compress import choose_rank, factorize_linear
from workloads.compress.lowrank import LowRankLinear, factorize_layer, truncated_svd


@pytest.mark.parametrize("family", ["dense", "transformer"])
def test_full_rank_reproduces_outputs(family):
    workload, model = build(family, "xs")
    x = inputs(workload, 4)
    result = factorize_linear(model, rank_fraction=1.0, only_if_cheaper=False)
    assert result.layers and all(f.energy == pytest.approx(1.0, abs=1e-5) for f in result.layers)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), rtol=1e-4, atol=1e-4)


def test_low_rank_reduces_params_and_keeps_shapes():
    workload, model = build("dense", "s")  # 1024 -> 512 -> 512 -> 512 -> 10
    x = inputs(workload, 4)
    result = factorize_linear(model, rank_fraction=0.25)
    assert [(f.name, f.rank) for f in result.layers] == [("net.1", 128), ("net.3", 128), ("net.5", 128)]
    assert result.skipped == {"net.7": "smaller than 64 features"}
    factors = 128 * (1024 + 512) + 512 + 2 * (128 * (512 + 512) + 512)  # A, B and the bias of each layer
    assert result.params_after == count_params(result.model) == factors + 512 * 10 + 10
    assert result.params_after < 0.45 * result.params_before
    assert isinstance(result.model.net[1], LowRankLinear) and isinstance(model.net[1], nn.Linear)  # a copy
    with torch.no_grad():
        assert result.model(x).shape == model(x).shape


def test_energy_in_unit_interval_and_monotone_in_rank():
    torch.manual_seed(0)
    layer = nn.Linear(96, 80)
    energies = [truncated_svd(layer.weight, r)[3] for r in (1, 4, 16, 40, 80)]
    assert all(0.0 <= e <= 1.0 for e in energies)
    assert energies == sorted(energies) and energies[-1] == pytest.approx(1.0, abs=1e-5)


def test_large_layers_use_randomized_svd_close_to_exact():
    torch.manual_seed(0)
    u, v = torch.randn(1100, 8), torch.randn(8, 1100)
    layer = nn.Linear(1100, 1100)
    with torch.no_grad():
        layer.weight.copy_(u @ v + 1e-3 * torch.randn(1100, 1100))  # rank 8 plus noise
    low, energy = factorize_layer(layer, 8)
    assert energy > 0.99
    x = torch.randn(4, 1100)
    with torch.no_grad():
        ref = layer(x)
        assert float((low(x) - ref).norm() / ref.norm()) < 1e-3


def test_only_cheaper_layers_are_factorized():
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))
    assert factorize_linear(model, rank=63).layers  # 63 * 256 < 128 * 128
    result = factorize_linear(model, rank=64)  # 64 * 256 == 128 * 128: no saving
    assert not result.layers and set(result.skipped) == {"0", "2"}


def test_skip_patterns_and_tied_weights_left_dense():
    _, model = build("transformer", "xs")
    result = factorize_linear(model, rank_fraction=0.25, skip=["*.proj"])
    assert result.skipped["head"] == "weight tied to another module"
    assert result.skipped["blocks.0.attn.proj"] == "skipped by name"
    factorized = {f"blocks.{i}.{n}" for i in range(2) for n in ("attn.qkv", "mlp.0", "mlp.2")}
    assert {f.name for f in result.layers} == factorized
    assert result.model.head.weight is result.model.wte.weight


def test_exactly_one_rank_argument():
    _, model = build("dense", "xs")
    with pytest.raises(ValueError, match="exactly one"):
        factorize_linear(model)
    with pytest.raises(ValueError, match="exactly one"):
        factorize_linear(model, rank_fraction=0.5, rank=4)


def test_choose_rank_picks_smallest_meeting_target():
    _, model = build("dense", "s")

    def fake_accuracy(m: nn.Module) -> float:  # grows with the rank of the first factorized layer
        return 0.5 + m.net[1].rank / 512

    choice = choose_rank(model, [0.5, 0.125, 0.25, 0.0625], fake_accuracy, target=0.74)
    assert choice.rank_fraction == 0.25  # 0.5 + 128/512 = 0.75 >= 0.74; 0.125 gives 0.625
    assert set(choice.scores) == {0.0625, 0.125, 0.25, 0.5}
    assert choice.scores[0.125] == pytest.approx(0.625)
    assert choice.factorized is not None and choice.factorized.model.net[1].rank == 128
    assert choose_rank(model, [0.125], fake_accuracy, target=0.99).rank_fraction is None
