"""Statistics of the regression gate: a one-sided rank test on raw step times, its effect
sizes, and binomial intervals for evaluating the gate.

``compare_samples(baseline, new, worse="greater")`` answers "are the new values worse than
the baseline's, beyond what their spread explains?" with a one-sided Mann-Whitney U test
(``scipy.stats.mannwhitneyu``) and the effect sizes a reader needs to judge the answer:

- ``p_value``: one-sided, in the direction of "worse";
- ``common_language``: the probability that a random new value is worse than a random
  baseline value (ties count half); 0.5 means no effect, 1.0 every new value is worse;
- ``rank_biserial``: ``2 * common_language - 1``, from -1 to 1;
- ``hodges_lehmann``: the median of all pairwise differences ``new - baseline``, a robust
  estimate of the shift (in the values' unit), and ``hodges_lehmann_rel``, that shift
  relative to the baseline's median.

``proportion_interval(k, n)`` gives a Wilson or Clopper-Pearson interval for a rate such as
"detected in k of n trials". Nothing here knows about metrics or files; ``reports.check``
decides what is compared.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Worse = Literal["greater", "less"]

# Pairwise differences above this many pairs are estimated from a deterministic subsample.
_MAX_PAIRS = 1_000_000


@dataclass(frozen=True)
class RankTest:
    """A one-sided Mann-Whitney U test of ``new`` against ``baseline`` and its effect sizes."""

    n_baseline: int
    n_new: int
    worse: Worse
    u_statistic: float
    p_value: float
    common_language: float
    hodges_lehmann: float
    hodges_lehmann_rel: float | None
    min_p_value: float  # the smallest p-value these sample sizes can give (exact test)

    @property
    def rank_biserial(self) -> float:
        return 2.0 * self.common_language - 1.0

    def significant(self, alpha: float) -> bool:
        return self.p_value < alpha

    def can_reach(self, alpha: float) -> bool:
        """Whether any outcome of this many values could be significant at ``alpha``."""
        return self.min_p_value < alpha


def min_p_value(n_baseline: int, n_new: int) -> float:
    """Smallest one-sided exact Mann-Whitney p-value: every new value beyond every baseline
    value, ``1 / C(n_baseline + n_new, n_new)``."""
    log_comb = math.lgamma(n_baseline + n_new + 1) - math.lgamma(n_baseline + 1) - math.lgamma(n_new + 1)
    return math.exp(-log_comb)  # 0.0 where it underflows (thousands of values)


def hodges_lehmann(baseline: Sequence[float], new: Sequence[float]) -> float:
    """Median of the pairwise differences ``new[j] - baseline[i]``."""
    a = np.asarray(baseline, dtype=float)
    b = np.asarray(new, dtype=float)
    if a.size * b.size > _MAX_PAIRS:  # keep memory bounded: a fixed, evenly spread subsample
        step_a = max(1, math.ceil(a.size / 1000))
        step_b = max(1, math.ceil(b.size / 1000))
        a, b = np.sort(a)[::step_a], np.sort(b)[::step_b]
    return float(np.median(np.subtract.outer(b, a)))


def compare_samples(baseline: Sequence[float], new: Sequence[float], worse: Worse = "greater") -> RankTest:
    """One-sided Mann-Whitney U test that ``new`` is worse than ``baseline``.

    ``worse="greater"`` for a metric where higher is worse (step time), ``"less"`` where
    lower is worse (throughput). Both samples need at least one finite value.
    """
    a = np.asarray([x for x in baseline if math.isfinite(x)], dtype=float)
    b = np.asarray([x for x in new if math.isfinite(x)], dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("compare_samples needs at least one finite value on each side")
    from scipy import stats  # here, not at import: scipy.stats takes 1.4 s to import

    result = stats.mannwhitneyu(b, a, alternative=worse, method="auto")
    u_new = float(result.statistic)  # U of `new`: pairs where new > baseline, ties half
    p_greater = u_new / (a.size * b.size)
    common_language = p_greater if worse == "greater" else 1.0 - p_greater
    shift = hodges_lehmann(a, b)
    median = float(np.median(a))
    return RankTest(
        n_baseline=int(a.size),
        n_new=int(b.size),
        worse=worse,
        u_statistic=u_new,
        p_value=float(result.pvalue),
        common_language=common_language,
        hodges_lehmann=shift,
        hodges_lehmann_rel=shift / median if median else None,
        min_p_value=min_p_value(int(a.size), int(b.size)),
    )


def proportion_interval(
    successes: int, trials: int, confidence: float = 0.95, method: str = "wilson"
) -> tuple[float, float]:
    """Confidence interval of a rate: ``method`` is ``"wilson"`` or ``"exact"``
    (Clopper-Pearson), from ``scipy.stats.binomtest``. ``(nan, nan)`` for no trials."""
    if trials <= 0:
        return (math.nan, math.nan)
    from scipy import stats

    interval = stats.binomtest(successes, trials).proportion_ci(confidence, method=method)
    return (float(interval.low), float(interval.high))


MEDIAN_CI_MIN_SAMPLES = 6  # fewer order statistics cannot cover the median at 95%


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median: the order statistics that cover it
    with ``confidence`` (``scipy.stats.quantile_test``'s interval, a binomial argument that
    assumes independent samples, nothing about their distribution). None for fewer than
    ``MEDIAN_CI_MIN_SAMPLES`` samples, where no pair of order statistics reaches 95%."""
    x = np.asarray(samples, dtype=float)
    if x.size < MEDIAN_CI_MIN_SAMPLES:
        return None
    from scipy import stats

    interval = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    return None if not (math.isfinite(low) and math.isfinite(high)) else (low, high)


def ci_half_width_rel(interval: tuple[float, float], center: float) -> float:
    """Half the interval's width over ``center``: the relative precision of a median."""
    return (interval[1] - interval[0]) / 2 / center if center > 0 else math.inf
