"""``archbench``: the command an installed archbench gives.

::

    archbench run [pytest and pytest-benchmark options ...]
    archbench report table|compare|check|plot|html ...
    archbench set-up [DEVICE]

``run`` is ``pytest --benchmark-only`` on the installed ``bench`` package, from any directory:
the package's directory is given to pytest as a path (``pytest --pyargs bench`` would find the
same files, but pytest reads a conftest's options only from a conftest it loads before parsing
the command line, so ``--tier`` and the rest would be refused). The package's parent is the
rootdir (node ids read ``bench/test_train.py::test_train[...]`` as in a checkout), no ini file
of the working directory applies (``-c /dev/null``), and nothing is cached in the installed
package (``-p no:cacheprovider``); relative paths (``--benchmark-json``, ``--results-dir``)
are the working directory's. ``--benchmark-only`` is left out beside ``--benchmark-disable``
or ``--benchmark-skip``, which pytest-benchmark refuses with it.

``report`` is ``python -m reports`` (``reports.cli``): it never imports torch.

``set-up`` does once what the variants need on this machine before their first case (each
variant's ``set_up``: DeepSpeed's CPU comm op, built with ninja in minutes); a session does it
too, before its first case of the variant, outside the watchdog.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

USAGE = """usage: archbench run [pytest options]      the benchmarks (pytest --benchmark-only on the installed bench)
       archbench report COMMAND ...        tables, comparison, regression check, plots, HTML (python -m reports)
       archbench set-up [DEVICE]           what the variants need built once on this machine (default cpu)

archbench run --help                     every option (group "archbench")
archbench run --plan                     the cases that would run, with estimates; nothing runs
archbench report --help                  the report commands
"""
NOT_WITH_ONLY = ("--benchmark-disable", "--benchmark-skip")


def pytest_args(argv: Sequence[str]) -> list[str]:
    """The pytest command line of ``archbench run ARGV``."""
    import bench

    package = Path(bench.__file__).resolve().parent
    args = [str(package), "--rootdir", str(package.parent), "-c", os.devnull, "-p", "no:cacheprovider"]
    if not any(arg.split("=")[0] in NOT_WITH_ONLY for arg in argv):
        args.append("--benchmark-only")
    return args + list(argv)


def run(argv: Sequence[str]) -> int:
    import pytest

    return int(pytest.main(pytest_args(argv)))


def report(argv: Sequence[str]) -> int:
    from reports.cli import main as reports_main

    return reports_main(list(argv))


def set_up(argv: Sequence[str]) -> int:
    from workloads.registry import parse_device, variant_factory, variant_names

    device = parse_device(argv[0] if argv else "cpu")
    failed = 0
    for name in variant_names():
        try:
            variant_factory(name)().set_up(device, print)
        except Exception as e:  # noqa: BLE001 (say which variant, go on with the others)
            print(f"archbench set-up: {name}: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else ("", [])
    if command == "run":
        return run(rest)
    if command == "report":
        return report(rest)
    if command == "set-up":
        return set_up(rest)
    if command in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    print(USAGE, end="", file=sys.stderr)
    if command:
        print(f"archbench: unknown command {command!r}; use run, report or set-up", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
