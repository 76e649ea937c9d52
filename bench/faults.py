"""``--inject-fault ID=KIND[,ID=KIND...]``: make chosen cases fail on purpose, to test that a
session survives them. The fault fires in the case's first timed step, inside its worker:

- ``raise``: the step raises an exception (the case ends ``error`` with it);
- ``hang``: the step never returns (the watchdog kills the case: ``timeout``);
- ``oom``: the step asks the allocator for more memory than the device has, which it refuses
  (``oom``, with the size asked for);
- ``exit``: the worker process dies abruptly mid-step (``os._exit``: ``error`` with its exit code).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

FAULT_KINDS: tuple[str, ...] = ("raise", "hang", "oom", "exit")
EXIT_CODE = 86  # what an injected ``exit`` fault exits with
# more than any machine's address space: the allocator refuses it whatever the overcommit policy
OOM_BYTES = 1 << 50


class InjectedFault(RuntimeError):
    """The exception an injected ``raise`` fault raises."""


def parse_faults(text: str | None, known_ids: list[str] | None = None) -> dict[str, str]:
    """``"dense-xs-fp32=raise,cnn-xs-fp32=hang"`` -> ``{id: kind}``; ValueError naming what is wrong.
    With ``known_ids``, an id that names no case of the run is refused too."""
    if not text:
        return {}
    faults: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        case, sep, kind = item.partition("=")
        if not sep or not case or not kind:
            raise ValueError(f"--inject-fault {item!r}: expected ID=KIND, e.g. dense-xs-fp32=raise")
        if kind not in FAULT_KINDS:
            raise ValueError(f"--inject-fault {item!r}: unknown kind {kind!r}; allowed: {', '.join(FAULT_KINDS)}")
        if known_ids is not None and case not in known_ids:
            raise ValueError(f"--inject-fault {item!r}: {case} is not a case of this run")
        faults[case] = kind
    return faults


def fire(kind: str, device) -> None:
    """Do the fault now."""
    if kind == "raise":
        raise InjectedFault("injected fault: the step raised")
    if kind == "hang":
        while True:  # a step that never returns
            time.sleep(3600)
    if kind == "oom":
        import torch

        torch.empty(OOM_BYTES, dtype=torch.uint8, device=device)
        raise AssertionError(f"the allocator granted {OOM_BYTES} bytes on {device}")
    if kind == "exit":
        os._exit(EXIT_CODE)
    raise ValueError(f"unknown fault kind {kind!r}")


def with_fault(step: Callable[[], None], kind: str | None, device) -> Callable[[], None]:
    """``step``, with the fault firing on its first call (unchanged when ``kind`` is None)."""
    if kind is None:
        return step

    def faulty() -> None:
        fire(kind, device)
        step()

    return faulty
