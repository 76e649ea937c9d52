"""Progress of a long run: one plain line per case as it starts and as it ends.

::

    archbench [ 3/21] start dense-xs-amp-fp16 (train); 1m05s elapsed
    archbench [ 3/21] ok dense-xs-amp-fp16 (train) in 24.4s; 1m29s elapsed, about 4m30s left
    archbench [ 4/21] skipped dense-s-fp32 (train) in 0.0s: estimated at least 403s of compute ...

Plain lines (no carriage-return animation), so a terminal and a CI log read the same. The time
left is the estimate of the cases still to run (``bench.plan``), scaled by how the cases done
so far compared with their own estimates; without estimates, the mean time of the cases done
times the cases left. Off with ``-q -q`` or ``--no-progress``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

import pytest

from .plan import duration
from .settings import CaseSpec

MAX_REASON = 100
SCALE_LIMITS = (0.2, 5.0)  # how far the cases done may rescale the estimates of the rest


def _short(text: str, width: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


class Progress:
    """Writes the lines through ``write`` (the terminal reporter's ``write_line``)."""

    def __init__(
        self,
        write: Callable[[str], None],
        cases: Sequence[tuple[str, CaseSpec]],
        estimates: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.write = write
        self.order = {nodeid: (i, spec) for i, (nodeid, spec) in enumerate(cases, start=1)}
        self.estimates = dict(estimates or {})  # case id -> estimated seconds
        self.clock = clock
        self.begun = clock()
        self.started: dict[str, float] = {}
        self.done: list[tuple[str, float]] = []  # (case id, seconds)

    def _head(self, nodeid: str) -> tuple[str, CaseSpec] | None:
        found = self.order.get(nodeid)
        if found is None:
            return None
        i, spec = found
        width = len(str(len(self.order)))
        return f"archbench [{i:>{width}}/{len(self.order)}]", spec

    def start(self, nodeid: str) -> None:
        head = self._head(nodeid)
        if head is None:
            return
        self.started[nodeid] = self.clock()
        prefix, spec = head
        self.write(f"{prefix} start {spec.id} ({spec.phase}); {duration(self.clock() - self.begun)} elapsed")

    def end(self, nodeid: str, status: str | None, reason: str | None = None) -> None:
        head = self._head(nodeid)
        if head is None or nodeid not in self.started:
            return
        prefix, spec = head
        took = self.clock() - self.started.pop(nodeid)
        self.done.append((spec.id, took))
        why = f": {_short(reason)}" if reason and status != "ok" else ""
        left = self.time_left()
        tail = f", about {duration(left)} left" if left is not None else ""
        self.write(
            f"{prefix} {status or 'unknown'} {spec.id} ({spec.phase}) in {took:.1f}s{why};"
            f" {duration(self.clock() - self.begun)} elapsed{tail}"
        )

    def time_left(self) -> float | None:
        """Seconds the cases not done yet should take, from the cases done; None at the end."""
        done_ids = {case_id for case_id, _ in self.done}
        rest = [spec.id for _, spec in self.order.values() if spec.id not in done_ids]
        if not rest:
            return None
        spent = sum(seconds for _, seconds in self.done)
        if self.estimates and all(case_id in self.estimates for case_id in rest):
            expected = sum(self.estimates.get(case_id, 0.0) for case_id, _ in self.done)
            scale = spent / expected if expected > 0 else 1.0
            scale = min(max(scale, SCALE_LIMITS[0]), SCALE_LIMITS[1])
            return scale * sum(self.estimates[case_id] for case_id in rest)
        return spent / len(self.done) * len(rest) if self.done else None


class ProgressLines:
    """The pytest plugin that writes them: the start line before pytest's own line for the test,
    the end line after its outcome; the outcome is the case's status in ``results`` (node id ->
    extra_info, filled as cases end)."""

    def __init__(self, progress: Progress, results: Mapping[str, Mapping]):
        self.progress = progress
        self.results = results

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self.progress.start(nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        info = self.results.get(nodeid) or {}
        self.progress.end(nodeid, info.get("status"), info.get("reason"))
