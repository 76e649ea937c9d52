"""Property-based: mutated results files get exit 0 or 2 from every command, never a traceback.

Documents start valid (``reports.synthetic``: a pytest-benchmark JSON file with
``archbench.not_ok``, or a streamed jsonl file) and are mutated: keys dropped, values
replaced by values of other types (null, strings, lists, objects, booleans, NaN, infinity,
integers beyond a float's range, negative and huge numbers), list entries (benchmarks,
lines) duplicated or dropped, the text cut at any point, invalid UTF-8 put in. Every
command runs in process (``reports.cli.main``) on each document: ``table`` in every format,
``compare``, ``check`` with the document as NEW and as BASE; ``plot`` and ``html`` in a
test of their own with fewer examples (rendering PNGs is the slow part). Exit 0 means the document was still
usable, 2 that it was not: then stderr is one line, ``error: <file>: ...``. ``check`` may
also answer 1 (a mutated number can be a regression). The generation is derandomized, so
CI sees the same documents every run.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports.cli import main
from reports.synthetic import benchmark_json, jsonl_lines, make_extra_info
from reports.table import FORMATS

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BUG = "a bug in reports"


def base_results() -> list[dict[str, Any]]:
    """Few results, every status and phase: small documents, one figure per plot."""
    return [
        make_extra_info("dense", "xs", "fp32"),
        make_extra_info("dense", "s", "fp32"),
        make_extra_info("dense", "xs", "amp-bf16", mfu=None, absent={"mfu": "no probe"}),
        make_extra_info("dense", "xs", "int8"),
        make_extra_info("dense", "xs", "zero3", status="timeout", reason="watchdog: 60 s in warm-up"),
        make_extra_info("dense", "s", "amp-fp16", status="oom", reason="out of memory"),
    ]


def base_json() -> dict[str, Any]:
    return benchmark_json(base_results())


def base_jsonl() -> list[Any]:
    return [json.loads(line) for line in jsonl_lines(base_results())]


# ---------------------------------------------------------------------------------------
# mutations

OTHER_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(["", "ok", "NaN", "dense-xs-fp32", "archbench/2", "a\nb", "x|y", "$x^{", "../x", "é"]),
    st.text(max_size=6),
    st.sampled_from([[], [1], ["a"], [None], {}, {"a": 1}, {"t": [1, None]}]),
    st.sampled_from([math.nan, math.inf, -math.inf, 10**400, -(10**400), 1e308, -1e308, 5e-324, 2**63]),
    st.sampled_from([-1, -0.5, 0, 0.0, 1, 3, 1e-300]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)


Slot = tuple[Any, Any]  # (container, key or index)


def slots(value: Any) -> list[Slot]:
    """Every (container, key) of a JSON tree, containers before what they hold."""
    found: list[Slot] = []
    stack = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in items:
            found.append((node, key))
            stack.append(item)
    return found


def mutate(data: st.DataObject, doc: Any) -> None:
    """One structural change of ``doc`` in place."""
    found = slots(doc)
    if not found:
        return
    container, key = data.draw(st.sampled_from(found), label="slot")
    action = data.draw(st.sampled_from(["replace", "replace", "drop", "duplicate"]), label="action")
    if action == "replace":  # a copy: a later "duplicate" must not grow the strategy's own sample
        container[key] = copy.deepcopy(data.draw(OTHER_VALUES, label="value"))
    elif action == "drop":
        del container[key]
    elif isinstance(container, list):
        container.insert(key, copy.deepcopy(container[key]))
    elif isinstance(container[key], list) and container[key]:
        container[key].append(copy.deepcopy(container[key][0]))


def damage(data: st.DataObject, text: bytes) -> bytes:
    """Optionally cut the text short or put bytes that are not UTF-8 in it."""
    action = data.draw(st.sampled_from(["none", "none", "none", "truncate", "invalid-utf8"]), label="damage")
    if action == "truncate":
        return text[: data.draw(st.integers(0, len(text)), label="cut")]
    if action == "invalid-utf8":
        at = data.draw(st.integers(0, len(text)), label="at")
        return text[:at] + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"])) + text[at:]
    return text


def serialize(doc: Any, jsonl: bool) -> bytes:
    if jsonl and isinstance(doc, list):
        return "".join(json.dumps(line) + "\n" for line in doc).encode()
    return json.dumps(doc).encode()


@st.composite
def documents(draw: Callable[..., Any], jsonl: bool) -> bytes:
    data = draw(st.data())
    doc = base_jsonl() if jsonl else base_json()
    for _ in range(draw(st.integers(1, 3), label="mutations")):
        mutate(data, doc)
    return damage(data, serialize(doc, jsonl))


# ---------------------------------------------------------------------------------------
# running the commands


@dataclass
class Outcome:
    argv: list[str]
    status: int
    stderr: str


def run(argv: list[str]) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv, stdout=out)
    return Outcome(argv, status, err.getvalue())


def assert_answered(outcome: Outcome, path: Path, allowed: tuple[int, ...] = (0, 2)) -> None:
    """Exit 0 (or 1 for check) with warnings only, or 2 with one error line naming the file."""
    assert outcome.status in allowed, outcome
    assert "Traceback" not in outcome.stderr and BUG not in outcome.stderr, outcome
    lines = outcome.stderr.splitlines()
    if outcome.status == 2:
        assert len(lines) == 1, outcome
        assert lines[0].startswith("error: "), outcome
        assert str(path) in lines[0], outcome
    else:
        assert all(line.startswith(("warning: ", "wrote ")) for line in lines), outcome


def write_inputs(tmp: Path, text: bytes, jsonl: bool) -> tuple[Path, Path]:
    """The mutated document and the valid one it came from."""
    suffix = ".jsonl" if jsonl else ".json"
    good = tmp / f"good{suffix}"
    good.write_bytes(serialize(base_jsonl() if jsonl else base_json(), jsonl))
    bad = tmp / f"mutated{suffix}"
    bad.write_bytes(text)
    return bad, good


def check_tables_compare_check(text: bytes, jsonl: bool) -> None:
    with tempfile.TemporaryDirectory() as name:
        bad, good = write_inputs(Path(name), text, jsonl)
        outcomes = [run(["table", str(bad), "--format", fmt]) for fmt in FORMATS]
        for outcome in outcomes:
            assert_answered(outcome, bad)
        assert len({(o.status, o.stderr) for o in outcomes}) == 1, outcomes  # one verdict for all formats
        assert_answered(run(["compare", str(good), str(bad)]), bad)
        for argv in (["--baseline", str(good), str(bad)], ["--baseline", str(bad), str(good)]):
            assert_answered(run(["check", *argv]), bad, allowed=(0, 1, 2))


def check_plot_html(text: bytes, jsonl: bool) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        bad, _ = write_inputs(tmp, text, jsonl)
        table = run(["table", str(bad)])
        plot = run(["plot", str(bad), "--output-dir", str(tmp / "plots")])
        report = run(["html", str(bad), "--output", str(tmp / "report.html")])
        for outcome in (plot, report):
            assert_answered(outcome, bad)
            assert outcome.status == table.status, (outcome, table)
        if plot.status == 0:
            assert list((tmp / "plots").glob("*.png"))
            assert (tmp / "report.html").read_text().startswith("<!DOCTYPE html>")


@SETTINGS
@given(documents(jsonl=False))
def test_mutated_json_tables_compare_check(text: bytes) -> None:
    check_tables_compare_check(text, jsonl=False)


@SETTINGS
@given(documents(jsonl=True))
def test_mutated_jsonl_tables_compare_check(text: bytes) -> None:
    check_tables_compare_check(text, jsonl=True)


# Each usable document costs two rendered figures (a second or more each on 2 cores): fewer
# examples, both formats in one test. Loading, the part malformed input reaches, is the tables'
# above (150 examples each).
@settings(SETTINGS, max_examples=8)
@given(st.booleans().flatmap(lambda jsonl: st.tuples(documents(jsonl=jsonl), st.just(jsonl))))
def test_mutated_documents_plot_html(document: tuple[bytes, bool]) -> None:
    check_plot_html(*document)
