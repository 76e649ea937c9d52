"""The regression gate's judgement (``reports.check``): every benchmark of BASE against NEW,
each metric in its own direction (``reports.thresholds.RULES``), timing with a rank test on the
raw step times (``reports.stats``); the rows and the exit status of a ``Report``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from reports.errors import ReportError
from reports.load import Result, Run, machine_label
from reports.metrics import METRICS, Metric
from reports.schema import FAILED_STATUSES
from reports.stats import RankTest, compare_samples
from reports.thresholds import RULES, STEP_TIME, Kind, Thresholds
from reports.trust import marks
from reports.validate import is_number

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_UNUSABLE = 2
DEFAULT_ALPHA = 0.01

HARDWARE_KEYS = ("label", "cpu_model", "cpu_cores", "gpu_name", "gpu_count")
SOFTWARE_KEYS = ("torch", "cuda", "deepspeed", "torchao", "driver", "torch_threads")

# Verdicts; REGRESSED* fail the gate, MISSING fails it with --fail-on-missing.
REGRESSED = "REGRESSED"
REGRESSED_THRESHOLD_ONLY = "REGRESSED (threshold only)"
NOT_SIGNIFICANT = "not significant"
IMPROVED = "improved"
OK = "ok"
NOT_COMPARED = "not compared"
MISSING = "missing"
ADDED = "added"
FIXED = "fixed"
FAILING = (REGRESSED, REGRESSED_THRESHOLD_ONLY)


# ---------------------------------------------------------------------------------------
# comparison


@dataclass
class Row:
    """One line of the check table."""

    benchmark: str
    metric: str
    verdict: str
    baseline: float | str | None = None
    new: float | str | None = None
    change: float | None = None
    threshold: float | None = None
    kind: Kind | None = None
    p_value: float | None = None
    common_language: float | None = None
    hodges_lehmann_rel: float | None = None
    n_rounds: tuple[int, int] | None = None
    note: str = ""
    baseline_marks: str = ""  # "~" (unstable), " contended", as the tables mark values
    new_marks: str = ""

    @property
    def fails(self) -> bool:
        return self.verdict in FAILING


@dataclass
class Report:
    baseline: Run
    new: Run
    alpha: float
    rows: list[Row]
    header_notes: list[str]
    fail_on_missing: bool = False

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.fails]

    @property
    def missing(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == MISSING]

    @property
    def exit_code(self) -> int:
        if self.regressions or (self.fail_on_missing and self.missing):
            return EXIT_REGRESSION
        return EXIT_OK


def _benchmark_name(result: Result) -> str:
    return result.id if result.world_size == 1 else f"{result.id} (x{result.world_size})"


def raw_step_times(result: Result, source: str) -> tuple[list[float] | None, str]:
    """The raw time of every timed round: ``extra_info["step_times_s"]``, else
    pytest-benchmark's ``stats["data"]`` (saved with ``--benchmark-save-data``)."""
    for origin, values in (
        ("step_times_s", result.extra_info.get("step_times_s")),
        ("stats.data", (result.stats or {}).get("data")),
    ):
        if values is None:
            continue
        if not isinstance(values, list) or not all(is_number(v) and v > 0 for v in values):
            raise ReportError(f"{source} ({result.name}): {origin}: expected a list of positive numbers")
        if values:
            return [float(v) for v in values], origin
    return None, ""


def _per_step_values(metric: str, result: Result, value: float, times: list[float]) -> list[float]:
    """The metric per timed round: the step time itself, or a throughput scaled by
    ``median step time / round time`` (throughput = work per step / step time)."""
    if metric == STEP_TIME:
        return times
    median_time = result.value(STEP_TIME) or sorted(times)[len(times) // 2]
    return [value * median_time / t for t in times]


def _change(kind: Kind, baseline: float, new: float) -> float | None:
    if kind == "points":
        return new - baseline
    return None if baseline <= 0 else new / baseline - 1.0


def _worse(metric: Metric, change: float, threshold: float) -> bool:
    return change > threshold if metric.direction == "lower" else change < -threshold


def _better(metric: Metric, change: float, threshold: float) -> bool:
    return change < -threshold if metric.direction == "lower" else change > threshold


def _absent_note(base: Result, new: Result, key: str) -> str:
    in_base, in_new = base.value(key) is None, new.value(key) is None
    if in_base and in_new:
        reasons = {base.absent_reason(key), new.absent_reason(key)}
        return "absent: " + " / ".join(sorted(reasons))
    side, result = ("BASE", base) if in_base else ("NEW", new)
    return f"absent in {side}: {result.absent_reason(key)}"


def judge_metric(
    metric_key: str,
    base: Result,
    new: Result,
    threshold: float,
    alpha: float,
    sources: tuple[str, str],
) -> Row:
    """One metric of one benchmark present and ``ok`` in both runs."""
    metric, rule = METRICS[metric_key], RULES[metric_key]
    row = Row(_benchmark_name(base), metric_key, NOT_COMPARED, threshold=threshold, kind=rule.kind)
    base_value, new_value = base.value(metric_key), new.value(metric_key)
    row.baseline, row.new = base_value, new_value
    row.baseline_marks, row.new_marks = marks(metric, base), marks(metric, new)
    if base_value is None or new_value is None:
        row.note = _absent_note(base, new, metric_key)
        return row
    timers = (base.extra_info.get("timer"), new.extra_info.get("timer"))
    if rule.timing and None not in timers and timers[0] != timers[1]:
        row.note = f"timed differently ({timers[0]} -> {timers[1]})"
        return row
    if metric_key == STEP_TIME:
        work = (base.extra_info.get("samples_per_step"), new.extra_info.get("samples_per_step"))
        if None not in work and work[0] != work[1]:
            row.note = f"samples per step changed ({work[0]} -> {work[1]}): see throughput"
            return row
    change = _change(rule.kind, base_value, new_value)
    if change is None:
        row.note = f"baseline value {base_value:g} gives no relative change"
        return row
    row.change = change
    worse, better = _worse(metric, change, threshold), _better(metric, change, threshold)
    if not rule.timing:
        row.verdict = REGRESSED if worse else IMPROVED if better else OK
        return row

    test, why_not = _rank_test(metric_key, base, new, base_value, new_value, alpha, sources)
    if test is None:
        row.note = f"threshold only: {why_not}"
        row.verdict = REGRESSED_THRESHOLD_ONLY if worse else IMPROVED if better else OK
        return row
    row.p_value = test.p_value
    row.common_language = test.common_language
    row.hodges_lehmann_rel = test.hodges_lehmann_rel
    row.n_rounds = (test.n_baseline, test.n_new)
    if worse:
        row.verdict = REGRESSED if test.significant(alpha) else NOT_SIGNIFICANT
    elif better:
        opposite = "less" if test.worse == "greater" else "greater"
        improved, _ = _rank_test(metric_key, base, new, base_value, new_value, alpha, sources, opposite)
        row.verdict = IMPROVED if improved is not None and improved.significant(alpha) else OK
    else:
        row.verdict = OK
    return row


def _rank_test(
    metric_key: str,
    base: Result,
    new: Result,
    base_value: float,
    new_value: float,
    alpha: float,
    sources: tuple[str, str],
    direction: str | None = None,
) -> tuple[RankTest | None, str]:
    """The Mann-Whitney test of a timing metric, or None and why it cannot be run."""
    base_times, _ = raw_step_times(base, sources[0])
    new_times, _ = raw_step_times(new, sources[1])
    if base_times is None or new_times is None:
        side = "BASE" if base_times is None else "NEW"
        return None, f"no raw step times in {side}"
    worse = "greater" if METRICS[metric_key].direction == "lower" else "less"
    samples = (
        _per_step_values(metric_key, base, base_value, base_times),
        _per_step_values(metric_key, new, new_value, new_times),
    )
    if not all(math.isfinite(v) for values in samples for v in values):
        return None, "per-step values beyond a float's range"
    test = compare_samples(*samples, direction or worse)  # type: ignore[arg-type]
    if not test.can_reach(alpha):
        return None, f"too few rounds ({test.n_baseline} and {test.n_new}) to reach p < {alpha:g}"
    return test, ""


def _status_text(result: Result) -> str:
    return result.status if result.status == "ok" else f"{result.status}: {result.reason or '?'}"


def judge_benchmark(
    base: Result,
    new: Result,
    thresholds: Thresholds,
    alpha: float,
    sources: tuple[str, str],
) -> list[Row]:
    name = _benchmark_name(base)
    if base.status == "ok" and new.status == "ok":
        return [
            judge_metric(key, base, new, thresholds.get(base.id, key), alpha, sources)  # type: ignore[arg-type]
            for key in thresholds.gated(base.id)
        ]
    row = Row(name, "status", NOT_COMPARED, _status_text(base), _status_text(new))
    if base.status == "ok" and new.status in FAILED_STATUSES:
        row.verdict = REGRESSED
    elif base.status == "ok":  # newly skipped: it no longer runs
        row.verdict, row.note = MISSING, "ran in BASE, skipped in NEW"
    elif new.status == "ok":
        row.verdict, row.note = FIXED, f"was {base.status} in BASE; no baseline to compare with"
    else:
        row.note = "not ok in either run"
    return [row]


def machine_differences(base: Run, new: Run, keys: Sequence[str]) -> list[str]:
    """``key 'a' vs 'b'`` for each machine fact that differs (torch_threads: the session's)."""
    a, b = base.facts, new.facts
    diffs = []
    for key in keys:
        if key == "label":
            left, right = machine_label(base.machine_info), machine_label(new.machine_info)
        else:
            left, right = a.get(key), b.get(key)
        if left != right and (key == "label" or (left is not None and right is not None)):
            diffs.append(f"{key} {left!r} vs {right!r}")
    return diffs


def compare_runs(
    base: Run,
    new: Run,
    thresholds: Thresholds | None = None,
    alpha: float = DEFAULT_ALPHA,
    cross_machine: bool = False,
    fail_on_missing: bool = False,
) -> Report:
    """Judge every benchmark of ``base`` against ``new``; raises ReportError for runs from
    different machines unless ``cross_machine``."""
    thresholds = thresholds or Thresholds()
    notes = []
    hardware = machine_differences(base, new, HARDWARE_KEYS)
    if hardware and not cross_machine:
        raise ReportError(
            f"{new.source}: not the machine of {base.source} ({'; '.join(hardware)});"
            " pass --cross-machine to compare anyway"
        )
    if hardware:
        notes.append("cross-machine comparison: " + "; ".join(hardware))
    software = machine_differences(base, new, SOFTWARE_KEYS)
    if software:
        notes.append("software changed: " + "; ".join(software))
    sources = (base.source, new.source)
    rows: list[Row] = []
    new_keys = {(r.id, r.world_size) for r in new.results}
    for result in sorted(base.results, key=lambda r: r.order):
        other = new.get(result.id, result.world_size)
        if other is None:
            note = (
                "in BASE, not in NEW (a pytest-benchmark JSON file without archbench.not_ok"
                " leaves out benchmarks that did not end ok: see the run's log)"
            )
            rows.append(Row(_benchmark_name(result), "benchmark", MISSING, note=note))
            continue
        rows.extend(judge_benchmark(result, other, thresholds, alpha, sources))
    base_keys = {(r.id, r.world_size) for r in base.results}
    for result in sorted(new.results, key=lambda r: r.order):
        if (result.id, result.world_size) not in base_keys:
            rows.append(Row(_benchmark_name(result), "benchmark", ADDED, note="not in BASE"))
    if not base_keys & new_keys:
        notes.append("no benchmark id is in both runs")
    return Report(base, new, alpha, rows, notes, fail_on_missing)
