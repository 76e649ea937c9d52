"""McNemar's test and MLPerf's targets; model_bytes for plain, tied, tensor-subclass and graph modules; the
package imports without torchao and torch_pruning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.compress_helpers import build
from workloads.compress import MLPERF_TARGETS, mcnemar, meets, model_bytes

ROOT = Path(__file__).resolve().parents[1]


def test_mcnemar_no_disagreement_gives_p_one():
    assert mcnemar([True, False, True], [True, False, True]) == {"b": 0, "c": 0, "p_value": 1.0, "method": "exact"}


def test_mcnemar_exact_for_few_disagreements():
    ref = [True] * 10 + [False] * 2
    new = [False] * 10 + [False] * 2  # 10 errors added, none fixed
    result = mcnemar(ref, new)
    assert (result["b"], result["c"], result["method"]) == (10, 0, "exact")
    assert result["p_value"] == pytest.approx(2 * 0.5**10)


def test_mcnemar_balanced_changes_are_not_evidence():
    ref = [True, False] * 3
    new = [False, True] * 3
    assert mcnemar(ref, new)["p_value"] == pytest.approx(1.0)


def test_mcnemar_chi_square_with_continuity_for_many():
    ref = [True] * 60 + [False] * 20 + [True] * 100
    new = [False] * 60 + [True] * 20 + [True] * 100  # b = 60, c = 20
    result = mcnemar(ref, new)
    assert (result["b"], result["c"], result["method"]) == (60, 20, "chi2-continuity")
    from scipy import stats

    assert result["p_value"] == pytest.approx(stats.chi2.sf(39**2 / 80, 1))
    assert result["p_value"] < 1e-4


def test_mcnemar_refuses_unpaired():
    with pytest.raises(ValueError, match="3 reference and 2 new"):
        mcnemar([True] * 3, [True] * 2)


def test_meets_mlperf_targets():
    assert MLPERF_TARGETS == (0.99, 0.999)
    assert meets(0.981, 0.99, 0.99) and not meets(0.979, 0.99, 0.99)  # 99% of 0.99 is 0.9801
    assert meets(0.9891, 0.99, 0.999) and not meets(0.9889, 0.99, 0.999)  # 99.9% of 0.99 is 0.98901
    assert meets(0.99 * 0.99, 0.99, 0.99)  # exactly at the target
    with pytest.raises(ValueError):
        meets(0.9, 0.9, 99)


def test_model_bytes_plain_and_tied():
    _, dense = build("dense", "xs")
    assert model_bytes(dense) == 4 * sum(p.numel() for p in dense.parameters())
    _, gpt = build("transformer", "xs")
    assert model_bytes(gpt) == 4 * sum(p.numel() for p in gpt.parameters())  # the tied head once


def test_model_bytes_counts_graph_constants_not_unused_attributes():
    model = nn.Sequential(nn.Linear(8, 8))
    gm = torch.fx.symbolic_trace(model)
    assert model_bytes(gm) == 4 * (64 + 8)
    gm.register_buffer("unused", torch.zeros(1000))  # an attribute the graph never reads
    assert model_bytes(gm) == 4 * (64 + 8)
    assert model_bytes(torch.compile(gm)) == 4 * (64 + 8)  # unwraps without compiling


def test_model_bytes_counts_subclass_inner_tensors():
    pytest.importorskip("torchao")
    from workloads.compress import quantize_weight_only_int8

    model = quantize_weight_only_int8(nn.Sequential(nn.Linear(256, 128)))
    # int8 data + fp32 scale and int8 zero point per row + the fp32 bias
    assert model_bytes(model) == 256 * 128 + 128 * (4 + 1) + 128 * 4


def test_import_loads_neither_torchao_nor_torch_pruning():
    code = "import sys, workloads.compress; print([m for m in sys.modules if m.startswith(('torchao', 'torch_prun'))])"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
