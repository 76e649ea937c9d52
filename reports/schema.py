"""The vocabulary of archbench results, declared once: schema version, statuses, phases,
family and size names, the display order of variants and the benchmark id format.

Torch-free on purpose: ``workloads`` and ``bench`` import it to name what they build, and
``reports`` imports it to read what they wrote. The variant *registry* lives in
``workloads.registry``; ``VARIANT_ORDER`` here is only the order tables show variants in
(a test ties the two).
"""

from __future__ import annotations

SCHEMA = "archbench/1"

# How a case ended. ``ok``: measured. ``skipped``: refused before running, with the reason.
# ``timeout``: killed by the watchdog, with the stage it was in. ``oom``: the allocator
# refused, or the worker was killed under memory pressure. ``error``: raised, or the worker died.
STATUSES: tuple[str, ...] = ("ok", "skipped", "timeout", "oom", "error")
FAILED_STATUSES: tuple[str, ...] = ("timeout", "oom", "error")  # the session fails on these

PHASES: tuple[str, ...] = ("train", "infer")
FAMILY_ORDER: tuple[str, ...] = ("dense", "cnn", "transformer")
SIZE_ORDER: tuple[str, ...] = ("xs", "s", "m", "l", "xl")
# The order tables list variants in; a composition (``zero2+bf16``) follows its first part.
VARIANT_ORDER: tuple[str, ...] = (
    "fp32",
    "amp-bf16",
    "amp-fp16",
    "compile",
    "zero1",
    "zero2",
    "zero3",
    "zero3-offload",
    "fsdp2",
    "fsdp2-grad-op",
    "pipeline",
    "pipeline-gpipe",
    "tp",
    "int8",
    "int8-wo",
    "prune",
    "prune-unstructured",
    "lowrank",
    "distill",
)
REFERENCE_VARIANT = "fp32"

# A benchmark id: ``{family}-{size}-{variant}`` for training, ``{family}-{size}-{variant}-infer``
# for inference. Family and size names hold no '-'; no variant name ends in the phase suffix.
INFER_SUFFIX = "-infer"


def case_id(family: str, size: str, variant: str, phase: str = "train") -> str:
    """The benchmark id of a case (also ``extra_info["id"]`` and pytest's parameter id)."""
    if phase not in PHASES:
        raise ValueError(f"phase: unknown {phase!r}; allowed: {', '.join(PHASES)}")
    base = f"{family}-{size}-{variant}"
    return base + INFER_SUFFIX if phase == "infer" else base


def parse_case_id(text: str) -> tuple[str, str, str, str]:
    """``(family, size, variant, phase)`` of a benchmark id; ValueError naming the format."""
    parts = text.split("-", 2)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"case id {text!r}: expected family-size-variant[{INFER_SUFFIX}], e.g. dense-xs-fp32")
    family, size, rest = parts
    if rest.endswith(INFER_SUFFIX) and len(rest) > len(INFER_SUFFIX):
        return family, size, rest[: -len(INFER_SUFFIX)], "infer"
    return family, size, rest, "train"


def size_rank(size: str) -> tuple[int, str]:
    """Sort key for sizes: xs, s, m, l, xl, then unknown sizes by name."""
    return (SIZE_ORDER.index(size) if size in SIZE_ORDER else len(SIZE_ORDER), size)


def phase_rank(phase: str) -> tuple[int, str]:
    """Sort key for phases: train, infer, then unknown ones by name."""
    return (PHASES.index(phase) if phase in PHASES else len(PHASES), phase)


def variant_rank(variant: str) -> tuple[int, int, str]:
    """Sort key for variants: fp32 first, ``VARIANT_ORDER``, a composition after its first part."""
    first = variant.split("+", 1)[0]
    rank = VARIANT_ORDER.index(first) if first in VARIANT_ORDER else len(VARIANT_ORDER)
    return (rank, int("+" in variant), variant)
