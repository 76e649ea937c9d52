"""Workloads: size tables, analytic FLOPs, real-data tasks, variants and refusals."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from workloads import FAMILIES, NOMINAL_PARAMS, SIZE_ORDER, Unsupported, build_case, variant_names
from workloads.base import count_params
from workloads.compress.distill import student_config
from workloads.data import load_digits_task, load_mnist_idx, load_task
from workloads.probe import matmul_peak_tflops

FAMILY_SIZES = [(f, s) for f in FAMILIES for s in SIZE_ORDER]


def meta_model(family: str, size: str):
    W = FAMILIES[family]
    workload = W(W.Config.from_size(size))
    with torch.device("meta"):
        model = workload.build_model()
    return workload, model


@pytest.mark.parametrize("family,size", FAMILY_SIZES)
def test_size_table_within_30_percent_of_nominal(family, size):
    _, model = meta_model(family, size)
    n = count_params(model)
    assert 0.7 * NOMINAL_PARAMS[size] <= n <= 1.3 * NOMINAL_PARAMS[size], n


@pytest.mark.parametrize("family,size", FAMILY_SIZES)
def test_config_counts_the_parameters_the_model_has(family, size):
    """``n_params`` (budgets and students read it without building a model) against the model."""
    W = FAMILIES[family]
    for cfg in (W.Config.from_size(size), student_config(family, W.Config.from_size(size))):
        with torch.device("meta"):
            assert cfg.n_params() == count_params(W(cfg).build_model()), cfg


@pytest.mark.parametrize("family,size", FAMILY_SIZES)
def test_analytic_flops_match_flop_counter(family, size):
    """fwd + bwd of a batch of 2 on the meta device; MATH attention so SDPA is counted."""
    workload, model = meta_model(family, size)
    x, y = workload.synthetic_batch(2, torch.device("cpu"), torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        workload.loss(model(x.to("meta")), y.to("meta")).backward()
    counted = counter.get_total_flops()
    assert counted > 0
    assert workload.train_flops_per_sample() * 2 == pytest.approx(counted, rel=0.10)


@pytest.mark.parametrize("family,size", FAMILY_SIZES)
def test_analytic_inference_flops_match_flop_counter(family, size):
    """A forward pass of a batch of 2 on the meta device, as the inference phase times it."""
    workload, model = meta_model(family, size)
    x, _ = workload.synthetic_batch(2, torch.device("cpu"), torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x.to("meta"))
    assert workload.infer_flops_per_sample() * 2 == pytest.approx(counter.get_total_flops(), rel=0.10)
    assert workload.flops_per_sample("infer") == workload.infer_flops_per_sample()
    assert workload.flops_per_sample("train") == workload.train_flops_per_sample()


def test_transformer_flops_follow_palm_form():
    W = FAMILIES["transformer"]
    cfg = W.Config.from_size("s")
    L, d, T, V = cfg.n_layer, cfg.d_model, cfg.seq_len, cfg.vocab_size
    n_matmul = 12 * L * d * d + V * d
    assert W(cfg).train_flops_per_sample() == (6 * n_matmul + 12 * L * d * T) * T


def test_lenet5_topology_at_base_size():
    _, model = meta_model("cnn", "xs")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.kernel_size for c in convs] == [(5, 5), (5, 5)]
    assert [lin.out_features for lin in linears] == [120, 84, 10]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_accuracy_task_learns_well_above_chance(family):
    case = build_case(family, "xs", "fp32", accuracy_steps=60)
    result = case.runnable.accuracy()
    assert result["accuracy_steps"] == 60
    if family == "transformer":  # next-byte prediction on held-out Python sources
        assert result["accuracy_task"] == "text" and result["accuracy_metric"] == "next_byte_top1"
        assert result["bits_per_byte"] < 5.0, result  # a uniform guess is 8 bits, the byte frequencies 4.5
    else:
        assert result["accuracy_task"] == "digits"
        assert result["accuracy"] > 0.5, result  # chance is 0.1


def test_digits_split_is_real_stratified_and_seeded():
    a, b = load_digits_task(), load_digits_task()
    assert a.x_train.shape[1:] == (1, 32, 32)
    assert len(a.y_train) + len(a.y_test) == 1797
    assert torch.equal(a.y_test, b.y_test)
    assert set(a.y_test.tolist()) == set(range(10))
    assert 0.0 <= float(a.x_train.min()) and float(a.x_train.max()) <= 1.0


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)


def test_mnist_idx_loader_pads_to_32(tmp_path):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (20, 28, 28)))
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng.integers(0, 10, 20), gz=True)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", rng.integers(0, 10, 5))
    task = load_task(str(tmp_path))
    assert task.name == "mnist"
    assert task.x_train.shape == (20, 1, 32, 32) and task.x_test.shape == (5, 1, 32, 32)
    assert float(task.x_train[:, :, :2].abs().sum()) == 0.0  # the 2-pixel pad


def test_mnist_idx_loader_names_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_idx(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        load_mnist_idx(tmp_path)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(family="rnn", size="xs", variant="fp32"),
            "family: unknown 'rnn'; allowed: dense, cnn, transformer",
        ),
        (
            dict(family="dense", size="xxl", variant="fp32"),
            "size: unknown 'xxl'; allowed: xs, s, m, l, xl",
        ),
        (dict(family="dense", size="xs", variant="fp64"), "variant: unknown 'fp64'; allowed: fp32"),
    ],
)
def test_unknown_names_are_refused_with_allowed_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_case(**kwargs)


def test_cuda_without_gpu_is_unsupported_with_reason():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(Unsupported, match="CUDA is not available"):
        build_case("dense", "xs", "fp32", device="cuda")


def test_world_size_without_process_group_is_unsupported():
    with pytest.raises(Unsupported, match="torch.distributed is not initialized"):
        build_case("dense", "xs", "fp32", world_size=2)


@pytest.mark.parametrize("variant", ["fp32", "amp-bf16", "amp-fp16"])
def test_variant_step_trains_and_counts_state(variant):
    case = build_case("dense", "xs", variant, batch_size=8)
    trainer = case.runnable.trainer
    before = [p.detach().clone() for p in trainer.model.parameters()]
    case.step()
    after = list(trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True)), "the step changed no weight"
    assert case.compute_dtype == {"fp32": torch.float32, "amp-bf16": torch.bfloat16, "amp-fp16": torch.float16}[variant]
    # AdamW in fp32: params + grads + m + v = 16 bytes per parameter, and a 4-byte step
    # counter per parameter tensor
    n_tensors = len(list(trainer.model.parameters()))
    assert case.runnable.model_state_bytes() == 16 * case.params + 4 * n_tensors
    assert case.samples_per_step == 8 and case.phase == "train"
    assert case.flops_per_step == case.ctx.workload.train_flops_per_sample() * 8


def test_variant_names_include_base_variants():
    assert {"fp32", "amp-bf16", "amp-fp16"} <= set(variant_names())


def test_matmul_probe_reports_a_positive_rate():
    assert matmul_peak_tflops(torch.device("cpu"), torch.float32, min_time_s=0.005, max_n=512) > 0
