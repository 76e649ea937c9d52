"""What ``reports`` raises for input it cannot use, and how a message stays on one line.

Every command answers unusable input with exit status 2 and one line on stderr,
``error: <file>: <problem>``; :func:`one_line` keeps text taken from the input (a name, a
reason, a path) from breaking that line.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class ReportError(Exception):
    """Unusable input; ``str(error)`` is one line: ``"<file>: <problem>"``."""


class ReportWarning(UserWarning):
    """Input that is usable with a caveat (for example a truncated last jsonl line)."""


def one_line(text: object) -> str:
    """``text`` with every run of line breaks and other control characters made one space."""
    return _CONTROL.sub(" ", str(text)).strip()
