"""int8: PT2E static quantization (in a subprocess: it changes inductor's global settings), torchao weight-only
(outputs and bytes), the CUDA path's refusal on CPU, and the CPU feature detection that picks reduce_range."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.compress_helpers import build, inputs
from workloads import cpu_features
from workloads.base import Unsupported
from workloads.compress import model_bytes, quantize_dynamic_int8, quantize_weight_only_int8

ROOT = Path(__file__).resolve().parents[1]
torchao = pytest.importorskip("torchao", reason="int8 transforms need torchao (pip install -e '.[compression]')")

STATIC_WORKER = """
import json, sys
import torch
from tests.compress_helpers import build, fit_task
from workloads.compress import model_bytes, quantize_static_int8
from workloads.cpu_features import has_vnni

family = sys.argv[1]
torch.manual_seed(0)
workload, model = build(family, "xs")
x_test = fit_task(workload, model)[:256]
batches = [x_test[i : i + 64] for i in range(0, 256, 64)]
fp32_bytes = model_bytes(model)
q = quantize_static_int8(model, batches[0], batches)
with torch.inference_mode():
    ref = torch.cat([model(b) for b in batches])
    out = torch.cat([q(b) for b in batches])
quant_max = [
    n.args[4] for n in q._orig_mod.graph.nodes if n.op == "call_function" and "quantize_per_tensor" in str(n.target)
]
print(json.dumps({
    "agreement": float((ref.argmax(-1) == out.argmax(-1)).float().mean()),  # per image, or per next byte
    "rel_error": float((out - ref).norm() / ref.norm()),
    "bytes_ratio": model_bytes(q) / fp32_bytes,
    "freezing": bool(torch._inductor.config.freezing),
    "vnni": has_vnni(),
    "activation_quant_max": max(quant_max),
}))
"""


def python_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def run_static_worker(family: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", STATIC_WORKER, family],
        cwd=ROOT,
        env=python_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def static_result() -> dict:
    return run_static_worker("dense")


def test_static_int8_outputs_close_to_fp32(static_result):
    assert static_result["agreement"] >= 0.95
    assert static_result["rel_error"] < 0.05


def test_static_int8_reduce_range_from_cpu_features(static_result):
    """Without VNNI activations are quantized to 0..127 (reduce_range), with it to 0..255."""
    assert static_result["activation_quant_max"] == (255 if static_result["vnni"] else 127)
    assert static_result["vnni"] == cpu_features.has_vnni()


def test_static_int8_counts_int8_constants_only(static_result):
    """convert_pt2e keeps fp32 parameters beside the int8 ones: only the graph's constants count."""
    assert static_result["bytes_ratio"] < 0.35


def test_static_int8_sets_freezing_in_its_own_process(static_result):
    assert static_result["freezing"] is True
    assert torch._inductor.config.freezing is False  # this process is untouched


@pytest.mark.nightly  # a second PT2E compile (20 s); the dense one runs in every suite
def test_static_int8_transformer_close_to_fp32():
    """The GPT exports (SDPA, tied head) and quantizes; its embeddings stay fp32 (PT2E quantizes matmuls)."""
    result = run_static_worker("transformer")
    assert result["agreement"] >= 0.95
    assert result["rel_error"] < 0.05
    assert result["bytes_ratio"] < 0.6


def test_reduce_range_follows_vnni():
    assert cpu_features.has_vnni(frozenset({"avx2"})) is False
    assert cpu_features.has_vnni(frozenset({"avx2", "avx512f", "avx512_vnni"})) is True
    assert cpu_features.has_vnni(frozenset({"avx2", "avx_vnni"})) is True
    info = cpu_features.machine_info()
    assert info["int8_reduce_range"] is (not info["vnni"])
    assert set(info["cpu_features"]) == set(cpu_features.FEATURES)


def test_cpu_flags_parsed_from_cpuinfo(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni amx_int8\n\nprocessor\t: 1\n")
    flags = cpu_features.cpu_flags(str(path))
    assert cpu_features.features(flags) == {name: name in flags for name in cpu_features.FEATURES}
    assert cpu_features.has_vnni(flags)


@pytest.mark.parametrize("family", ["dense", "transformer"])
def test_weight_only_int8_close_and_under_a_third_of_fp32(family):
    workload, model = build(family, "xs")
    x = inputs(workload, 32)
    fp32_bytes = model_bytes(model)
    with torch.inference_mode():
        ref = model(x)
    q = quantize_weight_only_int8(model)
    with torch.inference_mode():
        out = q(x)
    assert out.shape == ref.shape
    assert float((out - ref).norm() / ref.norm()) < 0.02
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95
    assert model_bytes(q) <= 0.3 * fp32_bytes
    assert model_bytes(model) == fp32_bytes  # a copy unless inplace


def test_weight_only_int8_keeps_tied_head():
    _, model = build("transformer", "xs")
    q = quantize_weight_only_int8(model)
    assert q.head.weight is q.wte.weight
    assert type(q.head.weight.data).__name__ == "Int8Tensor"


def test_dynamic_int8_refused_on_cpu_with_reason():
    _, model = build("dense", "xs")
    with pytest.raises(Unsupported, match="CUDA"):
        quantize_dynamic_int8(model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA int8 path needs a CUDA device")
def test_dynamic_int8_on_cuda():
    workload, model = build("dense", "xs")
    model = model.cuda()
    x = inputs(workload, 64).cuda()
    with torch.inference_mode():
        ref = model(x)
        out = quantize_dynamic_int8(model)(x)
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() >= 0.95


def test_static_batches_run_each_size_on_its_graph_and_pad_the_rest():
    from workloads.compress.int8 import StaticBatches

    calls = []

    def graph(size):
        def run(x):
            assert x.shape[0] == size, f"graph for {size} called with {x.shape[0]}"
            calls.append(size)
            return x * 2 + size

        return run

    model = StaticBatches({4: graph(4), 1: graph(1)})
    x = torch.arange(10.0).reshape(10, 1)
    torch.testing.assert_close(model(x), x * 2 + 4)  # 4 + 4 + 2 padded to 4, padding dropped
    assert calls == [4, 4, 4]
    torch.testing.assert_close(model(x[:1]), x[:1] * 2 + 1)  # batch 1: its own graph
    torch.testing.assert_close(model(x[:4]), x[:4] * 2 + 4)
    assert calls == [4, 4, 4, 1, 4]
