"""pytest plugin of ``pytest bench``: options, the case matrix, machine info, the plan, the
progress lines and the summary."""

from __future__ import annotations

import atexit
import dataclasses
import gc
import os
import tempfile
from pathlib import Path

import pytest

from reports.schema import FAILED_STATUSES, PHASES, SCHEMA, SIZE_ORDER

from . import distributed
from .faults import FAULT_KINDS, parse_faults
from .harness import Session
from .machine import VOLATILE_CPU_KEYS
from .progress import Progress, ProgressLines
from .settings import FAMILY_NAMES, TIERS, CaseSpec, Settings, split_list, use_threads
from .supervisor import InProcess, Supervisor

SESSION_KEY = pytest.StashKey[Session]()

# At exit, Python's last garbage collection walks every object that importing torch made: 0.9 s
# of each `pytest bench` process on the 2-core VM (`import torch` alone: 3.5 s, 2.6 s with
# gc.freeze() at exit). By then every result file is written and closed; frozen objects are
# left to the OS.
atexit.register(gc.freeze)


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
        "--target-ci",
        type=float,
        default=0.02,
        help="stop timing a case once the 95%% CI of its median step is within this fraction of it"
        " (default 0.02; 0 turns early stopping off: the tier's whole budget)",
    )
    g.addoption(
        "--round-budget",
        type=float,
        default=None,
        help="seconds the timed rounds fill at most (default: the tier's, see README: Tiers)",
    )
    g.addoption(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch's intra-op threads per rank (default: torch's, one per CPU, shared among a case's ranks);"
        " fewer than the CPUs leaves the rest to other work, see README: Trust",
    )
    g.addoption(
        "--stable-threshold",
        type=float,
        default=0.05,
        help="a result whose CI half-width is over this fraction of the median is marked unstable (default 0.05)",
    )
    g.addoption(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="before each case, wait up to S seconds for other processes to leave the CPUs (default 0: do not wait)",
    )
    g.addoption(
        "--interleave",
        action="store_true",
        help="time the variants of each family, size and phase side by side, in turns (ABBA), so their ratios"
        " see the same machine",
    )
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
    g.addoption(
        "--plan",
        action="store_true",
        help="print the cases that would run, each with its predicted skip (and why) or estimated time,"
        " and the total; run nothing",
    )
    g.addoption(
        "--no-progress",
        action="store_true",
        help="no progress line per case as it starts and ends (also off with -q -q)",
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
        stable_threshold=opt("--stable-threshold"),
        target_ci=opt("--target-ci") or None,
        wait_quiet_s=opt("--wait-quiet"),
        interleave=opt("--interleave"),
        time_to_accuracy=opt("--time-to-accuracy"),
        tta_runs=opt("--tta-runs"),
        tta_targets=parse_targets(opt("--tta-target")),
        round_budget_s=opt("--round-budget"),
        threads=opt("--threads"),
    )


def known_variants() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every registered variant: name -> (its phases, the variants it is compared with)."""
    from workloads.registry import VARIANTS

    return {name: (v.phases, v.baselines) for name, v in ((n, f()) for n, f in VARIANTS.items())}


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
    matrix = settings.matrix(known_variants())
    faults = parse_faults(config.getoption("--inject-fault"), [spec.id for spec in matrix])
    if settings.results_dir is not None and not _collect_only(config):
        _check_results_dir(settings.results_dir)
    _check_data_dir(settings)
    return matrix, faults


def _collect_only(config: pytest.Config) -> bool:
    return bool(config.getoption("--collect-only", False) or config.getoption("help", False))


def _executor(config: pytest.Config, settings: Settings, ranks: distributed.Ranks, matrix: list[CaseSpec]):
    if ranks.active or config.getoption("--no-isolation"):
        if settings.interleave:
            raise ValueError("--interleave runs each variant in its own worker: not with --no-isolation or a launcher")
        return InProcess(ranks)
    from workloads.registry import VARIANTS

    preload = sorted({m for name in {s.variant for s in matrix} for m in VARIANTS[name]().preload})
    if not settings.device.startswith("cuda"):
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before the fork server imports DeepSpeed
    else:
        preload = []  # importing DeepSpeed may touch CUDA: a forked worker must do that itself
    log_dir = Path(settings.results_dir) / "logs" if settings.results_dir else None
    return Supervisor(log_dir, tuple(preload))


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """``--plan``: the matrix and its estimates, before anything is configured or started."""
    if not config.getoption("--plan", False):
        return None
    from .history import load_history
    from .plan import make_plan, render_plan

    try:
        settings = _settings(config)
        matrix = settings.matrix(known_variants())
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
    print(render_plan(make_plan(settings, matrix, load_history(settings.results_dir))), end="", flush=True)
    return 0


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark reads --benchmark-json (rank 0 only)
def pytest_configure(config: pytest.Config) -> None:
    # hypothesis (installed for the test suite) registers a pytest plugin whose end-of-session
    # summary imports hypothesis: 2.6 s of every benchmark session, for tests it has none of
    if config.pluginmanager.has_plugin("hypothesispytest"):
        config.pluginmanager.unregister(name="hypothesispytest")
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
    use_threads(settings.threads)  # before the fork server starts: it and the workers inherit them
    try:
        executor = _executor(config, settings, ranks, matrix) if not _collect_only(config) else InProcess(ranks)
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None
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
    """Facts of the machine only: ``--benchmark-compare`` warns on any difference, so what
    changes from session to session (the peaks, torch's threads, the CPU's current clock) goes
    to ``archbench.session`` instead."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    cpu = machine_info.get("cpu")
    if isinstance(cpu, dict):
        for key in VOLATILE_CPU_KEYS:
            if key in cpu:
                session.moved_facts[f"cpu_{key}"] = cpu.pop(key)
    session.machine_info_base = dict(machine_info)
    machine_info["archbench"] = session.machine_info()


def pytest_benchmark_update_json(config: pytest.Config, benchmarks, output_json: dict) -> None:
    """Cases that did not end ok have no pytest-benchmark stats, and pytest-benchmark's own
    readers need stats in every entry of ``benchmarks``: they go under ``archbench.not_ok``.
    The session's own measurements go under ``archbench.session``."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        return
    output_json["archbench"] = {"schema": SCHEMA, "not_ok": session.not_ok, "session": session.session_facts()}


def _progress_on(config: pytest.Config, session: Session) -> bool:
    quiet = config.getoption("verbose", 0) <= -2
    off = quiet or config.getoption("--no-progress") or _collect_only(config)
    return session.ranks.is_main and not off


def pytest_collection_finish(session: pytest.Session) -> None:
    """Progress lines for the cases that will run (after ``-k`` and deselection)."""
    config = session.config
    bench = config.stash.get(SESSION_KEY, None)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if bench is not None and reporter is not None:
        bench.say = reporter.write_line
    if bench is None or reporter is None or not _progress_on(config, bench):
        return
    cases = [(item.nodeid, spec) for item in session.items if (spec := _spec_of(item)) is not None]
    progress = Progress(reporter.write_line, cases, _estimates(bench, [spec for _, spec in cases]))
    config.pluginmanager.register(ProgressLines(progress, bench.by_nodeid), "archbench-progress")


def _estimates(bench: Session, specs: list[CaseSpec]) -> dict[str, float]:
    """The plan's estimate of each case (for the time left), or none where it cannot be made."""
    from .history import load_history
    from .plan import make_plan

    try:
        plan = make_plan(bench.settings, specs, load_history(bench.settings.results_dir))
    except Exception:  # an estimate is a nicety: the run goes on without one
        return {}
    return {e.spec.id: e.seconds for e in plan.estimates}


def _spec_of(item: pytest.Item) -> CaseSpec | None:
    callspec = getattr(item, "callspec", None)
    return None if callspec is None else callspec.params.get("case_spec")


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
