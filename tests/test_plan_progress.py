"""``--plan`` (the matrix and its estimates, nothing run) and the progress lines of a run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.history import History, Past, load_history, run_settings
from bench.plan import estimate, make_plan, render_plan
from bench.progress import Progress
from bench.settings import CaseSpec, Settings
from reports.synthetic import jsonl_lines, make_extra_info, session_facts

BENCH = Path(__file__).resolve().parents[1] / "bench"
SMOKE = Settings(tier="smoke", results_dir=None)


# ------------------------------------------------------------------------------------------
# progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_at_start_and_end_with_time_left() -> None:
    lines: list[str] = []
    clock = Clock()
    specs = [CaseSpec("dense", "xs", "fp32"), CaseSpec("dense", "xs", "amp-bf16"), CaseSpec("cnn", "xs", "fp32")]
    cases = [(f"node{i}", spec) for i, spec in enumerate(specs)]
    estimates = {"dense-xs-fp32": 10.0, "dense-xs-amp-bf16": 20.0, "cnn-xs-fp32": 40.0}
    progress = Progress(lines.append, cases, estimates, clock)
    progress.start("node0")
    clock.now += 5.0  # half its estimate: the rest are expected at half theirs
    progress.end("node0", "ok")
    progress.start("node1")
    clock.now += 2.0
    progress.end("node1", "skipped", "estimated at least 403s of compute\nover --case-timeout 70s")
    progress.start("unknown")  # not an archbench case: no line
    assert lines == [
        "archbench [1/3] start dense-xs-fp32 (train); 0s elapsed",
        "archbench [1/3] ok dense-xs-fp32 (train) in 5.0s; 5s elapsed, about 30s left",
        "archbench [2/3] start dense-xs-amp-bf16 (train); 5s elapsed",
        "archbench [2/3] skipped dense-xs-amp-bf16 (train) in 2.0s: estimated at least 403s of compute"
        " over --case-timeout 70s; 7s elapsed, about 10s left",
    ]
    assert all("\r" not in line for line in lines)


def test_time_left_without_estimates_is_the_mean_of_the_cases_done() -> None:
    clock = Clock()
    cases = [(f"n{i}", CaseSpec("dense", "xs", v)) for i, v in enumerate(("fp32", "amp-bf16", "amp-fp16"))]
    progress = Progress(lambda line: None, cases, None, clock)
    progress.start("n0")
    clock.now += 6.0
    progress.end("n0", "ok")
    assert progress.time_left() == pytest.approx(12.0)


# ------------------------------------------------------------------------------------------
# plan: the rules


def test_variant_check_skips_at_no_cost() -> None:
    e = estimate(CaseSpec("dense", "xs", "zero3-offload"), SMOKE, History(), {})
    assert (e.runs, e.seconds, e.basis) == (False, 0.0, "variant check")
    assert "offload" in (e.reason or "")


def test_lower_bound_over_the_timeout_skips_before_the_build() -> None:
    e = estimate(CaseSpec("transformer", "m", "fp32"), SMOKE, History(), {"cpu:float32": 0.0189})
    assert not e.runs and e.seconds == 0.0
    assert e.reason is not None and e.reason.startswith("estimated at least") and "measured float32 peak" in e.reason


def test_projection_from_the_step_skips_after_the_warm_up() -> None:
    history = History(cases={("cnn-s-fp32", "cpu", 1): [Past(make_extra_info("cnn", "s", "fp32", batch_size=64,
                      step_time_s=1.27), {}, "old.jsonl")]})  # fmt: skip
    e = estimate(CaseSpec("cnn", "s", "fp32"), SMOKE, history, {"cpu:float32": 0.0189})
    assert not e.runs and e.basis == "model, step measured before" and e.step_s == 1.27
    assert e.reason is not None and e.reason.startswith("projected ") and "over --case-timeout 70s" in e.reason
    assert e.seconds > 2 * 1.27  # its warm-up still costs


def test_earlier_run_with_the_same_settings_gives_wall_time_and_outcome() -> None:
    settings = run_settings(SMOKE)
    ran = make_extra_info("dense", "xs", "fp32", wall_s=12.5)
    skipped = make_extra_info("dense", "s", "fp32", status="skipped", reason="projected 80s ...", wall_s=4.0)
    history = History(
        cases={
            ("dense-xs-fp32", "cpu", 1): [Past(ran, settings, "a.jsonl")],
            ("dense-s-fp32", "cpu", 1): [Past(skipped, settings, "a.jsonl")],
        }
    )
    first = estimate(CaseSpec("dense", "xs", "fp32"), SMOKE, history, {})
    assert (first.runs, first.seconds, first.basis) == (True, 12.5, "earlier run")
    second = estimate(CaseSpec("dense", "s", "fp32"), SMOKE, history, {})
    assert (second.runs, second.seconds, second.reason) == (False, 4.0, "projected 80s ...")
    other_tier = estimate(CaseSpec("dense", "xs", "fp32"), Settings(tier="standard"), history, {})
    assert other_tier.basis != "earlier run"  # another tier: another budget, the model
    # several earlier runs: the median of their wall times, the newest one's outcome
    older = make_extra_info("dense", "xs", "fp32", status="skipped", reason="older", wall_s=20.5)
    history.cases[("dense-xs-fp32", "cpu", 1)] += [Past(older, settings, "b.jsonl"), Past(older, settings, "c.jsonl")]
    several = estimate(CaseSpec("dense", "xs", "fp32"), SMOKE, history, {})
    assert (several.runs, several.seconds, several.basis) == (True, 20.5, "median of 3 earlier runs")


def test_history_reads_the_results_directory(tmp_path: Path) -> None:
    session = {**session_facts(), "settings": run_settings(SMOKE)}
    infos = [make_extra_info("dense", "xs", "fp32", wall_s=3.0), make_extra_info("cnn", "xs", "fp32")]
    (tmp_path / "results-20250115T100000-1.jsonl").write_text("\n".join(jsonl_lines(infos, session=session)) + "\n")
    (tmp_path / "results-20250116T100000-2.jsonl").write_text("not json\n")  # passed over
    history = load_history(str(tmp_path))
    assert history.peaks["cpu:float32"] == 0.18
    assert len(history.same_settings(CaseSpec("dense", "xs", "fp32"), SMOKE)) == 1
    assert history.same_settings(CaseSpec("cnn", "xs", "fp32"), SMOKE) == []  # no wall time kept
    assert history.step_time(CaseSpec("cnn", "xs", "fp32"), SMOKE, 32) == infos[1]["step_time_s"]


def test_plan_of_the_smoke_tier_renders_every_case_and_the_total() -> None:
    from bench.conftest import known_variants

    matrix = SMOKE.matrix(known_variants())
    plan = make_plan(SMOKE, matrix, History())
    text = render_plan(plan)
    assert len(plan.estimates) == 21
    assert text.count("train") == 21
    assert "transformer-m-fp32" in text and "skip" in text
    total = text.splitlines()[-1]
    assert total.startswith("total: 21 cases, ") and "predicted skipped; about " in total
    assert plan.total_s == pytest.approx(plan.startup_s + plan.probes_s + sum(e.seconds for e in plan.estimates))


# ------------------------------------------------------------------------------------------
# end to end


def bench(tmp: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pytest", str(BENCH), "-p", "no:cacheprovider", *args]
    return subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=timeout)


def test_plan_of_the_full_tier_prints_quickly_and_runs_nothing(tmp_path: Path) -> None:
    from bench.conftest import known_variants

    cases = len(Settings(tier="full").matrix(known_variants()))
    start = time.monotonic()
    done = bench(tmp_path, "--plan", "--tier", "full", "--results-dir", str(tmp_path / "results"))
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("archbench plan: tier full, device cpu")
    assert sum(1 for line in lines if line[:3].strip().isdigit()) == cases > 100
    assert lines[-1].startswith(f"total: {cases} cases")
    assert not (tmp_path / "results").exists()  # nothing ran, nothing was written
    assert "collected" not in done.stdout  # no collection, no fork server
    print(f"--plan --tier full: {took:.1f}s")  # the figure (README): a few seconds, torch's import most of it
    assert took < 60


def test_plan_refuses_bad_options_like_a_run(tmp_path: Path) -> None:
    done = bench(tmp_path, "--plan", "--family", "rnn")
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--family: unknown 'rnn'" in done.stderr


@pytest.mark.parametrize(
    ("args", "on"), [([], True), (["--no-progress"], False), (["-q", "-q"], False), (["-q"], True), (["--co"], False)]
)
def test_progress_lines_can_be_turned_off(pytester, args: list[str], on: bool) -> None:
    from bench import conftest as bench_conftest
    from bench.distributed import Ranks

    config = pytester.parseconfig(str(BENCH), "-p", "no:cacheprovider", *args)
    assert bench_conftest._progress_on(config, SimpleNamespace(ranks=Ranks())) is on


@pytest.mark.slow
def test_progress_lines(tmp_path: Path) -> None:
    done = bench(tmp_path, "--benchmark-disable", "--family", "dense", "--size", "xs", "--variant", "fp32",
                 "--no-accuracy", "--results-dir", str(tmp_path / "r"))  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("archbench [")]
    assert lines[0].startswith("archbench [1/1] start dense-xs-fp32 (train); ")
    assert lines[1].startswith("archbench [1/1] ok dense-xs-fp32 (train) in ")
    (path,) = (tmp_path / "r").glob("results-*.jsonl")
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records[1]["extra_info"]["wall_s"] > 0


def test_an_inference_plan_charges_a_cold_reference_once_and_each_variant_its_training(tmp_path, monkeypatch) -> None:
    """What a compressed case trains in its build counts: the reference once while it is not
    cached (in the first case of its family and size), the variant's fine-tune or students in each."""
    from bench.conftest import known_variants
    from bench.plan import CALIBRATION_PEAK, TASK_EFFICIENCY
    from workloads.reference import CACHE_ENV, cache_path, reference_flops
    from workloads.registry import case_context, get_variant, parse_device

    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    s = Settings(tier="standard", results_dir=None, families=("transformer",), sizes=("s",), phases=("infer",),
                 variants=("fp32", "int8-wo", "prune", "distill"))  # fmt: skip
    matrix = s.matrix(known_variants())
    plan = make_plan(s, matrix, History())
    cold = {e.spec.variant: e for e in plan.estimates}
    assert "before timing: trains the reference" in render_plan(plan).splitlines()[3]  # the first case's line
    fp32_ctx = case_context(
        "transformer", "s", get_variant("fp32"), "infer", parse_device("cpu"), budget_level="standard"
    )
    rate = CALIBRATION_PEAK * 1e12 * TASK_EFFICIENCY["transformer"]
    assert cold["fp32"].prepare_s == pytest.approx(reference_flops(fp32_ctx) / rate)
    assert cold["fp32"].prepare_what == "trains the reference" and cold["int8-wo"].prepare_s == 0.0
    assert 0 < cold["prune"].prepare_s < cold["distill"].prepare_s  # half a budget on half a model; two students
    assert "trains the reference" not in (cold["prune"].prepare_what or "")
    # an earlier run gives fp32 its wall time; with the cache cold it still trains the reference
    spec = next(spec for spec in matrix if spec.variant == "fp32")
    past = Past(make_extra_info("transformer", "s", "fp32", phase="infer", wall_s=3.0), run_settings(s), "old.jsonl")
    known = {e.spec.variant: e for e in make_plan(s, matrix, History(cases={(spec.id, "cpu", 1): [past]})).estimates}
    assert known["fp32"].basis == "earlier run" and known["fp32"].seconds == pytest.approx(3.0 + cold["fp32"].prepare_s)
    assert "trains the reference" not in (known["prune"].prepare_what or "")
    path = cache_path(fp32_ctx)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    warm = {e.spec.variant: e for e in make_plan(s, matrix, History()).estimates}
    assert warm["fp32"].prepare_s == 0.0 and warm["distill"].prepare_s == cold["distill"].prepare_s
    assert cold["fp32"].seconds - warm["fp32"].seconds == pytest.approx(cold["fp32"].prepare_s)
