"""pytest plugin of ``pytest bench``: options, the case matrix, machine info and the summary."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from workloads.base import SIZE_ORDER

from . import distributed
from .harness import Session
from .results import ResultsStream
from .settings import FAMILY_NAMES, TIERS, Settings, split_list

SESSION_KEY = pytest.StashKey[Session]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("archbench")
    g.addoption("--tier", default="smoke", help=f"case matrix and timing budget: {', '.join(TIERS)} (default smoke)")
    g.addoption("--family", default=None, help=f"comma list of families: {', '.join(FAMILY_NAMES)}")
    g.addoption("--size", default=None, help=f"comma list of sizes: {', '.join(SIZE_ORDER)} (default: the tier's)")
    g.addoption("--variant", default=None, help="comma list of variants (default: the tier's)")
    g.addoption("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    g.addoption("--world-size", type=int, default=1, help="ranks per case (default 1)")
    g.addoption("--batch-size", type=int, default=None, help="samples per step per rank (default: the family's)")
    g.addoption("--data-dir", default=None, help="directory with MNIST in IDX format (default: scikit-learn digits)")
    g.addoption("--telemetry-interval", type=float, default=0.05, help="sampling interval in seconds (default 0.05)")
    g.addoption("--case-timeout", type=float, default=None, help="skip a case estimated to take longer (seconds)")
    g.addoption("--results-dir", default="results", help="stream each result there as a JSON line ('' to disable)")
    g.addoption("--no-accuracy", action="store_true", help="skip the accuracy task (faster; accuracy absent)")
    g.addoption("--seed", type=int, default=0, help="seed of models and data (default 0)")
    g.addoption(
        "--inject-slowdown",
        type=float,
        default=0.0,
        help="for evaluating regression gates: add this fraction of each timed step's own time to it"
        " (CPU work; an idle GPU on CUDA)",
    )
    # the DeepSpeed launcher appends --local_rank=N; the rank comes from LOCAL_RANK instead
    g.addoption("--local_rank", "--local-rank", type=int, default=None, help="(set by the DeepSpeed launcher; ignored)")


def _settings(config: pytest.Config) -> Settings:
    from workloads import variant_names

    opt = config.getoption
    return Settings(
        tier=opt("--tier"),
        families=split_list("--family", opt("--family"), FAMILY_NAMES),
        sizes=split_list("--size", opt("--size"), SIZE_ORDER),
        variants=split_list("--variant", opt("--variant"), tuple(variant_names())),
        device=opt("--device"),
        world_size=opt("--world-size"),
        batch_size=opt("--batch-size"),
        data_dir=opt("--data-dir"),
        telemetry_interval_s=opt("--telemetry-interval"),
        case_timeout_s=opt("--case-timeout"),
        results_dir=opt("--results-dir") or None,
        accuracy=not opt("--no-accuracy"),
        seed=opt("--seed"),
        inject_slowdown=opt("--inject-slowdown"),
    )


def _join_ranks(config: pytest.Config, settings: Settings) -> tuple[Settings, distributed.Ranks]:
    """--world-size > 1 (or a launcher's environment): join the ranks, starting them when no
    launcher did; only rank 0 writes results, JSON and tables (see bench/distributed.py)."""
    if config.getoption("--collect-only", False) or config.getoption("help", False):
        return settings, distributed.Ranks()
    inv = config.invocation_params
    ranks = distributed.setup(
        settings.world_size,
        settings.device,
        list(inv.args),
        inv.dir,
        settings.results_dir,
        timeout_s=max(600.0, 2 * settings.timeout_s),
    )
    if ranks.active and settings.device.startswith("cuda"):
        settings = dataclasses.replace(settings, device=f"cuda:{ranks.local_rank}")
    if not ranks.is_main:
        settings = dataclasses.replace(settings, results_dir=None)
        for name, off in (("benchmark_json", None), ("benchmark_save", None), ("benchmark_autosave", False)):
            if hasattr(config.option, name):
                setattr(config.option, name, off)
    return settings, ranks


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads --benchmark-json (rank 0 only)
def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = _settings(config)
        settings, ranks = _join_ranks(config, settings)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    session = Session(settings, ranks=ranks)
    config.stash[SESSION_KEY] = session
    if settings.results_dir and not config.getoption("--collect-only", False):
        machine_info = config.hook.pytest_benchmark_generate_machine_info(config=config)
        machine_info["archbench"] = session.machine_info()
        session.stream = ResultsStream(settings.results_dir, machine_info)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Leave the process group; rank 0 waits for the ranks it started and fails the run when one failed."""
    state = session.config.stash.get(SESSION_KEY, None)
    if state is None or not state.ranks.active:
        return
    state.rank_exits = state.ranks.finish()
    if any(rc != 0 for _, rc, _ in state.rank_exits) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.stream is not None:
        session.stream.close()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_spec" in metafunc.fixturenames:
        settings = metafunc.config.stash[SESSION_KEY].settings
        matrix = settings.matrix()
        metafunc.parametrize("case_spec", matrix, ids=[f"{f}-{s}-{v}" for f, s, v in matrix])


@pytest.fixture(scope="session")
def archbench_session(request: pytest.FixtureRequest) -> Session:
    return request.config.stash[SESSION_KEY]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        machine_info["archbench"] = session.machine_info()


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    """The three archbench tables under pytest-benchmark's own, also written as Markdown."""
    session = config.stash.get(SESSION_KEY, None)
    for rank, rc, log in getattr(session, "rank_exits", []):
        terminalreporter.write_line(
            f"archbench rank {rank}: exit code {rc if rc is not None else 'none (killed)'}, log {log}"
        )
        if rc != 0:
            terminalreporter.write_line(distributed.log_tail(log))
    if session is None or not session.results or not session.ranks.is_main:
        return
    from reports.table import render_tables

    label = session.machine_info()["label"]
    text = render_tables(session.results, fmt="github", label=label)
    terminalreporter.write_sep("-", "archbench")
    terminalreporter.write_line(text)
    targets = []
    if session.stream is not None:
        targets.append(session.stream.path.with_suffix(".md"))
    json_out = config.getoption("benchmark_json", None)
    if json_out is not None:
        targets.append(Path(getattr(json_out, "name", json_out)).with_suffix(".md"))
    for path in targets:
        path.write_text(text + "\n", encoding="utf-8")
        terminalreporter.write_line(f"archbench tables written to {path}")
