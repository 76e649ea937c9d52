"""pytest plugin of ``pytest bench``: options, the case matrix, machine info and the summary."""

from __future__ import annotations

from pathlib import Path

import pytest

from workloads.base import SIZE_ORDER

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
        help="for evaluating regression gates: after each timed step, sleep this fraction of the warm-up step time",
    )


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


def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = _settings(config)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    session = Session(settings)
    config.stash[SESSION_KEY] = session
    if settings.results_dir and not config.getoption("--collect-only", False):
        machine_info = config.hook.pytest_benchmark_generate_machine_info(config=config)
        machine_info["archbench"] = session.machine_info()
        session.stream = ResultsStream(settings.results_dir, machine_info)


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
    if session is None or not session.results:
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
