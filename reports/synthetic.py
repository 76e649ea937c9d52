"""Synthetic archbench results shaped like the bench's, for tests and ``bench_render``.

``make_extra_info`` builds one benchmark's ``extra_info`` per ``docs/schema.md`` with
plausible, self-consistent numbers (any key can be overridden), including the timing
uncertainty the bench reports (``step_time_ci_s``, ``step_time_ci_rel``, ``stable``,
``stable_threshold``, ``timing_stop``) and ``contention``: pass ``unstable=True`` or
``contended=True`` for a result that is not to be trusted. ``write_benchmark_json`` and
``write_jsonl`` write them the way pytest-benchmark (plus the bench's ``archbench`` block:
``not_ok`` for cases that did not end ok, ``session`` for the per-session measurements) and
``--results-dir`` do. No figure here is a measurement.
"""

from __future__ import annotations

import itertools
import json
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reports.schema import SCHEMA, case_id

PARAMS = {"xs": 100_000, "s": 1_000_000, "m": 10_000_000, "l": 100_000_000, "xl": 1_000_000_000}
SPEEDUP = {
    "fp32": 1.0,
    "amp-bf16": 1.6,
    "amp-fp16": 1.7,
    "zero1": 0.9,
    "zero2": 0.85,
    "zero3": 0.7,
    "int8": 2.2,
}
FAMILY_FLOPS = {
    "dense": 6.0,
    "cnn": 40.0,
    "transformer": 12.0,
}  # training FLOPs per parameter per sample
VARIANTS = (
    "fp32",
    "amp-bf16",
    "amp-fp16",
    "zero1",
    "zero2",
    "zero3",
    "zero3-offload",
    "int8",
    "prune",
    "lowrank",
    "distill",
)


STABLE_THRESHOLD = 0.05
# the interval of the median step around it: [median * (1 - low), median * (1 + high)]
CI_LOW, CI_HIGH = 0.02, 0.03
UNSTABLE_CI = 0.12


def session_facts(gpu_name: str | None = None) -> dict[str, Any]:
    """What the bench measures once per session (``archbench.session``): the matmul peaks."""
    peaks = {"cpu:float32": 0.18} if gpu_name is None else {"cuda:bfloat16": 700.0}
    return {"peak_tflops": peaks, "torch_threads": 2}


def machine_info(label: str = "AMD EPYC 7B13", gpu_name: str | None = None, cores: int = 2) -> dict[str, Any]:
    """pytest-benchmark's machine_info with the ``archbench`` block the bench adds (machine
    facts only: what varies from session to session is in ``session_facts``)."""
    return {
        "node": "bench-host",
        "processor": "x86_64",
        "machine": "x86_64",
        "python_implementation": "CPython",
        "python_version": "3.11.7",
        "release": "6.1.0",
        "system": "Linux",
        "cpu": {"arch": "X86_64", "bits": 64, "count": cores, "brand_raw": "AMD EPYC 7B13"},
        "archbench": {
            "torch": "2.5.1",
            "cuda": "12.4" if gpu_name else None,
            "deepspeed": None,
            "cpu_model": "AMD EPYC 7B13",
            "cpu_cores": cores,
            "gpu_name": gpu_name,
            "gpu_count": 1 if gpu_name else 0,
            "driver": "550.54" if gpu_name else None,
            "device": "cuda:0" if gpu_name else "cpu",
            "label": label,
        },
    }


# The accuracy task's own fields: digits (dense, cnn) or text (transformer).
TASK_FIELDS: dict[str, dict[str, Any]] = {
    "digits": {"accuracy_metric": "top1", "accuracy_task": "digits", "bits_per_byte": None},
    "text": {
        "accuracy_metric": "next_byte_top1",
        "accuracy_task": "text",
        "bits_per_byte": 2.5,
        "accuracy_corpus": "cpython-3.11-stdlib",
        "accuracy_corpus_sha256": "0b3ca29b26d5e0b0de5d14c81b519cf0f94ea62e00900dc89619039f7411835b",
    },
}


def make_extra_info(
    family: str = "dense",
    size: str = "xs",
    variant: str = "fp32",
    *,
    status: str = "ok",
    reason: str | None = None,
    world_size: int = 1,
    phase: str | None = None,
    unstable: bool = False,
    contended: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """One benchmark's extra_info; ``overrides`` replace any key after the defaults. The phase
    defaults to ``infer`` for int8, else ``train``. The step-time interval follows the final
    ``step_time_s`` (±2-3%, or ±12% and ``stable`` false with ``unstable``); ``contended``
    puts 1.1 foreign cores into ``contention``."""
    if phase is None:
        phase = "infer" if variant.startswith("int8") else "train"
    info: dict[str, Any] = {
        "schema": SCHEMA,
        "id": case_id(family, size, variant, phase),
        "family": family,
        "size": size,
        "variant": variant,
        "phase": phase,
        "device": "cpu",
        "dtype": "bfloat16" if "bf16" in variant else "float16" if "fp16" in variant else "float32",
        "world_size": world_size,
        "batch_size": 32,
        "seq_len": 128 if family == "transformer" else None,
        "status": status,
        "reason": reason,
    }
    params = PARAMS.get(size, 1_000_000)
    if status != "ok":
        info.update({"params": params, "absent": {}, "telemetry": {}})
        info.update(overrides)
        return with_timing_trust(info, unstable, contended, overrides)
    info.update(measured_fields(family, variant, params, world_size))
    info.update(overrides)
    return with_timing_trust(info, unstable, contended, overrides)


def measured_fields(family: str, variant: str, params: int, world_size: int) -> dict[str, Any]:
    """The fields of a result that ran: plausible, self-consistent numbers."""
    samples_per_step = 32 * world_size
    flops_per_step = FAMILY_FLOPS.get(family, 6.0) * params * samples_per_step
    step_time_s = flops_per_step / 0.05e12 / SPEEDUP.get(variant.split("+")[0], 1.0)
    step_times_s = [step_time_s * factor for factor in (1.0, 0.98, 1.03, 1.01, 0.99)]
    samples_per_s = samples_per_step / step_time_s
    tflops = flops_per_step / step_time_s / 1e12
    accuracy = 0.97 - 0.01 * ("int8" in variant or "prune" in variant)
    fields: dict[str, Any] = {
        "params": params,
        "samples_per_step": samples_per_step,
        "flops_per_step": flops_per_step,
        "step_time_s": statistics.median(step_times_s),
        "step_times_s": step_times_s,
        "samples_per_s": samples_per_s,
        "tokens_per_s": samples_per_s * 128 if family == "transformer" else None,
        "tflops": tflops,
        "peak_tflops": 0.18,
        "mfu": tflops / 0.18,
        "peak_mem_bytes": 300 * 2**20 + 20 * params,
        "mem_source": "rss-tree",
        "model_state_bytes": 16 * params // world_size,
        "model_state_bytes_predicted": 16 * params // world_size,
        "power_w": None,
        "energy_j_per_sample": None,
        "samples_per_j": None,
        "energy_source": "none",
        "energy_reason": "RAPL not readable",
        "accuracy": accuracy,
        **TASK_FIELDS["text" if family == "transformer" else "digits"],
        "accuracy_reference": 0.97,
        "accuracy_delta": accuracy - 0.97,
        "model_bytes": 4 * params,
        "telemetry": {
            "t": [0.0, 0.1, 0.2, 0.3, 0.4],
            "mem_bytes": [2**28, 2**28 + 2**24, 2**28 + 2**25, 2**28 + 2**25, 2**28 + 2**24],
            "power_w": None,
            "util_pct": [97.0, 99.0, 98.0, 99.5, 96.0],
        },
    }
    absent = {
        "power_w": "RAPL not readable",
        "energy_j_per_sample": "RAPL not readable",
        "samples_per_j": "RAPL not readable",
    }
    if family != "transformer":
        absent["tokens_per_s"] = "not a sequence model"
        absent["bits_per_byte"] = "the digits task is classification: bits per byte is for text"
    fields["absent"] = absent
    return fields


def contention(contended: bool = False) -> dict[str, Any]:
    """A CPU result's ``contention``: other work on the machine while it was timed."""
    return {
        "foreign_cores": 1.1 if contended else 0.02,
        "steal_pct": 0.0,
        "foreign_gpu_processes": None,
        "contended": contended,
        "threshold_cores": 0.25,
        "threshold_steal_pct": 5.0,
    }


def with_timing_trust(
    info: dict[str, Any], unstable: bool, contended: bool, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """The interval of the median step around the final ``step_time_s``, ``stable`` and
    ``contention``, each unless given in ``overrides``."""
    median = info.get("step_time_s")
    low, high = (UNSTABLE_CI, UNSTABLE_CI) if unstable else (CI_LOW, CI_HIGH)
    trust: dict[str, Any] = {
        "step_time_ci_s": None if median is None else [median * (1 - low), median * (1 + high)],
        "step_time_ci_rel": None if median is None else (low + high) / 2,
        "stable": None if median is None else (low + high) / 2 <= STABLE_THRESHOLD,
        "stable_threshold": STABLE_THRESHOLD,
        "timing_stop": None if median is None else "budget",
        "contention": contention(contended),
    }
    for key, value in trust.items():
        if key not in overrides and info["status"] == "ok":
            info[key] = value
    return info


def make_stats(step_times_s: list[float]) -> dict[str, Any]:
    """pytest-benchmark's stats block for rounds of one iteration each."""
    data = sorted(step_times_s)
    quartiles = statistics.quantiles(data, n=4) if len(data) > 1 else [data[0]] * 3
    mean = statistics.mean(data)
    return {
        "min": data[0],
        "max": data[-1],
        "mean": mean,
        "stddev": statistics.stdev(data) if len(data) > 1 else 0.0,
        "rounds": len(data),
        "median": statistics.median(data),
        "iqr": quartiles[2] - quartiles[0],
        "q1": quartiles[0],
        "q3": quartiles[2],
        "iqr_outliers": 0,
        "stddev_outliers": 0,
        "outliers": "0;0",
        "ld15iqr": data[0],
        "hd15iqr": data[-1],
        "ops": 1 / mean,
        "total": sum(data),
        "data": list(step_times_s),
        "iterations": 1,
    }


def benchmark_entry(extra_info: Mapping[str, Any]) -> dict[str, Any]:
    """One pytest-benchmark record; stats from ``step_times_s``, None if it did not run."""
    step_times = extra_info.get("step_times_s")
    case = str(extra_info["id"])
    return {
        "group": str(extra_info.get("family")),
        "name": f"test_train[{case}]",
        "fullname": f"bench/test_train.py::test_train[{case}]",
        "params": {"case": case},
        "param": case,
        "extra_info": dict(extra_info),
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": 5,
            "max_time": 1.0,
            "min_time": 5e-06,
            "warmup": True,
        },
        "stats": make_stats(step_times) if step_times else None,
    }


def not_ok_entry(extra_info: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of ``archbench.not_ok``: a benchmark record without stats."""
    entry = benchmark_entry(extra_info)
    return {key: entry[key] for key in ("name", "fullname", "group", "extra_info")}


def benchmark_json(
    extra_infos: Iterable[Mapping[str, Any]],
    machine: Mapping[str, Any] | None = None,
    session: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``--benchmark-json`` document the way the bench writes it: results that ran in
    pytest-benchmark's ``benchmarks`` (with stats), the others under ``archbench.not_ok``
    (pytest-benchmark's own loader needs stats in every entry of ``benchmarks``), the
    per-session measurements under ``archbench.session``."""
    infos = list(extra_infos)
    machine = dict(machine or machine_info())
    return {
        "machine_info": machine,
        "commit_info": {
            "id": "unversioned",
            "time": None,
            "dirty": False,
            "project": "archbench",
            "branch": "main",
        },
        "benchmarks": [benchmark_entry(info) for info in infos if info.get("status") == "ok"],
        "datetime": "2025-01-15T10:00:00.000000+00:00",
        "version": "5.2.3",
        "archbench": {
            "schema": SCHEMA,
            "not_ok": [not_ok_entry(info) for info in infos if info.get("status") != "ok"],
            "session": dict(session or session_facts(machine.get("archbench", {}).get("gpu_name"))),
        },
    }


def write_benchmark_json(
    path: str | Path,
    extra_infos: Iterable[Mapping[str, Any]],
    machine: Mapping[str, Any] | None = None,
    session: Mapping[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.write_text(json.dumps(benchmark_json(extra_infos, machine, session), indent=2), encoding="utf-8")
    return path


def jsonl_lines(
    extra_infos: Iterable[Mapping[str, Any]],
    machine: Mapping[str, Any] | None = None,
    session: Mapping[str, Any] | None = None,
    when: str = "2025-01-15T10:00:00",
) -> list[str]:
    """The lines of a streamed ``results-<session>.jsonl`` file, without newlines."""
    machine = dict(machine or machine_info())
    head = {
        "type": "machine",
        "schema": SCHEMA,
        "machine_info": machine,
        "session": dict(session or session_facts(machine.get("archbench", {}).get("gpu_name"))),
        "datetime": when,
    }
    lines = [json.dumps(head)]
    for info in extra_infos:
        entry = benchmark_entry(info)
        lines.append(
            json.dumps(
                {
                    "type": "benchmark",
                    **{k: entry[k] for k in ("name", "fullname", "group", "extra_info", "stats")},
                }
            )
        )
    return lines


def write_jsonl(
    path: str | Path,
    extra_infos: Iterable[Mapping[str, Any]],
    machine: Mapping[str, Any] | None = None,
    session: Mapping[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.write_text("".join(line + "\n" for line in jsonl_lines(extra_infos, machine, session)), encoding="utf-8")
    return path


def synthetic_results(count: int = 500) -> list[dict[str, Any]]:
    """``count`` distinct results over families, sizes, variants and world sizes."""
    compositions = [f"{zero}+{amp}" for zero in ("zero1", "zero2", "zero3") for amp in ("bf16", "fp16")]
    variants = list(VARIANTS) + compositions
    cases = itertools.product((1, 2, 4), ("cnn", "dense", "transformer"), PARAMS, variants)
    results = []
    for i, (world_size, family, size, variant) in enumerate(itertools.islice(cases, count)):
        if i % 23 == 7:
            results.append(
                make_extra_info(
                    family,
                    size,
                    variant,
                    status="oom",
                    reason="out of memory",
                    world_size=world_size,
                )
            )
        elif i % 29 == 3:
            results.append(
                make_extra_info(
                    family,
                    size,
                    variant,
                    status="skipped",
                    reason="needs CUDA",
                    world_size=world_size,
                )
            )
        else:
            results.append(make_extra_info(family, size, variant, world_size=world_size))
    return results
