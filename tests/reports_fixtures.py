"""Helpers for the reports tests: hand-built inputs and a parser for rendered tables."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from reports.synthetic import make_extra_info

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def session_results() -> list[dict[str, Any]]:
    """One CPU session: dense and transformer, xs and s, with every kind of missing cell.

    Values the tests assert on are set explicitly here, so each expected string in the
    tests can be read off this list.
    """
    return [
        make_extra_info(
            "dense",
            "xs",
            "fp32",
            samples_per_s=1000.0,
            step_time_s=0.032,
            tflops=0.05,
            mfu=0.25,
            peak_mem_bytes=512 * MIB,
            model_state_bytes=1_600_000,
            accuracy=0.97,
            model_bytes=400_000,
            params=100_000,
        ),
        make_extra_info(
            "dense",
            "xs",
            "amp-bf16",
            samples_per_s=1234.0,
            step_time_s=0.026,
            tflops=0.0617,
            mfu=None,
            peak_mem_bytes=256 * MIB,
            model_state_bytes=1_600_000,
            accuracy=0.968,
            absent={"mfu": "no peak probe for bfloat16", "tokens_per_s": "not a sequence model"},
        ),
        make_extra_info("dense", "xs", "amp-fp16", status="oom", reason="CUDA out of memory | tried 2 GiB"),
        make_extra_info("dense", "xs", "zero1", samples_per_s=520.0, accuracy=0.97),
        make_extra_info("dense", "xs", "zero3", status="skipped", reason="needs DeepSpeed"),
        make_extra_info("dense", "xs", "int8", samples_per_s=5000.0, accuracy=0.955),
        make_extra_info("dense", "s", "fp32", samples_per_s=400.0, accuracy=0.98),
        make_extra_info("dense", "s", "amp-bf16", samples_per_s=600.0, accuracy=0.975),
        make_extra_info("transformer", "xs", "fp32", samples_per_s=200.0, tokens_per_s=25600.0),
        make_extra_info("transformer", "xs", "amp-bf16", samples_per_s=300.0, tokens_per_s=38400.0),
        make_extra_info("cnn", "m", "fp32", status="error", reason="RuntimeError: shape mismatch"),
    ]


def parse_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Rows of each ``## Title`` github/pipe table as {header: cell} dicts."""
    tables: dict[str, list[dict[str, str]]] = {}
    title = ""
    headers: list[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            title, headers = line[3:], []
            tables[title] = []
        elif line.startswith("|") and not re.match(r"^\|[-:| ]+\|$", line):
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line[1:-1])]
            if not headers:
                headers = cells
            else:
                tables[title].append(dict(zip(headers, cells, strict=True)))
    return tables


def parse_notes(text: str) -> dict[str, dict[str, str]]:
    """Numbered notes under each ``## Title`` table: {title: {"[1]": reason}}."""
    notes: dict[str, dict[str, str]] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:]
            notes[title] = {}
        elif re.match(r"^- \[\d+\] ", line):
            number, _, reason = line[2:].partition(" ")
            notes[title][number] = reason
    return notes


def cited(cell: str, notes: dict[str, str]) -> tuple[str, str]:
    """``(status, reason)`` of a cell such as ``skipped [1]`` and the note it cites."""
    status, _, number = cell.partition(" ")
    return status, notes[number]


def find_row(rows: list[dict[str, str]], **key: str) -> dict[str, str]:
    matches = [row for row in rows if all(row.get(k) == v for k, v in key.items())]
    assert len(matches) == 1, f"{len(matches)} rows match {key}"
    return matches[0]


def run_reports(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m reports ARGS`` in a subprocess, with this checkout importable."""
    return subprocess.run(
        [sys.executable, "-m", "reports", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=python_env(),
        timeout=120,
    )


def python_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env
