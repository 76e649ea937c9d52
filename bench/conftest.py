"""pytest plugin of ``pytest bench``: options, the case matrix, machine info and the summary."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest

from reports.schema import FAILED_STATUSES, PHASES, SCHEMA, SIZE_ORDER

from . import distributed
from .faults import FAULT_KINDS, parse_faults
from .harness import Session
from .settings import FAMILY_NAMES, TIERS, CaseSpec, Settings, split_list
from .supervisor import InProcess, Supervisor

SESSION_KEY = pytest.StashKey[Session]()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("archbench")
    g.addoption("--tier", default="smoke", help=f"case matrix and timing budget: {', '.join(TIERS)} (default smoke)")
    g.addoption("--family", default=None, help=f"comma list of families: {', '.join(FAMILY_NAMES)}")
    g.addoption("--size", default=None, help=f"comma list of sizes: {', '.join(SIZE_ORDER)} (default: the tier's)")
    g.addoption("--phase", default=None, help=f"comma list of phases: {', '.join(PHASES)} (default: the tier's)")
    g.addoption("--variant", default=None, help="comma list of variants (default: the tier's)")
    g.addoption("--device", default="cpu", help="torch device: cpu, cuda, cuda:1 ... (default cpu)")
    g.addoption("--world-size", type=int, default=1, help="ranks per case (default 1)")
    g.addoption("--batch-size", type=int, default=None, help="samples per step per rank (default: the family's)")
    g.addoption("--data-dir", default=None, help="directory with MNIST in IDX format (default: scikit-learn digits)")
    g.addoption("--telemetry-interval", type=float, default=0.05, help="sampling interval in seconds (default 0.05)")
    g.addoption(
        "--case-timeout",
        type=float,
        default=None,
        help="seconds a case may take (build, warm-up, timing, accuracy): estimated longer, it is skipped;"
        " still running then, it is killed (default: the tier's)",
    )
    g.addoption("--results-dir", default="results", help="stream each result there as a JSON line ('' to disable)")
    g.addoption("--no-accuracy", action="store_true", help="skip the accuracy task (faster; accuracy absent)")
    g.addoption("--seed", type=int, default=0, help="seed of models and data (default 0)")
    g.addoption(
        "--time-to-accuracy",
        action="store_true",
        help="also train each training case's variant until a held-out target, --tta-runs seeded runs"
        " (MLPerf Training's way: mean time without the fastest and slowest run)",
    )
    g.addoption("--tta-runs", type=int, default=None, help="seeded runs per case (default: 5; 3 in the smoke tier)")
    g.addoption(
        "--tta-target",
        default=None,
        metavar="FAMILY[-SIZE]=VALUE,...",
        help="targets instead of the defaults: held-out accuracy (dense, cnn) or bits per byte (transformer),"
        " e.g. dense=0.9,transformer=2.5,transformer-s=2.3",
    )
    g.addoption(
        "--no-isolation",
        action="store_true",
        help="run the cases in the pytest process (for a debugger): no watchdog, a crash ends the session",
    )
    g.addoption(
        "--inject-slowdown",
        type=float,
        default=0.0,
        help="for evaluating regression gates: add this fraction of each timed step's own time to it"
        " (CPU work; an idle GPU on CUDA)",
    )
    g.addoption(
        "--inject-fault",
        default=None,
        metavar="ID=KIND[,ID=KIND...]",
        help=f"for testing isolation: make case ID fail in its first timed step; KIND: {', '.join(FAULT_KINDS)}",
    )
    # the DeepSpeed launcher appends --local_rank=N; the rank comes from LOCAL_RANK instead
    g.addoption("--local_rank", "--local-rank", type=int, default=None, help="(set by the DeepSpeed launcher; ignored)")


def _settings(config: pytest.Config) -> Settings:
    from workloads import variant_names
    from workloads.tta import parse_targets

    opt = config.getoption
    return Settings(
        tier=opt("--tier"),
        families=split_list("--family", opt("--family"), FAMILY_NAMES),
        phases=split_list("--phase", opt("--phase"), PHASES),
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
        time_to_accuracy=opt("--time-to-accuracy"),
        tta_runs=opt("--tta-runs"),
        tta_targets=parse_targets(opt("--tta-target")),
    )


def variant_phases() -> dict[str, tuple[str, ...]]:
    from workloads.registry import VARIANTS

    return {name: factory().phases for name, factory in VARIANTS.items()}


def _check_results_dir(path: str) -> None:
    """A results directory that can be created and written, or a ValueError naming why not."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"--results-dir {path}: cannot write there ({e.strerror or e})") from None


def _check_data_dir(settings: Settings) -> None:
    if settings.data_dir is None or not settings.accuracy:
        return
    from workloads.data import load_task

    try:
        load_task(settings.data_dir)
    except (OSError, ValueError) as e:
        raise ValueError(str(e)) from None


def _preflight(config: pytest.Config, settings: Settings) -> tuple[list[CaseSpec], dict[str, str]]:
    """Every option checked before anything runs: one usage error naming what is wrong."""
    matrix = settings.matrix(variant_phases())
    faults = parse_faults(config.getoption("--inject-fault"), [spec.id for spec in matrix])
    if settings.results_dir is not None and not _collect_only(config):
        _check_results_dir(settings.results_dir)
    _check_data_dir(settings)
    return matrix, faults


def _collect_only(config: pytest.Config) -> bool:
    return bool(config.getoption("--collect-only", False) or config.getoption("help", False))


def _executor(config: pytest.Config, settings: Settings, ranks: distributed.Ranks, matrix: list[CaseSpec]):
    if ranks.active or config.getoption("--no-isolation"):
        return InProcess(ranks)
    from workloads.registry import VARIANTS

    preload = sorted({m for name in {s.variant for s in matrix} for m in VARIANTS[name]().preload})
    if not settings.device.startswith("cuda"):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before the fork server imports DeepSpeed
    else:
        preload = []  # importing DeepSpeed may touch CUDA: a forked worker must do that itself
    log_dir = Path(settings.results_dir) / "logs" if settings.results_dir else None
    return Supervisor(log_dir, tuple(preload))


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads --benchmark-json (rank 0 only)
def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = _settings(config)
        matrix, faults = _preflight(config, settings)
        ranks = distributed.Ranks()
        if not _collect_only(config):
            ranks = distributed.setup(
                settings.world_size, settings.device, timeout_s=max(600.0, 2 * settings.timeout_s)
            )
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    if ranks.active and settings.device.startswith("cuda"):
        settings = dataclasses.replace(settings, device=f"cuda:{ranks.local_rank}")
    if not ranks.is_main:  # only rank 0 of a launcher's ranks writes results, JSON and tables
        settings = dataclasses.replace(settings, results_dir=None)
        for name, off in (("benchmark_json", None), ("benchmark_save", None), ("benchmark_autosave", False)):
            if hasattr(config.option, name):
                setattr(config.option, name, off)
    executor = _executor(config, settings, ranks, matrix) if not _collect_only(config) else InProcess(ranks)
    session = Session(settings, executor, ranks, faults, matrix)
    config.stash[SESSION_KEY] = session
    executor.start()


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.close()
        session.ranks.finish()


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``test_infer.py`` when the matrix has no inference case (and ``test_train.py`` likewise)."""
    session = config.stash.get(SESSION_KEY, None)
    phase = collection_path.stem.removeprefix("test_")
    if session is None or collection_path.parent != Path(__file__).parent or phase not in PHASES:
        return None
    return True if not any(spec.phase == phase for spec in session.matrix) else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case_spec" in metafunc.fixturenames:
        session = metafunc.config.stash[SESSION_KEY]
        phase = metafunc.module.PHASE
        specs = [spec for spec in session.matrix if spec.phase == phase]
        metafunc.parametrize("case_spec", specs, ids=[spec.id for spec in specs])


@pytest.fixture(scope="session")
def archbench_session(request: pytest.FixtureRequest) -> Session:
    return request.config.stash[SESSION_KEY]


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.machine_info_base = dict(machine_info)
        machine_info["archbench"] = session.machine_info()


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """Cases that did not end ok have no pytest-benchmark stats, and pytest-benchmark's own
    readers need stats in every entry of ``benchmarks``: they go under ``archbench.not_ok``."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    output_json["archbench"] = {"schema": SCHEMA, "not_ok": session.not_ok}


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    """The archbench tables under pytest-benchmark's own, also written as Markdown next to the
    results stream and to ``--benchmark-json``."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None or not session.results or not session.ranks.is_main:
        return
    from reports.table import render_tables

    failed = [i for i in session.results if i.get("status") in FAILED_STATUSES]
    for info in failed:
        terminalreporter.write_line(f"archbench: {info['id']}: {info['status']}: {info.get('reason')}")
    label = session.machine_info()["label"]
    text = render_tables(session.results, fmt="github", label=label)
    terminalreporter.write_sep("-", "archbench")
    terminalreporter.write_line(text)
    targets = []
    if session.stream is not None:
        targets.append(session.stream.path.with_suffix(".md"))
    json_out = config.getoption("benchmark_json", None)
    if json_out is not None:
        targets.append(Path(json_out).with_suffix(".md"))
    for path in targets:
        path.write_text(text + "\n", encoding="utf-8")
        terminalreporter.write_line(f"archbench tables written to {path}")
