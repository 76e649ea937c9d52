"""Interleaved timing (bench.interleave) and the harness pieces it shares: warm-up and the
injected slowdown. The sessions run real workers (dense-xs, a fraction of a second each)."""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bench import interleave
from bench.distributed import Ranks
from bench.timing import Refused, timed_step, warm_up
from reports.check import main as check_main
from reports.inputs import load_input
from reports.stats import compare_samples, min_p_value

REPO = Path(__file__).resolve().parents[1]


def session(tmp_path: Path, *extra: str, sides: tuple[str, ...] = ("a", "b"), case: str = "dense-xs-fp32") -> dict:
    argv = ["--case", case, "--out", str(tmp_path / "out"), "--seconds", "0.3", "--window", "0.02", "--threads", "1"]
    for name in sides:
        argv += ["--side", f"{name}={REPO}"]
    return interleave.run_session(interleave.build_parser().parse_args(argv + list(extra)), io.StringIO())


def only_result(path: Path):
    run = load_input(path)
    (result,) = run.results
    return run, result


@pytest.fixture(scope="module")
def three_sides(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One session: sides a and b alike, and "slow" with +100% injected."""
    tmp_path = tmp_path_factory.mktemp("interleave")
    return tmp_path, session(tmp_path, "--inject-slowdown", "slow=1.0", sides=("a", "b", "slow"))


def test_sides_take_turns_and_write_results_reports_read(three_sides) -> None:
    tmp_path, paths = three_sides
    assert set(paths) == {"a", "b", "slow"}
    infos = {}
    for name, path in paths.items():
        assert path.parent == tmp_path / "out" / name
        run, result = only_result(path)
        info = result.extra_info
        infos[name] = info
        assert run.machine_info["archbench"]["timing"] == "interleaved"
        assert info["status"] == "ok" and info["timing"] == "interleaved"
        assert info["id"] == "dense-xs-fp32" and info["interleave"]["side"] == name
        times = info["step_times_s"]
        assert info["step_time_s"] == statistics.median(times)
        assert info["samples_per_s"] == pytest.approx(info["samples_per_step"] / info["step_time_s"])
        assert info["tflops"] == pytest.approx(info["flops_per_step"] / info["step_time_s"] / 1e12)
        assert result.stats["rounds"] == len(times) and result.stats["median"] == info["step_time_s"]
        assert sum(times) >= 0.3  # the timing budget of each side
        for key in ("accuracy", "peak_mem_bytes", "mfu"):
            assert info[key] is None and "interleaved" in info["absent"][key]
    # one window per side per round: the sides took turns
    rounds = infos["a"]["interleave"]["rounds"]
    windows = {name: info["interleave"]["windows"] for name, info in infos.items()}
    assert windows == dict.fromkeys(paths, rounds) and rounds >= 10


def test_injected_slowdown_is_measured_and_gated(three_sides) -> None:
    _, paths = three_sides
    plain = only_result(paths["a"])[1].extra_info
    slow = only_result(paths["slow"])[1].extra_info
    assert slow["interleave"]["inject_slowdown"] == 1.0
    assert slow["step_time_s"] > 1.5 * plain["step_time_s"]  # +100% injected, noise aside
    quiet = io.StringIO()
    assert check_main(["--baseline", str(paths["a"]), str(paths["slow"])], stdout=quiet) == 1
    assert check_main(["--baseline", str(paths["slow"]), str(paths["a"])], stdout=quiet) == 0


def test_a_case_a_side_cannot_run_is_recorded_with_its_reason(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    paths = session(tmp_path, "--device", "cuda")
    for path in paths.values():
        _, result = only_result(path)
        assert result.extra_info["status"] == "skipped"
        assert "CUDA is not available" in result.extra_info["reason"]


def test_window_order_is_abba() -> None:
    two = [interleave.window_order(["a", "b"], r) for r in range(8)]
    assert two[:2] == [["a", "b"], ["b", "a"]]
    assert sum(o[0] == "a" for o in two) == sum(o[0] == "b" for o in two) == 4
    three = [interleave.window_order(["a", "b", "c"], r) for r in range(12)]
    assert {o[0] for o in three} == {"a", "b", "c"} and all(sorted(o) == ["a", "b", "c"] for o in three)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--side", "a"], "expected NAME=TREE"),
        (["--side", "a b=."], "NAME may have"),
        (["--side", "a=.", "--side", "a=."], "given twice"),
        (["--side", "a=."], "at least two --side"),
        (["--side", "a=.", "--side", "b=.", "--case", "mlp-xs-fp32"], "mlp"),
        (["--side", "a=.", "--side", "b=.", "--case", "dense-xs"], "family-size-variant"),
        (["--side", "a=.", "--side", "b=.", "--case", "dense-xs-zero2"], "interleaved timing runs"),
        (["--side", "a=.", "--side", "b=.", "--case", "dense-xs-fp32", "--inject-slowdown", "c=0.1"], "a --side"),
        (["--side", "a=.", "--side", "b=.", "--case", "dense-xs-fp32", "--inject-slowdown", "a=x"], "0 <= F"),
        (["--side", "a=.", "--side", "b=.", "--case", "dense-xs-fp32", "--seconds", "0"], "must be > 0"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], message: str, capsys, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    assert interleave.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_tree_without_the_worker_is_named(tmp_path: Path, capsys) -> None:
    assert interleave.main(["--side", f"old={tmp_path}", "--side", f"new={REPO}", "--case", "dense-xs-fp32"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "bench/interleave.py" in err


def test_existing_results_are_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "out" / "a").mkdir(parents=True)
    (tmp_path / "out" / "a" / "results-old.jsonl").write_text("{}\n")
    with pytest.raises(interleave.InterleaveError, match="already holds results"):
        session(tmp_path)
    assert (tmp_path / "out" / "a" / "results-old.jsonl").read_text() == "{}\n"


def test_a_worker_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    (broken / "bench").mkdir(parents=True)
    (broken / "bench" / "__init__.py").write_text("")
    (broken / "bench" / "interleave.py").write_text("import sys\nprint('boom', file=sys.stderr)\nsys.exit(3)\n")
    argv = ["--side", f"good={REPO}", "--side", f"bad={broken}", "--case", "dense-xs-fp32"]
    argv += ["--out", str(tmp_path / "out"), "--seconds", "0.1"]
    with pytest.raises(interleave.InterleaveError, match=r"side bad: worker exited with 3 \(boom; log: "):
        interleave.run_session(interleave.build_parser().parse_args(argv), io.StringIO())


def test_a_worker_of_another_protocol_refuses_to_build() -> None:
    reply = interleave._Worker().build({"protocol": interleave.PROTOCOL + 1, "case": "dense-xs-fp32"})
    assert reply["ok"] is False and reply["status"] == "error"
    assert f"protocol {interleave.PROTOCOL}" in reply["reason"]


# -- the harness pieces ------------------------------------------------------------------


class SleepyCase:
    """A CPU 'case' whose step takes ``step_s`` of wall time."""

    def __init__(self, step_s: float):
        self.device = torch.device("cpu")
        self.step_s = step_s
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        time.sleep(self.step_s)


def test_warm_up_runs_for_its_time_and_returns_the_steady_step() -> None:
    case = SleepyCase(0.005)
    tier = SimpleNamespace(warmup_rounds=2, warmup_s=0.1, max_rounds=1000)
    steady = warm_up(case, tier, Ranks())
    assert case.steps >= 0.1 / 0.006  # at least warmup_s of steps, not just 2
    assert 0.005 <= steady < 0.02


def test_warm_up_stops_before_a_step_that_would_pass_the_deadline() -> None:
    """A 0.2 s step with 0.3 s left: the second of three warm-up steps would end past it, so the
    case is refused (skipped, with the step time) instead of killed by the watchdog."""
    case = SleepyCase(0.2)
    tier = SimpleNamespace(warmup_rounds=3, warmup_s=0.0, max_rounds=1000)
    with pytest.raises(Refused, match=r"a warm-up step took 0\.2\d*s .*--case-timeout \(1 of 3 warm-up steps"):
        warm_up(case, tier, Ranks(), deadline=time.monotonic() + 0.3)
    assert case.steps == 1
    roomy = SleepyCase(0.2)
    assert 0.2 <= warm_up(roomy, tier, Ranks(), deadline=time.monotonic() + 5.0) < 0.4
    assert roomy.steps == 3


def test_injected_slowdown_adds_its_fraction_of_each_step() -> None:
    case = SleepyCase(0.01)
    step, events = timed_step(case, 0.5)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    assert events == [] and case.steps == 5
    assert 0.0145 <= statistics.median(times) < 0.03  # 10 ms step + 5 ms of CPU work
    plain, _ = timed_step(case, 0.0)
    assert plain == case.step


def test_rank_test_handles_thousands_of_values() -> None:
    assert min_p_value(3, 3) == pytest.approx(0.05)
    assert min_p_value(900, 900) == 0.0  # underflows, no OverflowError
    rng = statistics.NormalDist(1.0, 0.05)
    base, new = rng.samples(2000, seed=1), [x * 1.1 for x in rng.samples(2000, seed=2)]
    test = compare_samples(base, new)
    assert test.p_value < 1e-10 and test.hodges_lehmann_rel == pytest.approx(0.1, abs=0.02)


def test_sides_are_pinned_to_the_same_cpus() -> None:
    allowed = sorted(__import__("os").sched_getaffinity(0))

    def pinned(**kw):
        return interleave.pinned_cpus(interleave.build_parser().parse_args(["--side", "a=.", *kw.get("argv", [])]))

    assert pinned(argv=["--threads", "1"]) == {allowed[-1]}
    assert pinned() is None  # threads inherited: no pinning unless --cpus
    assert pinned(argv=["--threads", "1", "--cpus", "all"]) is None
    assert pinned(argv=["--cpus", str(allowed[0])]) == {allowed[0]}
    for bad in ("x", "99999"):
        with pytest.raises(interleave.InterleaveError, match="--cpus"):
            pinned(argv=["--cpus", bad])
