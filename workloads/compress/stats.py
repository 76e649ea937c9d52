"""Is a compressed model's accuracy the reference's? A paired test and MLPerf's quality targets.

``mcnemar`` compares two models on the same samples, counting only the samples they disagree on:
``b`` = right before, wrong after (errors added), ``c`` = wrong before, right after (errors fixed). Under
"no change" b and c are equally likely. For ``b + c < EXACT_BELOW`` the p-value is the exact two-sided
binomial test (``scipy.stats.binomtest(b, b + c, 0.5)``); above, the chi-square statistic with continuity
correction, ``(|b - c| - 1)^2 / (b + c)``, one degree of freedom (Edwards 1948), which the exact test
approaches. With 360 digits test samples one sample is 0.28%: a change of a few errors is not evidence. The
text task's samples are the predicted bytes of its test windows (256 x seq_len), each a verdict.

``meets`` applies MLPerf Inference's quality targets: 99% and 99.9% of the fp32 reference's accuracy.
(The regression gate's statistics live in ``reports.stats``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

EXACT_BELOW = 25  # b + c below this: exact binomial test (the usual rule of thumb)
MLPERF_TARGETS: tuple[float, ...] = (0.99, 0.999)


def _bools(values: Any) -> list[bool]:
    """A list of bools from a sequence or a tensor (``tolist``: one call, not one per element)."""
    return [bool(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def mcnemar(ref_correct: Sequence[bool] | Any, new_correct: Sequence[bool] | Any) -> dict:
    """McNemar's test on paired per-sample correctness (sequences of bools, or bool tensors: an
    image or a predicted byte each) -> ``{"b", "c", "p_value", "method"}`` (two-sided)."""
    ref, new = _bools(ref_correct), _bools(new_correct)
    if len(ref) != len(new):
        raise ValueError(f"mcnemar: {len(ref)} reference and {len(new)} new samples")
    from scipy import stats

    b = sum(1 for r, n in zip(ref, new, strict=True) if r and not n)
    c = sum(1 for r, n in zip(ref, new, strict=True) if n and not r)
    if b + c == 0:
        return {"b": 0, "c": 0, "p_value": 1.0, "method": "exact"}
    if b + c < EXACT_BELOW:
        p = stats.binomtest(b, b + c, 0.5).pvalue
        method = "exact"
    else:
        statistic = (abs(b - c) - 1) ** 2 / (b + c)
        p = stats.chi2.sf(statistic, df=1)
        method = "chi2-continuity"
    return {"b": b, "c": c, "p_value": min(1.0, float(p)), "method": method}


def meets(accuracy: float, reference: float, fraction: float) -> bool:
    """Whether ``accuracy`` reaches ``fraction`` (e.g. 0.99, 0.999) of the reference accuracy."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"meets: fraction must be in (0, 1], got {fraction}")
    return accuracy >= fraction * reference - 1e-12
