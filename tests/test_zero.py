"""DeepSpeed ZeRO variants: formulas, refusals, loss parity with DDP, and 2-rank ``pytest bench``.

The tests that run DeepSpeed are marked ``slow`` and skipped where it is not installed; they
start their own processes (``torchrun`` or ``pytest bench --world-size 2``) with gloo and
``DS_ACCELERATOR=cpu``. The first DeepSpeed start on a machine builds a small op with ninja
(minutes); later starts reuse it.

Run this file as a script under torchrun to get the parity worker (see ``parity_worker``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the parity worker, started by torchrun
    sys.path.insert(0, str(ROOT))

from bench import distributed  # noqa: E402
from tests.bench_runs import deepspeed_maps, end_rank_worker, rank_env, run, run_ranks  # noqa: E402
from workloads import Unsupported, get_variant, variant_names, zero  # noqa: E402
from workloads.zero import (  # noqa: E402
    PRECISIONS,
    STAGES,
    Zero,
    count_storages,
    paper_state_bytes,
    shm_buffers,
    zero_state_bytes,
)

HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
needs_deepspeed = pytest.mark.skipif(
    not HAS_DEEPSPEED, reason="deepspeed is not installed (pip install archbench[deepspeed])"
)

# Loss parity with DDP fp32 after PARITY_STEPS steps, same seed and data (relative tolerance).
# fp32 ZeRO does the same arithmetic as DDP up to the order of the gradient reduction; on gloo
# at 2 ranks it matches to the last digit, the tolerance leaves room for other reduction orders.
PARITY_STEPS = 6
RTOL_FP32 = 1e-5
# +bf16 rounds parameters, activations and gradients to 8 mantissa bits; measured 2.6e-3
RTOL_BF16 = 2e-2


# --------------------------------------------------------------------------------------
# Formulas (no DeepSpeed needed)

PSI = 1_000_000


@pytest.mark.parametrize(
    ("stage", "n", "paper_mixed", "paper_fp32"),
    [
        (1, 1, 16 * PSI, 16 * PSI),
        (1, 4, 4 * PSI + 3 * PSI, 8 * PSI + 2 * PSI),  # 4Ψ + 12Ψ/N; fp32 8Ψ + 8Ψ/N
        (2, 4, 2 * PSI + 14 * PSI // 4, 4 * PSI + 3 * PSI),  # 2Ψ + 14Ψ/N; fp32 4Ψ + 12Ψ/N
        (3, 4, 4 * PSI, 4 * PSI),  # 16Ψ/N
        (3, 64, PSI // 4, PSI // 4),
    ],
)
def test_paper_formula(stage, n, paper_mixed, paper_fp32):
    assert paper_state_bytes(stage, PSI, n, compute_bytes=2) == paper_mixed
    assert paper_state_bytes(stage, PSI, n, compute_bytes=4) == paper_fp32


@pytest.mark.parametrize(
    ("stage", "b", "n", "expected"),
    [
        (1, 4, 2, 8 * PSI + 6 * PSI),  # bΨ + bΨ + 12Ψ/N (all fp32 gradients at the end of backward)
        (1, 2, 2, 2 * PSI + 2 * PSI + 6 * PSI),  # = paper at N = 2
        (1, 2, 1, 2 * PSI + 4 * PSI + 12 * PSI),  # the fp32 step gradient (4Ψ/N) beats bΨ at N = 1
        (2, 4, 2, 4 * PSI + 8 * PSI),  # bΨ + 16Ψ/N
        (2, 2, 4, 2 * PSI + 4 * PSI),
        (3, 4, 2, 12 * PSI),  # 24Ψ/N
        (3, 2, 2, 10 * PSI),  # 20Ψ/N
    ],
)
def test_deepspeed_formula(stage, b, n, expected):
    assert zero_state_bytes(stage, PSI, n, b) == expected


def test_deepspeed_formula_is_the_paper_for_stage1_bf16_and_shrinks_with_ranks():
    for n in (2, 4, 8):
        assert zero_state_bytes(1, PSI, n, 2) == paper_state_bytes(1, PSI, n, 2)
    assert zero_state_bytes(3, PSI, 2, 4) / zero_state_bytes(3, PSI, 1, 4) == 0.5
    with pytest.raises(ValueError, match="stage must be 1, 2 or 3"):
        zero_state_bytes(0, PSI, 1, 4)
    with pytest.raises(ValueError, match="world_size >= 1"):
        paper_state_bytes(2, PSI, 0, 4)


def test_variant_spelling_and_attributes():
    names = variant_names()
    for base in STAGES:
        for precision in PRECISIONS:
            assert base + precision in names
    v = get_variant("zero2+bf16")
    assert (v.stage, v.offload, v.compute_dtype) == (2, False, torch.bfloat16)
    assert v.predicted_state_bytes(PSI, 2) == zero_state_bytes(2, PSI, 2, 2)
    assert get_variant("zero3-offload").offload and get_variant("zero1").compute_dtype is torch.float32
    with pytest.raises(ValueError, match="unknown 'zero4'"):
        Zero("zero4")


def test_missing_deepspeed_is_unsupported_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed -> ImportError
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    with pytest.raises(Unsupported, match=r"zero2: deepspeed is not installed \(pip install archbench\[deepspeed\]\)"):
        get_variant("zero2").check(torch.device("cpu"), 1)


def test_offload_on_cpu_is_unsupported():
    with pytest.raises(Unsupported, match=r"zero3-offload: offload moves .* \(run zero3\)"):
        get_variant("zero3-offload").check(torch.device("cpu"), 2)


def test_count_storages_dedups_views_and_excludes_buffers():
    flat = torch.zeros(100)
    a, b = flat[:50], flat[50:]  # views of one storage: counted once
    other = torch.zeros(10)
    bucket = torch.zeros(40)
    grad_in_bucket = bucket[:10]
    meta = torch.zeros(1000, device="meta")
    got = count_storages({"params": [a, b, meta], "grads": [other, grad_in_bucket, a]}, exclude=[bucket])
    assert got == {"params": 400, "grads": 40}


def test_launcher_world_size_must_match(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.LaunchError, match="WORLD_SIZE=2 ranks; pass --world-size 2"):
        distributed.setup(1, "cpu", timeout_s=60)


# --------------------------------------------------------------------------------------
# Loss parity with DDP at world size 2


PARITY_VARIANTS = ("fp32", "zero1", "zero2", "zero3", "zero1+bf16", "zero2+bf16", "zero3+bf16")
# the default suite's share (each DeepSpeed engine start at 2 ranks costs seconds on 2 cores): every
# stage on dense, the stage that shards most on the transformer, bf16 once per family
QUICK_PARITY = {
    "dense": ("fp32", "zero1", "zero2", "zero3", "zero2+bf16"),
    "transformer": ("fp32", "zero3", "zero3+bf16"),
}


def parity_worker(out: str, variants: str) -> None:
    """Under torchrun: train each variant (``variants``: JSON, family -> names) from the same seed
    on the same per-rank batches, write the rank-mean loss of every step (rank 0) to ``out``."""
    import torch.distributed as dist

    from workloads.registry import FAMILIES
    from workloads.tasks import task_for

    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    cpu = torch.device("cpu")
    result: dict[str, dict[str, list[float]]] = {}
    for family, names in json.loads(variants).items():
        W = FAMILIES[family]
        workload = W(W.Config.from_size("xs"))
        # each rank its own data, the same per variant: random inputs and labels for dense (memorized);
        # text windows for the transformer (random bytes are predicted no better than uniform, where
        # GPT-2's initialization starts, so training would not move the loss)
        if workload.accuracy_task == "text":
            data = task_for(workload).train_batches(16, 100 + rank)
            batches = [next(data) for _ in range(PARITY_STEPS)]
        else:
            gen = torch.Generator().manual_seed(100 + rank)
            batches = [workload.synthetic_batch(16, cpu, gen) for _ in range(PARITY_STEPS)]
        for name in names:
            torch.manual_seed(0)
            trainer = get_variant(name).trainer(workload.build_model(), workload.loss, 1e-3, cpu, world_size)
            losses = [float(trainer.train_step(*batch)) for batch in batches]
            trainer.close()
            mean = torch.tensor(losses, dtype=torch.float64)
            dist.all_reduce(mean)
            result.setdefault(family, {})[name] = (mean / world_size).tolist()
    if rank == 0:
        Path(out).write_text(json.dumps({"losses": result, "mapped": deepspeed_maps()}))
    end_rank_worker(rank, world_size)


def check_parity(tmp_path: Path, variants: dict[str, tuple[str, ...]]) -> None:
    out = tmp_path / "losses.json"
    port = distributed.free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
           distributed.CASE_ADDR, "--master-port", str(port), __file__, str(out), json.dumps(variants)]  # fmt: skip
    proc = run_ranks(cmd, cwd=ROOT, env=rank_env(DS_ACCELERATOR="cpu"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    written = json.loads(out.read_text())
    # DeepSpeed made a buffer per rank in /dev/shm, rank 0 mapped both, and their names were gone
    # while it trained (each rank unlinked its own once every rank had mapped them)
    names = [zero.shm_buffer_path(distributed.CASE_ADDR, port, rank) for rank in (0, 1)]
    assert written["mapped"] == [f"{name} (deleted)" for name in names]
    assert shm_buffers(distributed.CASE_ADDR, port) == []
    losses = written["losses"]
    assert {f: tuple(v) for f, v in losses.items()} == variants
    for family, by_variant in losses.items():
        ddp = by_variant["fp32"]
        assert abs(ddp[-1] - ddp[0]) > 1e-2 * abs(ddp[0]), f"{family}: training moved the loss too little to compare"
        for name, got in by_variant.items():
            rtol = RTOL_BF16 if name.endswith("+bf16") else RTOL_FP32
            assert got == pytest.approx(ddp, rel=rtol), f"{family} {name} vs DDP fp32: {got} != {ddp}"


@pytest.mark.slow
@needs_deepspeed
def test_loss_parity_with_ddp_at_two_ranks(tmp_path):
    check_parity(tmp_path, QUICK_PARITY)


@pytest.mark.nightly
@needs_deepspeed
def test_loss_parity_of_every_stage_and_precision_at_two_ranks(tmp_path):
    check_parity(tmp_path, {"dense": PARITY_VARIANTS, "transformer": PARITY_VARIANTS})


# --------------------------------------------------------------------------------------
# pytest bench --world-size 2


def run_bench(tmp: Path, *args: str, launcher: tuple[str, ...] = ()) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Run ``pytest bench`` (optionally under a launcher); return the streamed results."""
    tmp.mkdir(parents=True, exist_ok=True)
    results = tmp / "results"
    cmd = [*launcher] if launcher else [sys.executable, "-m", "pytest"]
    cmd += [str(ROOT / "bench"), "--benchmark-only", "-p", "no:cacheprovider", "--no-accuracy",
            "--results-dir", str(results), *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp, env=rank_env(DS_ACCELERATOR="cpu"), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    (path,) = results.glob("results-*.jsonl")  # one file: only rank 0 writes
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [rec["extra_info"] for rec in lines if rec["type"] == "benchmark"], proc


@pytest.mark.nightly
@needs_deepspeed
def test_two_ranks_run_every_stage(dense_s_rank_runs):
    """fp32 (DDP) and ZeRO 1-3 at world size 2, ranks started by ``pytest bench`` itself (in a
    session with the other parallel variants: ``tests.bench_runs.RANK_RUNS``)."""
    tmp, by_id, proc = dense_s_rank_runs[2]
    assert {"dense-s-fp32", "dense-s-zero1", "dense-s-zero2", "dense-s-zero3"} <= set(by_id)
    logs = tmp / "results" / "logs"
    assert {p.name for p in logs.glob("*.rank1.log")} == {f"{case}.rank1.log" for case in by_id}
    data = json.loads((tmp / "out.json").read_text())
    assert len(data["benchmarks"]) == len(by_id)  # rank 0's JSON only
    for case in ("dense-s-fp32", "dense-s-zero1", "dense-s-zero2", "dense-s-zero3"):
        info = by_id[case]
        assert info["status"] == "ok" and info["world_size"] == 2
        assert info["samples_per_step"] == 2 * info["batch_size"]
        assert info["step_time_s"] == pytest.approx(statistics.median(info["step_times_s"]))
        assert info["samples_per_s"] == pytest.approx(info["samples_per_step"] / info["step_time_s"])
        for key in ("peak_mem_bytes", "model_state_bytes"):
            per_rank = info[f"{key}_per_rank"]
            assert len(per_rank) == 2 and info[key] == max(per_rank)
        # the slowest rank's step: the reported median is not below any rank's own median
        assert info["step_time_s"] >= max(info["step_time_s_per_rank"]) * 0.999
        assert info["mem_source"] == "rss-rank"


@pytest.mark.nightly
@needs_deepspeed
def test_model_state_within_10_percent_of_prediction(dense_s_rank_runs):
    _, by_id, _ = dense_s_rank_runs[2]
    for stage in (1, 2, 3):
        info = by_id[f"dense-s-zero{stage}"]
        assert info["model_state_bytes"] == pytest.approx(info["model_state_bytes_predicted"], rel=0.10), info["id"]
        assert info["model_state_bytes_paper"] < info["model_state_bytes_predicted"]  # fp32: the extra master copy
        assert info["model_state_breakdown"]["params"] > 0
        assert info["absent"]["model_state_bytes_deepspeed_estimate"].startswith("DeepSpeed's estimators assume")
    ddp = by_id["dense-s-fp32"]
    assert ddp["model_state_bytes"] == pytest.approx(16 * ddp["params"], rel=0.01)


@pytest.mark.nightly
@needs_deepspeed
def test_torchrun_launch_and_zero3_halves_the_state(dense_s_rank_runs, tmp_path):
    """Ranks started by torchrun (as across machines); ZeRO-3 at 2 ranks vs 1 rank."""
    port = distributed.free_port()
    launcher = (sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr",
                distributed.CASE_ADDR, "--master-port", str(port), "-m", "pytest")  # fmt: skip
    (ws2,), proc = run_bench(tmp_path / "ws2", "--family", "dense", "--size", "s", "--variant", "zero3+bf16",
                             "--world-size", "2", launcher=launcher)  # fmt: skip
    assert ws2["status"] == "ok" and len(ws2["model_state_bytes_per_rank"]) == 2
    assert shm_buffers(distributed.CASE_ADDR, port) == []  # each rank unlinked its own once all had mapped them
    assert ws2["model_state_bytes"] == pytest.approx(ws2["model_state_bytes_predicted"], rel=0.10)
    assert ws2["model_state_bytes_deepspeed_estimate"] > 0
    ws1 = dense_s_rank_runs[1][1]
    assert ws2["model_state_bytes"] <= 0.55 * ws1["dense-s-zero3+bf16"]["model_state_bytes"]
    _, by_id, _ = dense_s_rank_runs[2]
    assert by_id["dense-s-zero3"]["model_state_bytes"] <= 0.55 * ws1["dense-s-zero3"]["model_state_bytes"]


# --------------------------------------------------------------------------------------
# DeepSpeed's shared-memory buffers do not outlive their case


def test_shm_buffers_are_named_by_user_address_port_and_rank(monkeypatch, tmp_path):
    """The supervisor's sweep after a case: the case's port, this user, none a live process maps."""
    import mmap

    monkeypatch.setattr(zero, "SHM_DIR", tmp_path)
    uid = os.getuid()
    names = [f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_{port}_{rank}" for port in (4000, 40001) for rank in (0, 1)]
    names += [f"deepspeed_allreduce_buffer_{uid + 1}_127.0.0.1_4000_0", "other_127.0.0.1_4000_0"]
    for name in names:
        (tmp_path / name).write_bytes(bytes(4096))
    assert [p.name for p in shm_buffers("127.0.0.1", 4000)] == names[:2]
    assert [p.name for p in shm_buffers("127.0.0.1", 40001, rank=1)] == names[3:4]
    with (tmp_path / names[1]).open("r+b") as f, mmap.mmap(f.fileno(), 4096):  # a session that took the port since
        assert zero.remove_unmapped_shm_buffers("127.0.0.1", 4000) == 1
        assert [p.name for p in shm_buffers("127.0.0.1", 4000)] == names[1:2]
    assert zero.remove_unmapped_shm_buffers("127.0.0.1", 4000) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[2:])  # another port's, user's, file's


@needs_deepspeed
@pytest.mark.parametrize(
    ("inherited", "local_world_size", "expected"), [("1", "2", "2"), ("1", None, "1"), (None, None, "1")]
)
def test_local_size_is_the_ranks_own_not_an_inherited_one(monkeypatch, inherited, local_world_size, expected):
    """DeepSpeed maps its shared-memory buffers only when LOCAL_SIZE is the world size; a case's
    parent that imported DeepSpeed itself had set 1, and its ranks inherited it."""
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # set first, so that every one is restored after
    for key, value in (("LOCAL_SIZE", inherited), ("LOCAL_WORLD_SIZE", local_world_size)):
        monkeypatch.setenv(key, "x")
        if value is None:
            monkeypatch.delenv(key)
        else:
            monkeypatch.setenv(key, value)
    zero.import_deepspeed("zero1", torch.device("cpu"))
    assert os.environ["LOCAL_SIZE"] == expected


DIES_AFTER_DEEPSPEED = """
import json, os, time
from pathlib import Path
import torch
from tests.bench_runs import deepspeed_maps
from workloads import zero
from workloads.registry import VARIANTS

class DiesAfterDeepSpeed(zero.Zero):
    def __init__(self):
        super().__init__("zero1")
        self.name = "zero1-dies"

    def trainer(self, *args):
        if os.environ.get("KEEP_BUFFERS"):  # as if killed before it unlinked its buffer
            zero.release_shm_buffer = lambda device, world_size: None
        trainer = super().trainer(*args)  # DeepSpeed has started: every rank mapped every buffer
        rank, ranks, here = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE", "1"), Path(__file__).parent
        if ranks != "1":
            torch.distributed.barrier()  # every rank is past its own unlink
        (here / f"mapped.rank{rank}.json").write_text(json.dumps(deepspeed_maps()))
        if rank == "0" and ranks != "1":
            time.sleep(600)  # killed when rank 1 dies
        while not (here / "mapped.rank0.json").exists():
            time.sleep(0.05)
        os._exit(3)  # no rank ends its process group

VARIANTS["zero1-dies"] = DiesAfterDeepSpeed
"""


@pytest.mark.slow
@needs_deepspeed
@pytest.mark.parametrize(("world_size", "keep"), [(1, False), (2, False), (2, True)], ids=["1", "2", "2-killed-early"])
def test_no_buffer_outlives_a_case_whose_ranks_died(tmp_path, monkeypatch, world_size, keep):
    """Each rank's buffer is unlinked once every rank mapped it (at 1 rank too: named by no port,
    the same for every 1-rank case), so ranks that die later leave nothing. The buffers of ranks
    killed before that (``keep``) are the supervisor's to remove, after their case."""
    if keep:
        monkeypatch.setenv("KEEP_BUFFERS", "1")
    (tmp_path / "dies_after_deepspeed.py").write_text(DIES_AFTER_DEEPSPEED)
    proc, results, _ = run(tmp_path, "-p", "dies_after_deepspeed", "--family", "dense", "--size", "xs",
                           "--variant", "zero1-dies", "--world-size", str(world_size), "--no-accuracy",
                           "--case-timeout", "120", extra_path=tmp_path)  # fmt: skip
    info = results["dense-xs-zero1-dies"]["extra_info"]
    who = "rank 1 worker" if world_size == 2 else "worker"
    assert info["status"] == "error" and f"{who} exited with code 3" in info["reason"], proc.stdout[-3000:]
    mapped = [json.loads((tmp_path / f"mapped.rank{rank}.json").read_text()) for rank in range(world_size)]
    assert all(m == mapped[0] for m in mapped) and len(mapped[0]) == world_size, mapped
    names = [m.removesuffix(" (deleted)") for m in mapped[0]]
    assert [m.endswith(" (deleted)") for m in mapped[0]] == [not keep] * world_size
    assert [name for name in names if Path(name).exists()] == []


if __name__ == "__main__":
    parity_worker(sys.argv[1], sys.argv[2])


# --------------------------------------------------------------------------------------
# One-time set-up: the CPU comm op is built before the cases, outside their watchdog


class _Recorder:
    def __init__(self, fail: bool):
        self.calls, self.fail = [], fail

    def __call__(self):
        recorder = self

        class Variant:
            def set_up(self, device, say):
                recorder.calls.append(str(device))
                say("building")
                if recorder.fail:
                    raise RuntimeError("ninja: build stopped")

        return Variant()


@pytest.mark.parametrize("fail", [False, True])
def test_a_variants_set_up_runs_once_and_its_failure_is_each_cases_error(monkeypatch, fail):
    from bench import harness
    from bench.settings import CaseSpec, Settings

    recorder = _Recorder(fail)
    monkeypatch.setattr(harness, "variant_factory", lambda name: recorder)
    monkeypatch.setattr(harness, "preflight", lambda *a, **k: 1e9)
    session = harness.Session(Settings(results_dir=None), executor=None)
    lines = []
    session.say = lines.append
    bench = SimpleNamespace(_timer=time.perf_counter, _disable_gc=False, disabled=False)
    got = [session.prepare(CaseSpec("dense", size, "zero3"), bench) for size in ("xs", "s")]
    assert recorder.calls == ["cpu"] and lines == ["building"]  # once for the variant, not per case
    if fail:
        assert all(isinstance(o, harness.Outcome) and o.status == "error" for o in got)
        assert got[0].info["stage"] == "set-up" and "ninja: build stopped" in got[0].info["reason"]
    else:
        assert not any(isinstance(o, harness.Outcome) for o in got)


def test_zero_set_up_builds_the_comm_op_only_on_cpu_and_only_when_missing(monkeypatch):
    from workloads import zero

    built = []
    monkeypatch.setattr(zero, "build_comm_op", lambda: built.append(1))
    monkeypatch.setattr(zero, "comm_op_built", lambda: False)
    Zero("zero3").set_up(torch.device("cuda"), print)
    assert built == []
    lines = []
    Zero("zero3").set_up(torch.device("cpu"), lines.append)
    assert built == [1] and "deepspeed_shm_comm" in lines[0]
    monkeypatch.setattr(zero, "comm_op_built", lambda: True)
    Zero("zero2").set_up(torch.device("cpu"), lines.append)
    assert built == [1] and len(lines) == 1


@needs_deepspeed
def test_the_op_build_calls_deepspeeds_comm_module_not_torch():
    """The build's child imports ``deepspeed.comm.torch`` itself: ``import deepspeed.comm.torch as t``
    gave torch (an attribute of deepspeed.comm), so every set-up failed and each case built the op."""
    from workloads import zero

    code = f"{zero.IMPORT_COMM_MODULE}; print(t.__name__, callable(t.build_shm_op))"
    env = os.environ | {"DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["deepspeed.comm.torch", "True"]


def test_a_lock_left_by_a_killed_build_is_removed_a_fresh_one_kept(monkeypatch, tmp_path):
    from workloads import zero

    monkeypatch.setattr(zero, "comm_op_dir", lambda: tmp_path)
    monkeypatch.setattr(zero, "build_comm_op", lambda: (tmp_path / f"{zero.COMM_OP}.so").touch())
    lock = tmp_path / "lock"
    lock.touch()
    lines = []
    Zero("zero3").set_up(torch.device("cpu"), lines.append)
    assert lock.exists() and zero.comm_op_built()  # a build may be under way: its lock stays
    old = time.time() - zero.STALE_LOCK_S - 1
    os.utime(lock, (old, old))
    Zero("zero3").set_up(torch.device("cpu"), lines.append)
    assert not lock.exists() and "left by a build that was killed" in lines[-1]


@needs_deepspeed
def test_set_up_removes_the_buffers_of_ranks_now_gone(monkeypatch, tmp_path):
    """Unmapped and over a minute old: removed. Mapped by a live process, or just made: kept."""
    import mmap

    monkeypatch.setattr(zero, "SHM_DIR", tmp_path)
    monkeypatch.setattr(zero, "comm_op_built", lambda: True)
    monkeypatch.setattr(zero, "stale_comm_op_lock", lambda: None)

    def buffer(uid: int, port: int, age_s: float) -> Path:
        path = tmp_path / f"deepspeed_allreduce_buffer_{uid}_127.0.0.1_{port}_0"
        path.write_bytes(bytes(2**20))
        then = time.time() - age_s
        os.utime(path, (then, then))
        return path

    uid, old = os.getuid(), zero.ORPHAN_MIN_AGE_S + 60
    orphan, young, mapped, others = buffer(uid, 1, old), buffer(uid, 2, 1), buffer(uid, 3, old), buffer(uid + 1, 4, old)
    lines: list[str] = []
    with mapped.open("r+b") as f, mmap.mmap(f.fileno(), 4096):
        Zero("zero1").set_up(torch.device("cpu"), lines.append)
        Zero("zero2").set_up(torch.device("cpu"), lines.append)  # nothing left to remove: nothing said
    assert [p.exists() for p in (orphan, young, mapped, others)] == [False, True, True, True]
    assert lines == [f"zero1: removing 1 DeepSpeed buffers (1 MiB) in {tmp_path} of ranks now gone"]


def test_a_failed_build_is_tried_once_for_every_zero_variant(monkeypatch, tmp_path):
    from workloads import zero

    tries = []

    def fail():
        tries.append(1)
        raise RuntimeError("building DeepSpeed's deepspeed_shm_comm op failed: ninja: error")

    monkeypatch.setattr(zero, "comm_op_dir", lambda: tmp_path)
    monkeypatch.setattr(zero, "build_comm_op", fail)
    monkeypatch.setattr(zero, "BUILD_FAILED", {})
    for name in ("zero1", "zero2", "zero3"):
        with pytest.raises(RuntimeError, match="ninja: error"):
            Zero(name).set_up(torch.device("cpu"), lambda line: None)
    assert tries == [1]


def test_archbench_set_up_names_the_variant_that_failed(monkeypatch, tmp_path, capsys):
    from bench.cli import main
    from workloads import zero

    monkeypatch.setattr(zero, "comm_op_dir", lambda: tmp_path)
    monkeypatch.setattr(zero, "BUILD_FAILED", {})
    monkeypatch.setattr(zero.importlib.util, "find_spec", lambda name: object())  # as if deepspeed were installed
    monkeypatch.setattr(zero, "build_comm_op", lambda: (_ for _ in ()).throw(RuntimeError("ninja: error")))
    assert main(["set-up"]) == 1
    assert "archbench set-up: zero1: ninja: error" in capsys.readouterr().err
    monkeypatch.setattr(zero, "build_comm_op", lambda: (tmp_path / f"{zero.COMM_OP}.so").touch())
    monkeypatch.setattr(zero, "BUILD_FAILED", {})
    assert main(["set-up"]) == 0
