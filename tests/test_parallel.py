"""FSDP2, pipeline, tensor parallel and compile variants: spellings, formulas, refusals, the
samples-per-step hook, loss parity, and a 2-rank ``pytest bench`` run.

The parity tests are marked ``slow``: one ``torchrun`` of 2 gloo ranks trains every variant from
the same seed (``parity_worker``; run this file as a script under torchrun to get it), and
compile is compared with eager in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the parity worker, started by torchrun
    sys.path.insert(0, str(ROOT))

from bench import distributed  # noqa: E402
from tests.bench_runs import end_rank_worker, rank_env, run_ranks  # noqa: E402
from workloads import FAMILIES, Unsupported, build_case, get_variant, variant_names  # noqa: E402
from workloads.context import CaseContext  # noqa: E402
from workloads.fsdp import fsdp2_state_bytes, root_params, shard_units  # noqa: E402
from workloads.pipeline_parallel import balanced_split, gpt_units, ideal_bubble, mlp_units  # noqa: E402
from workloads.registry import Case, workload  # noqa: E402
from workloads.tasks import task_for  # noqa: E402
from workloads.tensor_parallel import sharded_params, tp_state_bytes  # noqa: E402

PARITY_STEPS = 6
# fp32: FSDP2's reduce-scatter and a pipeline's per-micro-batch mean sum in another order than
# DDP's all-reduce and one full-batch mean; measured equal to ~1e-7 relative at 2 gloo ranks.
RTOL_FP32 = 1e-5
RTOL_BF16 = 2e-2  # bf16 gathered parameters and compute (as test_zero.py's +bf16)
# compile: inductor fuses and reorders fp32 reductions; measured 3e-7 relative after 4 steps
RTOL_COMPILE = 1e-4
PSI = 1_000_000
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (zero3 in the 2-rank run)"
)


def family_workload(family: str, size: str = "xs"):
    W = FAMILIES[family]
    return W(W.Config.from_size(size))


# --------------------------------------------------------------------------------------
# Spellings, formulas, refusals (fast)


def test_spellings_and_attributes():
    names = set(variant_names())
    assert {"compile", "compile+bf16", "fsdp2", "fsdp2+bf16", "fsdp2-grad-op", "fsdp2-grad-op+bf16", "tp"} <= names
    assert {"pipeline", "pipeline-gpipe", "pipeline+m2", "pipeline+m8", "pipeline-gpipe+m16"} <= names
    assert get_variant("compile").phases == ("train", "infer")
    assert get_variant("compile+bf16").compute_dtype is torch.bfloat16
    assert get_variant("fsdp2").reshard_after_forward is None  # FSDP2's default: all but the root
    assert get_variant("fsdp2-grad-op+bf16").reshard_after_forward is False
    p = get_variant("pipeline-gpipe+m8")
    assert (p.schedule, p.microbatches, p.name) == ("pipeline-gpipe", 8, "pipeline-gpipe+m8")
    assert get_variant("pipeline").microbatches == 4
    assert [get_variant(n).data_parallel for n in ("fp32", "fsdp2", "zero3", "pipeline", "tp")] == [
        True, True, True, False, False,
    ]  # fmt: skip


def test_fsdp2_formulas():
    # full shard, no root parameters: 16Ψ/N
    assert fsdp2_state_bytes(PSI, 0, 2, 4, True) == 8 * PSI
    # the root's gathered parameters (bΨr) instead of its gradient shard (4Ψr/N)
    assert fsdp2_state_bytes(PSI, 1000, 2, 4, True) == 8 * PSI + 4 * 1000 - 2 * 1000
    assert fsdp2_state_bytes(PSI, 1000, 2, 2, True) == 8 * PSI  # bf16 at N = 2: 2Ψr = 4Ψr/2
    # grad-op: 12Ψ/N + max(bΨ, 4Ψ/N); at N = 1 both are 16Ψ
    assert fsdp2_state_bytes(PSI, 0, 2, 4, False) == 6 * PSI + 4 * PSI
    assert fsdp2_state_bytes(PSI, 0, 4, 2, False) == 3 * PSI + 2 * PSI
    assert fsdp2_state_bytes(PSI, 0, 1, 4, False) == fsdp2_state_bytes(PSI, 0, 1, 4, True) == 16 * PSI
    with pytest.raises(ValueError, match="root_params <= n_params"):
        fsdp2_state_bytes(10, 11, 2, 4, True)


def test_fsdp2_units_and_root():
    gpt = family_workload("transformer", "s").build_model()
    units = shard_units(gpt)
    assert units == list(gpt.blocks)
    c = gpt.wte.weight.numel() + gpt.wpe.weight.numel() + 2 * gpt.ln_f.weight.numel()  # the head is tied
    assert root_params(gpt, units) == c
    mlp = family_workload("dense").build_model()
    assert all(isinstance(u, torch.nn.Linear) for u in shard_units(mlp)) and root_params(mlp, shard_units(mlp)) == 0


def test_pipeline_split_and_bubble():
    assert ideal_bubble(2, 4) == pytest.approx(1 / 5) and ideal_bubble(4, 8) == pytest.approx(3 / 11)
    assert balanced_split([4, 2, 2, 0.1], 2) == [0, 1]  # dense s: the first Linear alone
    assert balanced_split([1, 1, 1, 1], 4) == [0, 1, 2, 3]
    assert balanced_split([0, 5, 5, 5, 5, 1], 2) == [0, 3]
    with pytest.raises(ValueError, match="cannot split 2 units into 3"):
        balanced_split([1, 1], 3)
    mlp = family_workload("dense", "s").build_model()
    assert [len(u) for u in mlp_units(mlp)] == [2, 2, 2, 2]  # Flatten|ReLU + Linear
    gpt = family_workload("transformer").build_model()
    assert len(gpt_units(gpt)) == len(gpt.blocks) + 2


def test_tp_plan_and_formula():
    gpt = family_workload("transformer", "s").build_model()
    d, n = 128, 4
    per_block = (3 * d * d + 3 * d) + d * d + (4 * d * d + 4 * d) + 4 * d * d
    assert sharded_params(gpt) == n * per_block
    assert tp_state_bytes(PSI, PSI // 2, 2) == 16 * (PSI // 4 + PSI // 2)


@pytest.mark.parametrize(("name", "reason"), [
    ("pipeline", r"pipeline: puts one stage on each rank and needs --world-size >= 2"),
    ("pipeline-gpipe+m8", r"pipeline-gpipe\+m8: puts one stage on each rank"),
    ("tp", r"tp: shards layers over the ranks and needs --world-size >= 2"),
])  # fmt: skip
def test_model_parallel_variants_refuse_world_size_1(name, reason):
    with pytest.raises(Unsupported, match=reason):
        get_variant(name).check(torch.device("cpu"), 1)


def test_tp_refuses_models_without_attention():
    model = family_workload("dense").build_model()
    with pytest.raises(Unsupported, match="tp: shards the transformer's attention and MLP Linears; a MLP model"):
        get_variant("tp").trainer(model, None, 1e-3, torch.device("cpu"), 2)


def test_pipeline_refuses_a_batch_that_does_not_split():
    ctx = CaseContext("dense", "xs", "pipeline+m8", "train", workload("dense", "xs"), torch.device("cpu"), 2, 12)
    with pytest.raises(Unsupported, match=r"pipeline\+m8: --batch-size 12 does not split into 8 micro-batches"):
        get_variant("pipeline+m8").build(ctx)


@pytest.mark.parametrize(("data_parallel", "samples", "data_rank"), [(True, 16, 1), (False, 8, 0)])
def test_samples_per_step_follows_the_variant(monkeypatch, data_parallel, samples, data_rank):
    """DDP-like variants process batch x world size samples a step; pipeline and tp one batch."""
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    ctx = CaseContext("dense", "xs", "v", "train", workload("dense", "xs"), torch.device("cpu"), 2, 8,
                      data_parallel=data_parallel)  # fmt: skip
    case = Case(ctx, get_variant("fp32"), None, 0, 0.0)  # type: ignore[arg-type]
    assert case.samples_per_step == samples and case.data_ranks == samples // 8
    assert ctx.data_rank == data_rank


# --------------------------------------------------------------------------------------
# Loss parity at 2 ranks (one torchrun)


def rank_mean(values: list[float]) -> list[float]:
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def from_last_rank(values: list[float]) -> list[float]:
    """A pipeline's losses: the last stage has them (NaN elsewhere)."""
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.broadcast(t, src=dist.get_world_size() - 1)
    return t.tolist()


def train(name: str, w, batches, world_size: int) -> tuple[list[float], object]:
    torch.manual_seed(0)
    trainer = get_variant(name).trainer(w.build_model(), w.loss, 1e-3, torch.device("cpu"), world_size)
    return [float(trainer.train_step(*b)) for b in batches], trainer


def learnable_batches(w, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``PARITY_STEPS`` batches of 16 that training moves the loss on: the throughput batch for
    dense (random inputs and labels, memorized), windows of the text task for the transformer
    (random bytes are predicted no better than uniform, where GPT-2's initialization starts)."""
    if w.accuracy_task == "text":
        data = task_for(w).train_batches(16, seed)
        return [next(data) for _ in range(PARITY_STEPS)]
    gen = torch.Generator().manual_seed(seed)
    return [w.synthetic_batch(16, torch.device("cpu"), gen) for _ in range(PARITY_STEPS)]


def parity_worker(out: str) -> None:
    """Under torchrun: data-parallel variants each on their rank's batches (rank-mean loss, vs
    DDP fp32); pipeline and tp on one shared batch (vs fp32 on one rank); FSDP2 model state."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    result = {}
    for family in ("dense", "transformer"):
        w, got = family_workload(family), {}
        own = learnable_batches(w, 100 + rank)  # each rank its own data
        for name in ("fp32", "fsdp2", "fsdp2-grad-op", "fsdp2+bf16", "fsdp2-grad-op+bf16"):
            losses, trainer = train(name, w, own, world_size)
            got[name] = rank_mean(losses)
            if name.startswith("fsdp2"):  # the largest rank's, as the harness reports
                state = torch.tensor(trainer.model_state_bytes())
                dist.all_reduce(state, op=dist.ReduceOp.MAX)
                got[name + ":state"] = [int(state), trainer.predicted_state_bytes()]
            trainer.close()
        shared = learnable_batches(w, 7)  # one batch for all ranks
        got["fp32-1rank"], _ = train("fp32", w, shared, 1)
        for name in ("pipeline", "pipeline-gpipe+m8") + (("tp",) if family == "transformer" else ()):
            losses, trainer = train(name, w, shared, world_size)
            got[name] = from_last_rank(losses) if name.startswith("pipeline") else losses
            trainer.close()
        result[family] = got
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    end_rank_worker(rank, world_size)


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    out = tmp_path_factory.mktemp("parallel-parity") / "losses.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(distributed.free_port()), __file__, str(out)]  # fmt: skip
    proc = run_ranks(cmd, cwd=ROOT, env=rank_env(OMP_NUM_THREADS="1"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dense", "transformer"])
def test_fsdp2_loss_matches_ddp(parity, family):
    got = parity[family]
    ddp = got["fp32"]
    assert abs(ddp[-1] - ddp[0]) > 1e-2 * abs(ddp[0]), "training moved the loss too little to compare"
    for name in ("fsdp2", "fsdp2-grad-op", "fsdp2+bf16", "fsdp2-grad-op+bf16"):
        rtol = RTOL_BF16 if name.endswith("+bf16") else RTOL_FP32
        assert got[name] == pytest.approx(ddp, rel=rtol), f"{family} {name} vs DDP fp32"
        measured, predicted = got[name + ":state"]
        assert measured == pytest.approx(predicted, rel=0.10), f"{family} {name} model state"


@pytest.mark.slow
@pytest.mark.parametrize("family", ["dense", "transformer"])
def test_pipeline_and_tp_loss_match_one_rank(parity, family):
    got = parity[family]
    one = got["fp32-1rank"]
    names = ["pipeline", "pipeline-gpipe+m8"] + (["tp"] if family == "transformer" else [])
    for name in names:
        assert not any(math.isnan(v) for v in got[name]), name
        assert got[name] == pytest.approx(one, rel=RTOL_FP32), f"{family} {name} vs fp32 on one rank"


@pytest.mark.slow
def test_compile_loss_matches_eager_and_reports_compile_time():
    w = family_workload("dense")
    gen = torch.Generator().manual_seed(3)
    batches = [w.synthetic_batch(16, torch.device("cpu"), gen) for _ in range(4)]
    eager, _ = train("fp32", w, batches, 1)
    compiled, trainer = train("compile", w, batches, 1)
    assert compiled == pytest.approx(eager, rel=RTOL_COMPILE)
    info = trainer.extra_info()
    assert info["graph_breaks"] == 0 and info["compiled_graphs"] >= 1
    assert info["first_step_s"] > info["compile_s"] > 0 and not info["absent"]
    assert info["compile_cache_hits"] + info["compile_cache_misses"] >= 1  # forward and backward graphs


@pytest.mark.slow
def test_compile_infer_phase_is_the_compiled_forward():
    case = build_case("dense", "xs", "compile", batch_size=8, phase="infer")
    for _ in range(3):
        case.step()
    info = case.runnable.extra_info()
    assert info["graph_breaks"] == 0 and info["compile_s"] > 0 and case.runnable.predicted_state_bytes() is None
    with torch.inference_mode():
        got, want = case.runnable.model(case.runnable.inputs), case.runnable.module(case.runnable.inputs)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------
# pytest bench --world-size 2


@pytest.mark.nightly
@needs_deepspeed
def test_two_ranks_fsdp2_and_pipeline_in_pytest_bench(dense_s_rank_runs):
    """fp32 (DDP), the ZeRO stages, fsdp2 and pipeline at world size 2 in one session; fsdp2 at 1."""
    ws2, ws1 = dense_s_rank_runs[2][1], dense_s_rank_runs[1][1]
    assert all(info["status"] == "ok" and info["world_size"] == 2 for info in ws2.values())
    fsdp = ws2["dense-s-fsdp2"]
    for per_rank in fsdp["model_state_bytes_per_rank"]:
        assert per_rank == pytest.approx(fsdp["model_state_bytes_predicted"], rel=0.10)
    assert fsdp["model_state_bytes"] <= 0.55 * ws1["dense-s-fsdp2"]["model_state_bytes"]
    # data parallel: each rank its batch; a pipeline: one batch through both stages
    assert ws2["dense-s-fp32"]["samples_per_step"] == 2 * ws2["dense-s-fp32"]["batch_size"]
    pipe = ws2["dense-s-pipeline"]
    assert pipe["samples_per_step"] == pipe["batch_size"]
    assert pipe["samples_per_s"] == pytest.approx(pipe["batch_size"] / pipe["step_time_s"])
    assert pipe["bubble_ideal"] == pytest.approx(1 / 5) and 0 <= pipe["bubble_measured"] < 1
    assert len(pipe["bubble_measured_per_stage"]) == 2 and pipe["microbatches"] == 4
    assert sum(pipe["stage_params"]) == pipe["params"] and len(pipe["peak_mem_bytes_per_rank"]) == 2


if __name__ == "__main__":
    parity_worker(sys.argv[1])


FAKE_RANKS = """
import pathlib, sys
runs, kind = pathlib.Path(sys.argv[1]), sys.argv[2]
n = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(n))
if kind == "error":
    sys.exit("AssertionError: the losses differ")
if kind == "killed-twice" or (kind == "killed-once" and n == 1):
    print("  exitcode  : -6 (pid: 1234)", file=sys.stderr)
    sys.exit(1)
"""


@pytest.mark.parametrize(
    ("kind", "rc", "runs", "warned"),
    [("killed-once", 0, 2, True), ("killed-twice", 1, 2, True), ("error", 1, 1, False)],
)
def test_ranks_run_once_more_only_after_a_rank_was_killed_by_a_signal(tmp_path, kind, rc, runs, warned):
    script, count = tmp_path / "fake_ranks.py", tmp_path / "runs"
    script.write_text(FAKE_RANKS)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        proc = run_ranks(
            [sys.executable, str(script), str(count), kind], cwd=tmp_path, env=dict(os.environ), timeout=60
        )
    assert (proc.returncode, int(count.read_text())) == (rc, runs)
    assert [("killed by a signal" in str(w.message) and "exitcode  : -6" in str(w.message)) for w in caught] == (
        [True] if warned else []
    )
