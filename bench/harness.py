"""One benchmark as pytest sees it: a request to the executor (a supervised worker process, or
this process under a launcher), its Outcome handed to pytest-benchmark and streamed, and the
test's own verdict: passed (``ok``), skipped (``skipped``) or failed (``timeout``, ``oom``,
``error``, so the session exits non-zero).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from reports.schema import FAILED_STATUSES, REFERENCE_VARIANT
from workloads.base import Unsupported
from workloads.registry import parse_device, variant_factory

from .distributed import Ranks
from .history import run_settings
from .machine import machine_facts, session_facts
from .pipeline import CaseRequest, Outcome, Refused, not_run_info
from .preflight import preflight
from .results import ResultsStream, clean
from .settings import CaseSpec, Settings
from .telemetry.contention import wait_for_quiet


class Session:
    """State shared by the benchmarks of one pytest session."""

    def __init__(
        self,
        settings: Settings,
        executor,
        ranks: Ranks | None = None,
        faults: dict[str, str] | None = None,
        matrix: list[CaseSpec] | None = None,
    ):
        self.settings = settings
        self.matrix = matrix or []
        self.executor = executor
        self.ranks = ranks or Ranks()  # world size 1 or spawned per case: collectives are no-ops here
        self.faults = faults or {}
        self.stream: ResultsStream | None = None
        self.machine_info_base: dict[str, Any] | None = None  # pytest-benchmark's, for the stream's header
        self.peaks: dict[str, float] = {}
        self.probe_s = 0.0  # seconds spent in peak probes (not counted in the cases' wall_s)
        self.moved_facts: dict[str, Any] = {}  # per-session entries taken out of pytest-benchmark's machine_info
        self.fp32_accuracy: dict[tuple[str, str, str, int], float] = {}
        self.infer_rates: dict[tuple[str, str, str, int, int], float] = {}  # (variant, family, size, ws, batch)
        self.grouped: dict[str, Outcome] = {}  # --interleave: outcomes of the cases their group ran
        self.results: list[dict] = []  # every case's extra_info, in the order they ran
        self.by_nodeid: dict[str, dict] = {}  # the same, by pytest node id (progress lines)
        self.not_ok: list[dict] = []  # pytest-benchmark JSON entries of the cases that did not end ok
        self.set_up_done: dict[str, str | None] = {}  # variant -> why its one-time set-up failed (None: done)
        self.say: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True)

    def machine_info(self) -> dict:
        """Facts of the machine (pytest-benchmark's ``machine_info["archbench"]``)."""
        return machine_facts(self.settings.device)

    def session_facts(self) -> dict:
        """What this session measured and the settings that decide its cases' wall times
        (the JSON's ``archbench.session``, the streamed machine line's ``session``)."""
        return {**session_facts(self.peaks), **self.moved_facts, "settings": run_settings(self.settings)}

    def probe(self, device: str, dtype: str) -> float:
        """The executor's peak probe, timed (``wall_s`` of a case leaves it out)."""
        start = time.monotonic()
        try:
            return self.executor.probe(device, dtype)
        finally:
            self.probe_s += time.monotonic() - start

    def request(self, spec: CaseSpec, benchmark, peak: float | None) -> CaseRequest:
        return CaseRequest(
            settings=self.settings,
            family=spec.family,
            size=spec.size,
            variant=spec.variant,
            phase=spec.phase,
            factory=variant_factory(spec.variant),
            peak=peak,
            fault=self.faults.get(spec.id),
            timer=benchmark._timer,  # noqa: SLF001 (pytest-benchmark's --benchmark-timer)
            disable_gc=benchmark._disable_gc,  # noqa: SLF001
            run_once=benchmark.disabled,
            session_root=os.getpid(),
        )

    def prepare(self, spec: CaseSpec, benchmark) -> CaseRequest | Outcome:
        """The preflight here: the case's request, or its Outcome when it will not run."""
        s = self.settings
        failed = self.set_up_variant(spec.variant)
        if failed is not None:
            return Outcome("error", not_run_info(spec, s.device, s.world_size, "error", failed, "set-up"))
        try:
            peak = preflight(spec, s, self.ranks, self.peaks, self.probe)
        except Refused as e:
            return Outcome("skipped", not_run_info(spec, s.device, s.world_size, "skipped", str(e), "preflight"))
        except RuntimeError as e:  # the peak probe failed
            return Outcome("error", not_run_info(spec, s.device, s.world_size, "error", str(e), "preflight"))
        return self.request(spec, benchmark, peak)

    def set_up_variant(self, name: str) -> str | None:
        """The variant's one-time set-up (``Variant.set_up``), before its first case starts and
        outside every watchdog; why it failed, or None."""
        if name not in self.set_up_done:
            self.set_up_done[name] = None
            try:
                device = parse_device(self.settings.device)
            except Unsupported:
                return None  # nothing runs there: the preflight skips the cases with the reason
            try:
                variant_factory(name)().set_up(device, self.say)
            except Exception as e:  # noqa: BLE001 (any failure is the variant's cases' reason)
                self.set_up_done[name] = f"{name}: one-time set-up failed: {e}"
        return self.set_up_done[name]

    def run(self, spec: CaseSpec, benchmark) -> Outcome:
        """The case where the executor runs it (with --interleave: its group's, side by side)."""
        if self.settings.interleave:
            return self.run_in_group(spec, benchmark)
        prepared = self.prepare(spec, benchmark)
        if isinstance(prepared, Outcome):
            return prepared
        quiet = self.wait_quiet()
        outcome = self.executor.run(prepared)
        if quiet is not None:
            outcome.info["quiet_wait"] = quiet
        return outcome

    def run_in_group(self, spec: CaseSpec, benchmark) -> Outcome:
        """The first case of a family, size and phase runs the whole group in turns; the
        others take their Outcome from it."""
        if spec.id not in self.grouped:
            group = [c for c in self.matrix if (c.family, c.size, c.phase) == (spec.family, spec.size, spec.phase)]
            prepared = {c.id: self.prepare(c, benchmark) for c in group}
            requests = [p for p in prepared.values() if isinstance(p, CaseRequest)]
            quiet = self.wait_quiet()
            done = self.executor.run_group(requests) if requests else {}
            for case_id, p in prepared.items():
                self.grouped[case_id] = p if isinstance(p, Outcome) else done[case_id]
                if quiet is not None:
                    self.grouped[case_id].info["quiet_wait"] = quiet
        return self.grouped.pop(spec.id)

    def wait_quiet(self) -> dict | None:
        s = self.settings
        return wait_for_quiet(s.wait_quiet_s, os.getpid()) if s.wait_quiet_s else None

    def with_reference(self, info: dict) -> dict:
        """``accuracy_reference``/``accuracy_delta`` against fp32 of the same case and phase
        (a compressed variant brings its own: the trained reference's, on the same samples)."""
        if info.get("status") != "ok" or info.get("accuracy") is None:
            return info
        key = (info["family"], info["size"], info["phase"], info["world_size"])
        if info["variant"] == REFERENCE_VARIANT:
            self.fp32_accuracy[key] = info["accuracy"]
        if "accuracy_reference" in info:
            return info
        ref = self.fp32_accuracy.get(key)
        if ref is None:
            why = f"no {REFERENCE_VARIANT} accuracy for {info['family']}-{info['size']} in this session"
            info["absent"].update({"accuracy_reference": why, "accuracy_delta": why})
            return info | {"accuracy_reference": None, "accuracy_delta": None}
        return info | {"accuracy_reference": ref, "accuracy_delta": info["accuracy"] - ref}

    def with_speedup(self, info: dict) -> dict:
        """An inference result's ``speedup`` over fp32 inference of the same case in this session,
        and, for a variant that compiles, ``speedup_vs_compiled`` over compiled fp32 inference."""
        if info.get("status") != "ok" or info.get("phase") != "infer":
            return info
        case = (info["family"], info["size"], info["world_size"], info["batch_size"])
        self.infer_rates[(info["variant"], *case)] = info["samples_per_s"]
        out = dict(info)
        for key, base, applies in (("speedup", "fp32", True), ("speedup_vs_compiled", "compile", info.get("compiled"))):
            rate = self.infer_rates.get((base, *case))
            out[key] = info["samples_per_s"] / rate if applies and rate else None
            if out[key] is None:
                why = f"no {base} inference of this case in the session" if applies else "the variant does not compile"
                out["absent"] = {**out.get("absent", {}), key: why}
        return out

    def record(self, item: pytest.Item, info: dict, stats: dict | None) -> None:
        self.results.append(info)
        self.by_nodeid[item.nodeid] = info
        group = f"{info['family']}-{info['size']}"
        if info["status"] != "ok":
            self.not_ok.append({"name": item.name, "fullname": item.nodeid, "group": group, "extra_info": info})
        if not self.ranks.is_main or self.settings.results_dir is None:
            return
        if self.stream is None:  # opened by the first result: --help and --collect-only write nothing
            machine_info = dict(self.machine_info_base or {})
            machine_info["archbench"] = self.machine_info()
            self.stream = ResultsStream(self.settings.results_dir, machine_info, self.session_facts())
        self.stream.benchmark(item.name, item.nodeid, group, info, stats)

    def close(self) -> None:
        self.executor.close()
        if self.stream is not None:
            self.stream.close()


def record_stats(benchmark, step_times: list[float]) -> dict:
    """The worker's step times as pytest-benchmark's stats of this benchmark: the same Metadata
    ``benchmark.pedantic`` makes (one iteration a round), fed the same durations."""
    stats = benchmark._make_stats(1)  # noqa: SLF001 (pedantic's own constructor; no public one)
    for duration in step_times:
        stats.update(duration)
    return stats.stats.as_dict()


def run_benchmark(item: pytest.Item, benchmark, session: Session, spec: CaseSpec) -> dict:
    """Run one case; record it; pass, skip or fail the test by its status. Returns extra_info."""
    benchmark.group = f"{spec.family}-{spec.size}"
    benchmark._mode = "benchmark.pedantic(...)"  # noqa: SLF001 (timed in the worker, as pedantic would)
    start, probes = time.monotonic(), session.probe_s
    outcome = session.run(spec, benchmark)
    session.peaks.update(outcome.peaks)
    info = clean(session.with_speedup(session.with_reference(outcome.info)))  # no NaN or infinity in JSON
    info["wall_s"] = time.monotonic() - start - (session.probe_s - probes)  # --interleave: the group's, on its first
    stats = None
    if outcome.status == "ok":
        benchmark.extra_info.update(info)
        if not benchmark.disabled:
            stats = record_stats(benchmark, outcome.step_times)
    session.record(item, info, stats)
    if outcome.status == "skipped":
        pytest.skip(outcome.reason)
    if outcome.status in FAILED_STATUSES:
        pytest.fail(f"{outcome.status}: {outcome.reason}", pytrace=False)
    return info
