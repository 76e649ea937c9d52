"""``python -m reports check --baseline BASE NEW``: the regression gate.

Compares every benchmark present in both runs (same id and world size), each metric in its
own direction (``reports.metrics.METRICS``), and exits 0 when nothing regressed, 1 on a
regression, 2 on unusable input (one line on stderr naming the file).

How a metric is judged (``RULES``):

- **Timing** (``step_time_s``; ``samples_per_s``, ``tokens_per_s``, ``tflops`` derived from
  it): the relative change of the value (the median step time, or the throughput computed
  from it) must pass the threshold in the worse direction **and** a one-sided Mann-Whitney
  U test on the raw step times (``extra_info["step_times_s"]``) must give ``p < alpha``.
  The derived metrics are tested on per-step values of the same step times, so they carry
  the same evidence, not extra chances of a false alarm. Without raw times (an old file)
  the threshold alone decides, and the verdict says so. ``mfu`` divides by each session's
  own peak probe and is not gated unless asked for (``--threshold mfu=...``): its change
  would add the probe's noise to the step time's.
- **Accuracy**: the difference in percentage points (no test: one held-out score per run).
- **Memory and energy**: the relative change (one number per run).
- **Status**: ``ok`` -> ``timeout``, ``oom`` or ``error`` (``reports.schema.FAILED_STATUSES``)
  is a regression, read from jsonl lines or from a pytest-benchmark JSON file's
  ``archbench.not_ok``; a benchmark in BASE but not in NEW (a JSON file written before
  ``not_ok`` leaves out cases that did not end ok) or newly skipped is reported as missing,
  and fails the gate only with ``--fail-on-missing``.

A metric that is null on either side is not compared; the table says why (its ``absent``
reason), never treating it as 0. Results from different machines (``label``, CPU model,
core count, GPU name or count in ``machine_info["archbench"]``) are refused unless
``--cross-machine``; a software change (torch, CUDA, DeepSpeed, driver, threads) is what a
gate is for, so it is reported in the header, not refused.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from tabulate import tabulate

from reports.errors import ReportError, one_line
from reports.inputs import DEFAULT_STORAGE, load_input
from reports.load import Result, Run, machine_label, warn_mixed_corpora
from reports.metrics import METRICS, Metric, format_value
from reports.schema import FAILED_STATUSES
from reports.stats import RankTest, compare_samples
from reports.validate import is_number

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_UNUSABLE = 2
DEFAULT_ALPHA = 0.01

Kind = Literal["relative", "points"]


@dataclass(frozen=True)
class Rule:
    """How the gate judges one metric.

    ``kind``: ``"relative"`` (threshold is a fraction of the baseline value) or ``"points"``
    (threshold is an absolute difference of two fractions, shown in percentage points);
    ``default``: the threshold, or None for a metric shown only when given a threshold;
    ``timing``: the change must also be significant on the raw step times.
    """

    kind: Kind
    default: float | None
    timing: bool = False


# The order of the check table. fmt: off
RULES: dict[str, Rule] = {
    "step_time_s": Rule("relative", 0.05, timing=True),
    "samples_per_s": Rule("relative", 0.05, timing=True),
    "tokens_per_s": Rule("relative", 0.05, timing=True),
    "tflops": Rule("relative", 0.05, timing=True),
    "mfu": Rule("relative", None, timing=True),
    "accuracy": Rule("points", 0.005),
    "bits_per_byte": Rule("relative", 0.01),
    "accuracy_delta": Rule("points", None),
    "peak_mem_bytes": Rule("relative", 0.10),
    "model_state_bytes": Rule("relative", 0.10),
    "model_state_bytes_predicted": Rule("relative", None),
    "model_bytes": Rule("relative", 0.10),
    "energy_j_per_sample": Rule("relative", 0.10),
    "samples_per_j": Rule("relative", 0.10),
}
# fmt: on
for _key in RULES:
    assert METRICS[_key].direction is not None, _key
STEP_TIME = "step_time_s"

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
# thresholds


@dataclass(frozen=True)
class ThresholdSpec:
    """One ``--threshold [PATTERN:]METRIC=VALUE``."""

    metric: str
    value: float | None  # None: "off", not gated
    pattern: str | None = None
    text: str = ""


def _allowed_metrics() -> str:
    return ", ".join(RULES)


def parse_threshold(text: str) -> ThresholdSpec:
    """``step_time_s=0.08``, ``step_time_s=8%``, ``accuracy=0.5pp`` (or ``0.005``),
    ``'transformer-*:step_time_s=0.1'``, ``step_time_s=off`` (not gated). Raises
    ReportError with the allowed forms."""
    where = f"--threshold {text}"
    target, sep, raw = text.rpartition("=")
    if not sep or not target or not raw.strip():
        raise ReportError(f"{where}: expected [ID_PATTERN:]METRIC=VALUE")
    pattern, _, metric = target.rpartition(":")
    metric = metric.strip()
    if metric not in RULES:
        why = "has no direction, so it cannot regress" if metric in METRICS else "unknown metric"
        raise ReportError(f"{where}: {why} {metric!r}; allowed: {_allowed_metrics()}")
    rule = RULES[metric]
    raw = raw.strip().lower()
    if raw == "off":
        return ThresholdSpec(metric, None, pattern.strip() or None, text)
    try:
        if raw.endswith("pp"):
            if rule.kind != "points":
                raise ReportError(f"{where}: {metric} is relative; give 0.05 or 5%, not points")
            value = float(raw[:-2]) / 100
        elif raw.endswith("%"):
            if rule.kind == "points":
                raise ReportError(f"{where}: {metric} is in points; give 0.5pp or the fraction 0.005")
            value = float(raw[:-1]) / 100
        else:
            value = float(raw)
    except ValueError:
        raise ReportError(f"{where}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ReportError(f"{where}: the threshold must be a number >= 0")
    return ThresholdSpec(metric, value, pattern.strip() or None, text)


@dataclass
class Thresholds:
    """Thresholds by benchmark id and metric: the last ``--threshold`` whose id pattern
    matches, else the last without a pattern, else (for the throughput metrics derived
    from step time) what was given for ``step_time_s``, else the default."""

    specs: list[ThresholdSpec] = field(default_factory=list)

    def _given(self, benchmark_id: str, metric: str) -> ThresholdSpec | None:
        for spec in reversed(self.specs):
            if spec.metric == metric and spec.pattern is not None:
                if fnmatch.fnmatchcase(benchmark_id, spec.pattern):
                    return spec
        for spec in reversed(self.specs):
            if spec.metric == metric and spec.pattern is None:
                return spec
        return None

    def get(self, benchmark_id: str, metric: str) -> float | None:
        """The threshold, or None where the metric is not gated."""
        given = self._given(benchmark_id, metric)
        if given is not None:
            return given.value
        rule = RULES[metric]
        if rule.timing and metric != STEP_TIME and rule.default is not None:
            inherited = self._given(benchmark_id, STEP_TIME)
            if inherited is not None:
                return inherited.value
        return rule.default

    def gated(self, benchmark_id: str) -> list[str]:
        """The metrics judged for a benchmark, in ``RULES`` order."""
        return [m for m in RULES if self.get(benchmark_id, m) is not None]


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
    """``key 'a' vs 'b'`` for each machine fact that differs."""
    a = base.machine_info.get("archbench") or {}
    b = new.machine_info.get("archbench") or {}
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


# ---------------------------------------------------------------------------------------
# output

COLUMNS = (
    "benchmark", "metric", "baseline", "new", "change", "threshold", "p", "effect",
    "verdict", "note",
)  # fmt: skip


def _format_cell_value(metric: str, value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format_value(METRICS[metric], value) if metric in METRICS else f"{value:g}"


def _format_change(row: Row) -> str:
    if row.change is None:
        return ""
    if row.kind == "points":
        return f"{row.change * 100:+.1f} pp"
    return f"{row.change * 100:+.1f}%"


def _format_threshold(row: Row) -> str:
    if row.threshold is None or row.metric not in METRICS:
        return ""
    if row.kind == "points":
        return f"{row.threshold * 100:.2g} pp"
    return f"{row.threshold * 100:.3g}%"


def _format_p(p: float | None) -> str:
    if p is None:
        return ""
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _format_effect(row: Row) -> str:
    if row.common_language is None:
        return ""
    text = f"CL {row.common_language:.2f}"
    if row.hodges_lehmann_rel is not None:
        text += f", HL {row.hodges_lehmann_rel * 100:+.1f}%"
    return text


def _cells(row: Row, markdown: bool) -> list[str]:
    cells = [
        row.benchmark,
        row.metric,
        _format_cell_value(row.metric, row.baseline),
        _format_cell_value(row.metric, row.new),
        _format_change(row),
        _format_threshold(row),
        _format_p(row.p_value),
        _format_effect(row),
        f"**{row.verdict}**" if markdown and row.fails else row.verdict,
        row.note,
    ]
    if markdown:
        cells = [c.replace("|", "\\|").replace("\n", " ") for c in cells]
    return cells


def _table(rows: Sequence[Row], markdown: bool) -> str:
    fmt = "github" if markdown else "simple"
    return tabulate(
        [_cells(r, markdown) for r in rows],
        headers=COLUMNS,
        tablefmt=fmt,
        disable_numparse=True,
    )


def _describe(run: Run) -> str:
    when = f", {run.datetime}" if run.datetime else ""
    return f"{run.source} ({run.label}{when})"


def summary_line(report: Report) -> str:
    benchmarks = {r.benchmark for r in report.rows if r.verdict not in (MISSING, ADDED)}
    failed = {r.benchmark for r in report.regressions}
    parts = []
    if report.regressions:
        parts.append(
            f"FAIL: {len(report.regressions)} regression(s) in {len(failed)} of {len(benchmarks)} compared benchmark(s)"
        )
    else:
        parts.append(f"PASS: no regression in {len(benchmarks)} compared benchmark(s)")
    if report.missing:
        tail = " (fails the gate: --fail-on-missing)" if report.fail_on_missing else ""
        parts.append(f"{len(report.missing)} missing in NEW{tail}")
    return "; ".join(parts)


def _method_line(report: Report) -> str:
    return (
        f"timing: change of the median beyond the threshold and one-sided Mann-Whitney U on"
        f" the raw step times, p < {report.alpha:g} (p: towards worse; CL: probability a new"
        " step is worse than a baseline step; HL: Hodges-Lehmann shift)"
    )


def render_text(report: Report) -> str:
    lines = [
        "archbench check",
        f"baseline: {_describe(report.baseline)}",
        f"new:      {_describe(report.new)}",
        *report.header_notes,
        _method_line(report),
        "",
        _table(report.rows, markdown=False),
        "",
    ]
    for row in report.regressions:
        before = _format_cell_value(row.metric, row.baseline)
        after = _format_cell_value(row.metric, row.new)
        change = f" ({_format_change(row)})" if row.change is not None else ""
        lines.append(f"regression: {row.benchmark} {row.metric}: {before} -> {after}{change}")
    lines.append(summary_line(report))
    return "\n".join(lines) + "\n"


def render_markdown(report: Report) -> str:
    """A CI summary page: the verdict, the rows that need a look, then every row."""
    title = "regression" if report.regressions else "no regression"
    lines = [
        f"## archbench check: {title}",
        "",
        f"**{summary_line(report)}**",
        "",
        f"- baseline: `{_describe(report.baseline)}`",
        f"- new: `{_describe(report.new)}`",
        *[f"- {note}" for note in report.header_notes],
        f"- {_method_line(report)}",
        "",
    ]
    notable = [
        r for r in report.rows
        if r.fails or r.verdict in (MISSING, NOT_SIGNIFICANT, IMPROVED, FIXED, ADDED)
    ]  # fmt: skip
    if notable:
        lines += [_table(notable, markdown=True), ""]
    lines += [
        f"<details><summary>All {len(report.rows)} rows</summary>",
        "",
        _table(report.rows, markdown=True),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def report_json(report: Report) -> dict[str, Any]:
    return {
        "exit_code": report.exit_code,
        "summary": summary_line(report),
        "alpha": report.alpha,
        "baseline": {"source": report.baseline.source, "label": report.baseline.label},
        "new": {"source": report.new.source, "label": report.new.label},
        "notes": report.header_notes,
        "rows": [asdict(r) for r in report.rows],
    }


# ---------------------------------------------------------------------------------------
# inputs and command line


def load_run(text: str, storage: str | Path) -> Run:
    """One run for BASE or NEW (``reports.inputs``: a file, a storage id such as ``0003``, or
    a directory, meaning its newest run); it must hold results."""
    run = load_input(text, storage)
    if not run.results:
        raise ReportError(f"{run.source}: no benchmark results")
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m reports check",
        description="Regression gate: exit 0 nothing regressed, 1 regression, 2 unusable input.",
    )
    parser.add_argument(
        "--baseline",
        required=True,
        metavar="BASE",
        help="baseline: pytest-benchmark JSON, results-*.jsonl, storage id (0001), or a directory"
        " (results/ or .benchmarks: its newest run)",
    )
    parser.add_argument("new", metavar="NEW", help="the run to judge (same forms as BASE)")
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="[ID_PATTERN:]METRIC=VALUE",
        help="e.g. step_time_s=0.08 or 8%%, accuracy=0.5pp (or 0.005), step_time_s=off,"
        " 'transformer-*:step_time_s=0.1' (fnmatch on the benchmark id); repeatable, last wins."
        " Defaults: step time and throughput 5%%, accuracy 0.5pp, memory and energy 10%%",
    )
    parser.add_argument(
        "--alpha",
        type=float,
        default=DEFAULT_ALPHA,
        help="significance level of the step-time test (default: %(default)s)",
    )
    parser.add_argument(
        "--cross-machine",
        action="store_true",
        help="compare results from different machines (otherwise refused, exit 2)",
    )
    parser.add_argument(
        "--fail-on-missing",
        action="store_true",
        help="exit 1 when a benchmark of BASE is missing from NEW or newly skipped",
    )
    parser.add_argument("--markdown", action="store_true", help="Markdown for a CI summary page")
    parser.add_argument("--json", metavar="FILE", help="also write every row as JSON to FILE")
    parser.add_argument(
        "--storage",
        default=str(DEFAULT_STORAGE),
        help="pytest-benchmark storage for storage ids (default: %(default)s)",
    )
    return parser


def run_check(args: argparse.Namespace, stdout: TextIO) -> int:
    if not 0 < args.alpha < 1:
        raise ReportError(f"--alpha {args.alpha:g}: must be between 0 and 1")
    thresholds = Thresholds([parse_threshold(text) for text in args.threshold])
    base = load_run(args.baseline, args.storage)
    new = load_run(args.new, args.storage)
    warn_mixed_corpora([base, new])
    report = compare_runs(base, new, thresholds, args.alpha, args.cross_machine, args.fail_on_missing)
    stdout.write(render_markdown(report) if args.markdown else render_text(report))
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report_json(report), indent=2), encoding="utf-8")
        except OSError as error:
            raise ReportError(f"{args.json}: cannot write ({error.strerror})") from None
    return report.exit_code


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """``python -m reports check ...``; returns the exit status (0, 1 or 2)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return run_check(args, stdout or sys.stdout)
    except ReportError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return EXIT_UNUSABLE
