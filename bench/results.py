"""Streams every finished benchmark to ``--results-dir`` as one JSON line, flushed at once,
so a failed or killed run keeps every result measured before it."""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path
from typing import Any

from reports.metrics import SCHEMA


def clean(value: Any) -> Any:
    """JSON has no NaN or infinity: such a value is not a measurement, so it becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


class ResultsStream:
    """``results-<stamp>-<pid>.jsonl``: the machine line (pytest-benchmark's ``machine_info``
    and, apart from it, the ``session``'s own measurements), then a line per benchmark."""

    def __init__(self, directory: str | os.PathLike, machine_info: dict, session: dict | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
        self.path = self.dir / f"results-{stamp}-{os.getpid()}.jsonl"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (lives for the session)
        self._write(
            {
                "type": "machine",
                "schema": SCHEMA,
                "machine_info": machine_info,
                **({"session": session} if session is not None else {}),
                "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            }
        )

    def _write(self, record: dict) -> None:
        self._file.write(json.dumps(clean(record), default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def benchmark(self, name: str, fullname: str, group: str | None, extra_info: dict, stats: dict | None):
        self._write(
            {
                "type": "benchmark",
                "name": name,
                "fullname": fullname,
                "group": group,
                "extra_info": extra_info,
                "stats": stats,
            }
        )

    def close(self) -> None:
        self._file.close()
