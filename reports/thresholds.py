"""Thresholds of the regression gate (``reports.check``): how each metric is judged
(``RULES``) and what ``--threshold [ID_PATTERN:]METRIC=VALUE`` asks for (``Thresholds``)."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from typing import Literal

from reports.errors import ReportError
from reports.metrics import METRICS

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
