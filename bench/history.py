"""Earlier runs in the results directory, read for estimates (``--plan``, the progress lines'
time left): per case its wall time, step time and status, and the matmul peaks measured.

Runs are the ``results-*.jsonl`` files of ``--results-dir``, newest first (by the timestamp in
the name), at most ``MAX_RUNS``; a file ``reports`` cannot read is passed over. A case matches an
earlier result with the same id, device and world size; its wall time (``wall_s``) counts only
where that run had the same tier, case timeout, accuracy setting and batch size (the session's
``settings``; the plan takes the median over such runs, the newest run's outcome), its step
time wherever the batch size was the same.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reports.errors import ReportError
from reports.load import load_jsonl

from .settings import CaseSpec, Settings

MAX_RUNS = 10


def run_settings(s: Settings) -> dict[str, Any]:
    """What decides a case's wall time besides the machine: kept with each run's results."""
    settings = {"tier": s.tier, "case_timeout_s": s.timeout_s, "accuracy": s.accuracy, "batch_size": s.batch_size}
    if s.round_budget_s is not None:  # --round-budget (only then: runs at the tier's keep matching)
        settings["round_budget_s"] = s.round_budget_s
    if s.threads is not None:  # --threads (likewise)
        settings["threads"] = s.threads
    if s.tta is not None:  # time-to-accuracy runs (only then: runs without them keep matching)
        settings["tta_runs"] = s.tta.runs
        settings["tta_targets"] = [list(t) for t in s.tta.targets]
    return settings


@dataclasses.dataclass(frozen=True)
class Past:
    """One earlier result of a case and the settings of its run ({} for runs that kept none)."""

    info: Mapping[str, Any]
    settings: Mapping[str, Any]
    source: str

    @property
    def wall_s(self) -> float | None:
        value = self.info.get("wall_s")
        return float(value) if isinstance(value, int | float) and value >= 0 else None


@dataclasses.dataclass
class History:
    cases: dict[tuple[str, str, int], list[Past]] = dataclasses.field(default_factory=dict)  # newest first
    peaks: dict[str, float] = dataclasses.field(default_factory=dict)  # "cpu:float32" -> TFLOP/s, newest
    runs: list[str] = dataclasses.field(default_factory=list)

    def _matches(self, spec: CaseSpec, s: Settings) -> list[Past]:
        return self.cases.get((spec.id, s.device, s.world_size), [])

    def same_settings(self, spec: CaseSpec, s: Settings) -> list[Past]:
        """The case's results from runs with these settings and a wall time, newest first."""
        wanted = run_settings(s)
        return [p for p in self._matches(spec, s) if p.settings == wanted and p.wall_s is not None]

    def step_time(self, spec: CaseSpec, s: Settings, batch_size: int) -> float | None:
        """The newest measured median step time of the case at this batch size."""
        for past in self._matches(spec, s):
            step = past.info.get("step_time_s")
            if past.info.get("status") == "ok" and past.info.get("batch_size") == batch_size and step:
                return float(step)
        return None


def _runs(directory: Path) -> list[Path]:
    try:
        files = sorted(directory.glob("results-*.jsonl"), key=lambda p: p.name, reverse=True)
    except OSError:
        return []
    return files[:MAX_RUNS]


def _add_run(history: History, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a truncated last line: the rest still counts
        run = load_jsonl(path)
    settings = run.session.get("settings") if isinstance(run.session.get("settings"), Mapping) else {}
    history.runs.append(str(path))
    for result in run.results:
        info = result.extra_info
        key = (result.id, str(info.get("device")), result.world_size)
        history.cases.setdefault(key, []).append(Past(info, settings or {}, str(path)))
        peak, dtype = info.get("peak_tflops"), info.get("dtype")
        if result.status == "ok" and isinstance(peak, int | float) and peak > 0 and dtype:
            history.peaks.setdefault(f"{info.get('device')}:{dtype}", float(peak))
    for name, peak in (run.facts.get("peak_tflops") or {}).items():
        if isinstance(peak, int | float) and peak > 0:
            history.peaks.setdefault(name, float(peak))


def load_history(results_dir: str | None) -> History:
    """The earlier runs in ``results_dir`` (none when it is unset or holds none)."""
    history = History()
    if not results_dir:
        return history
    for path in _runs(Path(results_dir)):
        try:
            _add_run(history, path)
        except (ReportError, OSError):
            continue  # unreadable: not worth a word in an estimate
    return history
