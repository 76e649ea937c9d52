"""Input files as text and strict JSON, or one :class:`ReportError` line saying why not.

- ``path_kind(path)``: ``"file"``, ``"directory"``, ``None`` (no such path) or what else
  it is (``"a FIFO"``, ``"a character device"``, ...); other ``OSError`` s are ReportErrors.
- ``read_bytes(path)``: a regular file's bytes. A FIFO, device or socket is refused before
  it is read (reading a FIFO would wait for a writer forever).
- ``NotJson`` (a ReportError): the text is not JSON at all, or not UTF-8; a truncated last
  line of a jsonl file raises it, a NaN does not.
- ``decode(data, where)``: UTF-8 text (a leading byte-order mark is dropped); the error
  names the offset of the first byte that is not UTF-8.
- ``parse_json(text, where)``: JSON as RFC 8259 has it: Python's ``json`` also accepts
  ``NaN`` and ``Infinity``, and turns ``1e400`` into infinity; here those, and integers
  beyond a float's range, are refused naming the field that holds them.
"""

from __future__ import annotations

import codecs
import errno
import json
import math
import os
import stat
import sys
from pathlib import Path
from typing import Any

from reports.errors import ReportError


class NotJson(ReportError):
    """The bytes are not JSON text at all: not UTF-8, cut short, another format."""


_FLOAT_MAX = int(sys.float_info.max)
_MAX_INT_DIGITS = len(str(_FLOAT_MAX)) + 1  # longer literals are out of range (sign included)
_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _cannot(path: Path, action: str, error: OSError) -> ReportError:
    return ReportError(f"{path}: cannot {action} ({error.strerror or error})")


def path_kind(path: Path) -> str | None:
    """What ``path`` is (following links), or None when there is nothing there."""
    try:
        return _kind(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        raise _cannot(path, "read", error) from None
    except ValueError:  # an embedded NUL byte
        raise ReportError(f"{path!r}: not a usable path") from None


def _refuse(path: Path, kind: str) -> ReportError:
    if kind == "directory":
        return ReportError(f"{path}: is a directory")
    return ReportError(f"{path}: {kind}, not a regular file: give a results file")


def read_bytes(path: Path) -> bytes:
    """A regular file's contents."""
    kind = path_kind(path)
    if kind is None:
        raise ReportError(f"{path}: no such file")
    if kind != "file":
        raise _refuse(path, kind)
    try:  # O_NONBLOCK: should a FIFO replace the file after the check, opening it does not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        if error.errno == errno.ENOENT:
            raise ReportError(f"{path}: no such file") from None
        raise _cannot(path, "read", error) from None
    with os.fdopen(fd, "rb") as file:
        kind = _kind(os.fstat(file.fileno()).st_mode)
        if kind != "file":
            raise _refuse(path, kind)
        try:
            return file.read()
        except OSError as error:
            raise _cannot(path, "read", error) from None


def decode(data: bytes, where: str) -> str:
    """UTF-8 text of ``data``."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise NotJson(f"{where}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start})") from None


class _OutOfRange:
    """Stands in for a number a float cannot hold while the document is parsed."""

    def __init__(self, literal: str) -> None:
        self.literal = literal

    def describe(self) -> str:
        if self.literal in ("NaN", "Infinity", "-Infinity"):
            return f"{self.literal} is not a number (JSON has no NaN or Infinity)"
        digits = self.literal.lstrip("-")
        if digits.isdigit() and len(digits) > 20:
            return f"an integer of {len(digits)} digits is beyond a float's range"
        return f"{self.literal[:40]} is beyond a float's range"


def _field_of(document: object, marker: object) -> str:
    """The path of ``marker`` in ``document``, as ``benchmarks[0].extra_info.mfu``."""
    stack: list[tuple[object, str]] = [(document, "")]
    while stack:
        value, path = stack.pop()
        if value is marker:
            return path or "top level"
        if isinstance(value, dict):
            stack.extend((item, f"{path}.{key}" if path else str(key)) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(value))
    return "a value"


def parse_json(text: str, where: str) -> Any:
    """The JSON value of ``text``; ReportError for anything RFC 8259 or a float would not hold."""
    if not text.strip():
        raise NotJson(f"{where}: empty, not JSON")
    out_of_range: list[_OutOfRange] = []

    def mark(literal: str) -> _OutOfRange:
        out_of_range.append(_OutOfRange(literal))
        return out_of_range[-1]

    def parse_float(literal: str) -> float | _OutOfRange:
        value = float(literal)
        return value if math.isfinite(value) else mark(literal)

    def parse_int(literal: str) -> int | _OutOfRange:
        if len(literal) > _MAX_INT_DIGITS:
            return mark(literal)
        value = int(literal)
        return value if abs(value) <= _FLOAT_MAX else mark(literal)

    try:
        value = json.loads(text, parse_constant=mark, parse_float=parse_float, parse_int=parse_int)
    except json.JSONDecodeError as error:
        at = f"line {error.lineno} column {error.colno}" if "\n" in text.rstrip() else f"column {error.colno}"
        joint = " " if error.msg.endswith(" at") else " at "  # "Unterminated string starting at"
        raise NotJson(f"{where}: not JSON ({error.msg}{joint}{at})") from None
    except RecursionError:
        raise NotJson(f"{where}: not JSON (nested too deeply)") from None
    if out_of_range:
        first = out_of_range[0]
        raise ReportError(f"{where}: {_field_of(value, first)}: {first.describe()}")
    return value
