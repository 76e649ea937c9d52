"""Synthetic archbench results shaped like the bench's, for tests and ``bench_render``.

``make_extra_info`` builds one benchmark's ``extra_info`` per ``docs/schema.md`` with
plausible, self-consistent numbers (any key can be overridden); ``write_benchmark_json``
and ``write_jsonl`` write them the way pytest-benchmark (plus the bench's
``archbench.not_ok`` for cases that did not end ok) and ``--results-dir`` do.
No figure here is a measurement.
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


def machine_info(label: str = "AMD EPYC 7B13", gpu_name: str | None = None, cores: int = 2) -> dict[str, Any]:
    """pytest-benchmark's machine_info with the ``archbench`` block the bench adds."""
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
            "peak_tflops": {"cpu:float32": 0.18} if gpu_name is None else {"cuda:bfloat16": 700.0},
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
    **overrides: Any,
) -> dict[str, Any]:
    """One benchmark's extra_info; ``overrides`` replace any key after the defaults. The phase
    defaults to ``infer`` for int8, else ``train``."""
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
        return info
    samples_per_step = 32 * world_size
    flops_per_step = FAMILY_FLOPS.get(family, 6.0) * params * samples_per_step
    step_time_s = flops_per_step / 0.05e12 / SPEEDUP.get(variant.split("+")[0], 1.0)
    step_times_s = [step_time_s * factor for factor in (1.0, 0.98, 1.03, 1.01, 0.99)]
    samples_per_s = samples_per_step / step_time_s
    tflops = flops_per_step / step_time_s / 1e12
    accuracy = 0.97 - 0.01 * ("int8" in variant or "prune" in variant)
    info.update(
        {
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
                "t": [0.0, 0.1],
                "mem_bytes": [2**28, 2**28],
                "power_w": None,
                "util_pct": [97.0, 99.0],
            },
        }
    )
    absent = {
        "power_w": "RAPL not readable",
        "energy_j_per_sample": "RAPL not readable",
        "samples_per_j": "RAPL not readable",
    }
    if family != "transformer":
        absent["tokens_per_s"] = "not a sequence model"
        absent["bits_per_byte"] = "the digits task is classification: bits per byte is for text"
    info["absent"] = absent
    info.update(overrides)
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
    extra_infos: Iterable[Mapping[str, Any]], machine: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A ``--benchmark-json`` document the way the bench writes it: results that ran in
    pytest-benchmark's ``benchmarks`` (with stats), the others under ``archbench.not_ok``
    (pytest-benchmark's own loader needs stats in every entry of ``benchmarks``)."""
    infos = list(extra_infos)
    return {
        "machine_info": dict(machine or machine_info()),
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
        },
    }


def write_benchmark_json(
    path: str | Path,
    extra_infos: Iterable[Mapping[str, Any]],
    machine: Mapping[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.write_text(json.dumps(benchmark_json(extra_infos, machine), indent=2), encoding="utf-8")
    return path


def jsonl_lines(extra_infos: Iterable[Mapping[str, Any]], machine: Mapping[str, Any] | None = None) -> list[str]:
    """The lines of a streamed ``results-<session>.jsonl`` file, without newlines."""
    head = {
        "type": "machine",
        "schema": SCHEMA,
        "machine_info": dict(machine or machine_info()),
        "datetime": "2025-01-15T10:00:00",
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
) -> Path:
    path = Path(path)
    path.write_text("".join(line + "\n" for line in jsonl_lines(extra_infos, machine)), encoding="utf-8")
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
