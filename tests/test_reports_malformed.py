"""Every kind of malformed input, through every command: exit 2 and one line naming the file.

Each kind builds one bad input from a valid synthetic run (``reports.synthetic``) and says
what the error line must contain. Every command reads it: ``table``, ``compare`` (next to
a valid run), ``plot``, ``html``, and ``check`` with the bad input as BASE and as NEW. The
answer is exit status 2, nothing on stdout and exactly one line on stderr,
``error: <file>: <problem>``. docs/faults.md lists the same kinds. Inputs that are usable
with a caveat (a truncated last jsonl line, huge but finite numbers) are tested at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reports.files
from reports.cli import main
from reports.synthetic import (
    benchmark_json,
    jsonl_lines,
    machine_info,
    make_extra_info,
    write_benchmark_json,
    write_jsonl,
)
from tests.reports_fixtures import run_reports

Doc = dict[str, Any]


def results() -> list[dict[str, Any]]:
    return [
        make_extra_info("dense", "xs", "fp32"),
        make_extra_info("dense", "xs", "amp-bf16"),
        make_extra_info("dense", "xs", "zero3", status="timeout", reason="watchdog: 60 s"),
    ]


def json_text(mutate: Callable[[Doc], object] | None = None) -> str:
    doc = benchmark_json(results())
    if mutate is not None:
        mutate(doc)
    return json.dumps(doc)


def first(doc: Doc) -> Doc:
    return doc["benchmarks"][0]


def info(doc: Doc) -> Doc:
    return doc["benchmarks"][0]["extra_info"]


def failed(extra_info: Doc) -> Doc:
    return {**extra_info, "status": "error", "reason": "RuntimeError"}


def setter(*path: str | int, value: object) -> Callable[[Doc], None]:
    """Set ``doc[path...] = value`` (a missing last key is added)."""

    def mutate(doc: Doc) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


def deleter(*path: str | int) -> Callable[[Doc], None]:
    def mutate(doc: Doc) -> None:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return mutate


def literal(field: str, text: str) -> str:
    """A valid document with ``extra_info[field]`` of the first benchmark written as ``text``."""
    marker = "__LITERAL__"
    return json_text(setter("benchmarks", 0, "extra_info", field, value=marker)).replace(f'"{marker}"', text)


def jsonl_text(edit: Callable[[list[str]], list[str]] | None = None) -> str:
    lines = jsonl_lines(results())
    return "".join(line + "\n" for line in (edit(lines) if edit else lines))


def jsonl_line(number: int, mutate: Callable[[Doc], object]) -> Callable[[list[str]], list[str]]:
    """Mutate the JSON object of line ``number`` (1-based) of a jsonl file."""

    def edit(lines: list[str]) -> list[str]:
        record = json.loads(lines[number - 1])
        mutate(record)
        return lines[: number - 1] + [json.dumps(record)] + lines[number:]

    return edit


EI = ("benchmarks", 0, "extra_info")
ARCH = ("machine_info", "archbench")
E = "extra_info"

# name -> (suffix, content, what the error line says). Content is text, bytes, or a callable
# that builds the input in a directory and returns its path (files a text cannot say).
Builder = Callable[[Path], Path]
KINDS: dict[str, tuple[str, str | bytes | Builder, str]] = {
    # the text is not JSON
    "empty file": (".json", "", "empty, not JSON"),
    "whitespace only": (".json", " \n\t\n", "empty, not JSON"),
    "not UTF-8": (".json", b'{"machine_info": "\xff"}', "not UTF-8 text (byte 0xff at offset 18)"),
    "not JSON": (".json", "<html>502 Bad Gateway</html>", "not JSON (Expecting value at column 1)"),
    "truncated JSON": (".json", json_text()[:200], "not JSON (Unterminated string"),
    "nested too deeply": (".json", "[" * 100_000 + "]" * 100_000, "not JSON (nested too deeply)"),
    # JSON, but not a pytest-benchmark document
    "top level list": (".json", "[1, 2]", "top level: expected an object, got list of 2 items"),
    "top level number": (".json", "3", "top level: expected an object, got int 3"),
    "top level string": (".json", '"results"', "top level: expected an object, got str 'results'"),
    "top level null": (".json", "null", "top level: expected an object, got null"),
    "no benchmarks": (".json", json_text(deleter("benchmarks")), "missing field 'benchmarks'"),
    "no machine_info": (".json", json_text(deleter("machine_info")), "missing field 'machine_info'"),
    "benchmarks not a list": (".json", json_text(setter("benchmarks", value={})), "benchmarks: expected a list"),
    "benchmark not an object": (".json", json_text(setter("benchmarks", 0, value=7)), "benchmark: expected an object"),
    "benchmark without name": (".json", json_text(deleter("benchmarks", 0, "name")), "name: expected a string"),
    "benchmark without extra_info": (
        ".json",
        json_text(deleter("benchmarks", 0, "extra_info")),
        "benchmarks[0] (test_train[dense-xs-fp32]): missing field 'extra_info'",
    ),
    "benchmark without stats": (".json", json_text(deleter("benchmarks", 0, "stats")), "missing field 'stats'"),
    "stats null": (".json", json_text(setter("benchmarks", 0, "stats", value=None)), "stats: expected an object"),
    "stats field missing": (".json", json_text(deleter("benchmarks", 0, "stats", "median")), "stats: missing field"),
    "stats field mistyped": (
        ".json",
        json_text(setter("benchmarks", 0, "stats", "mean", value="0.1")),
        "stats.mean: expected a number >= 0, got str '0.1'",
    ),
    "stats data element": (
        ".json",
        json_text(setter("benchmarks", 0, "stats", "data", value=[0.1, "x"])),
        "stats.data[1]: expected a number >= 0",
    ),
    # extra_info fields of the wrong type
    "extra_info not an object": (".json", json_text(setter(*EI, value=[1])), "extra_info: expected an object"),
    "id missing": (".json", json_text(deleter(*EI, "id")), "extra_info: missing field 'id'"),
    "id mistyped": (".json", json_text(setter(*EI, "id", value=3)), "id: expected a non-empty string, got int 3"),
    "family mistyped": (".json", json_text(setter(*EI, "family", value=["dense"])), "family: expected a non-empty"),
    "family not a name": (".json", json_text(setter(*EI, "family", value="../x")), "family '../x': expected a name"),
    "status mistyped": (".json", json_text(setter(*EI, "status", value=None)), "status: expected a non-empty string"),
    "status unknown": (".json", json_text(setter(*EI, "status", value="crashed")), "status 'crashed' is not one of"),
    "phase unknown": (".json", json_text(setter(*EI, "phase", value="eval")), "phase 'eval' is not one of"),
    "world_size string": (".json", json_text(setter(*EI, "world_size", value="2")), "world_size: expected a positive"),
    "world_size zero": (".json", json_text(setter(*EI, "world_size", value=0)), "world_size: expected a positive"),
    "world_size bool": (".json", json_text(setter(*EI, "world_size", value=True)), "world_size: expected a positive"),
    "metric string": (
        ".json",
        json_text(setter(*EI, "samples_per_s", value="1.2k")),
        "samples_per_s: expected a number or null, got str '1.2k'",
    ),
    "metric bool": (".json", json_text(setter(*EI, "peak_mem_bytes", value=True)), "peak_mem_bytes: expected a number"),
    "metric list": (".json", json_text(setter(*EI, "accuracy", value=[0.9])), "accuracy: expected a number or null"),
    "absent a list": (".json", json_text(setter(*EI, "absent", value=["mfu"])), "absent: expected an object of"),
    "absent reason a number": (
        ".json",
        json_text(setter(*EI, "absent", value={"mfu": 3})),
        "absent: expected an object of metric -> reason",
    ),
    "reason mistyped": (".json", json_text(setter(*EI, "reason", value=3)), "reason: expected a string or null"),
    "step_times_s a string": (".json", json_text(setter(*EI, "step_times_s", value="0.1")), "step_times_s: expected"),
    "step_times_s element": (
        ".json",
        json_text(setter(*EI, "step_times_s", value=[0.1, None])),
        "step_times_s[1]: expected a number > 0, got null",
    ),
    "step time element zero": (
        ".json",
        json_text(setter(*EI, "step_times_s", value=[0.1, 0])),
        "step_times_s[1]: expected a number > 0, got int 0",
    ),
    "telemetry a list": (".json", json_text(setter(*EI, "telemetry", value=[1])), "telemetry: expected an object"),
    "telemetry series a string": (
        ".json",
        json_text(setter(*EI, "telemetry", "mem_bytes", value="1 GiB")),
        "telemetry.mem_bytes: expected a list of numbers or null",
    ),
    "telemetry element": (
        ".json",
        json_text(setter(*EI, "telemetry", "util_pct", value=[97.0, "high"])),
        "telemetry.util_pct[1]: expected a number >= 0 or null",
    ),
    # machine_info
    "machine_info a list": (".json", json_text(setter("machine_info", value=[])), "machine_info: expected an object"),
    "archbench a string": (".json", json_text(setter(*ARCH, value="cpu")), "machine_info.archbench: expected an"),
    "archbench label": (".json", json_text(setter(*ARCH, "label", value=5)), "machine_info.archbench.label: expected"),
    "archbench cores": (
        ".json",
        json_text(setter(*ARCH, "cpu_cores", value=-2)),
        "machine_info.archbench.cpu_cores: expected an integer >= 0 or null, got int -2",
    ),
    "archbench peak": (  # where files before archbench.session kept the peaks
        ".json",
        json_text(setter(*ARCH, "peak_tflops", value={"cpu:float32": "fast"})),
        "machine_info.archbench.peak_tflops.cpu:float32: expected a number or null",
    ),
    "session peak": (
        ".json",
        json_text(setter("archbench", "session", "peak_tflops", "cpu:float32", value="fast")),
        "archbench.session.peak_tflops.cpu:float32: expected a number or null",
    ),
    "session threads": (
        ".json",
        json_text(setter("archbench", "session", "torch_threads", value=1.5)),
        "archbench.session.torch_threads: expected an integer >= 0 or null",
    ),
    "session a list": (".json", json_text(setter("archbench", "session", value=[])), "archbench.session: expected an"),
    # timing uncertainty and contention
    "stable mistyped": (".json", json_text(setter(*EI, "stable", value="yes")), "stable: expected true, false or null"),
    "ci reversed": (
        ".json",
        json_text(setter(*EI, "step_time_ci_s", value=[0.2, 0.1])),
        "step_time_ci_s: expected [low, high] with low <= high",
    ),
    "ci one bound": (
        ".json",
        json_text(setter(*EI, "step_time_ci_s", value=[0.2])),
        "step_time_ci_s: expected [low, high] with low <= high",
    ),
    "ci negative": (
        ".json",
        json_text(setter(*EI, "step_time_ci_s", value=[-0.1, 0.2])),
        "step_time_ci_s[0]: expected a number >= 0",
    ),
    "ci_rel text": (".json", json_text(setter(*EI, "step_time_ci_rel", value="5%")), "step_time_ci_rel: expected a"),
    "contention a list": (".json", json_text(setter(*EI, "contention", value=[1])), "contention: expected an object"),
    "contended text": (
        ".json",
        json_text(setter(*EI, "contention", "contended", value="yes")),
        "contention.contended: expected true, false or null",
    ),
    "datetime mistyped": (".json", json_text(setter("datetime", value=20250115)), "datetime: expected a string"),
    # numbers JSON or a float cannot hold
    "NaN": (".json", literal("mfu", "NaN"), "benchmarks[0].extra_info.mfu: NaN is not a number"),
    "Infinity": (".json", literal("samples_per_s", "Infinity"), "extra_info.samples_per_s: Infinity is not a number"),
    "-Infinity": (".json", literal("accuracy_delta", "-Infinity"), "accuracy_delta: -Infinity is not a number"),
    "NaN in a stats list": (
        ".json",
        json_text(setter("benchmarks", 0, "stats", "data", value="__N__")).replace('"__N__"', "[0.1, NaN]"),
        "benchmarks[0].stats.data[1]: NaN is not a number",
    ),
    "float beyond range": (".json", literal("tflops", "1e400"), "extra_info.tflops: 1e400 is beyond a float's range"),
    "integer beyond range": (
        ".json",
        literal("params", str(10**400)),
        "extra_info.params: an integer of 401 digits is beyond a float's range",
    ),
    "negative step time": (".json", json_text(setter(*EI, "step_time_s", value=-0.01)), "step_time_s: expected a num"),
    "negative bytes": (
        ".json",
        json_text(setter(*EI, "peak_mem_bytes", value=-1)),
        "peak_mem_bytes: expected a number >= 0 or null, got int -1",
    ),
    # one run that contradicts itself
    "duplicate id": (
        ".json",
        json_text(lambda doc: doc["benchmarks"].append(doc["benchmarks"][0])),
        "duplicate benchmark id 'dense-xs-fp32'",
    ),
    "id does not match": (
        ".json",
        json_text(setter(*EI, "id", value="dense-xs-bf16")),
        "id 'dense-xs-bf16' does not match family, size, variant and phase 'dense-xs-fp32'",
    ),
    "id without phase suffix": (
        ".json",
        json_text(setter(*EI, "phase", value="infer")),
        "id 'dense-xs-fp32' does not match family, size, variant and phase 'dense-xs-fp32-infer'",
    ),
    "other schema version": (
        ".json",
        json_text(setter(*EI, "schema", value="archbench/2")),
        "schema 'archbench/2' is not supported (expected 'archbench/1')",
    ),
    # archbench.not_ok
    "not_ok block not an object": (".json", json_text(setter("archbench", value=[])), "archbench: expected an object"),
    "not_ok block schema": (
        ".json",
        json_text(setter("archbench", "schema", value="archbench/0")),
        "archbench: schema 'archbench/0' is not supported",
    ),
    "not_ok not a list": (".json", json_text(setter("archbench", "not_ok", value={})), "archbench.not_ok: expected"),
    "ok status under not_ok": (
        ".json",
        json_text(setter("archbench", "not_ok", 0, "extra_info", "status", value="ok")),
        "archbench.not_ok[0] (test_train[dense-xs-zero3]): status 'ok' under not_ok",
    ),
    "id in benchmarks and not_ok": (
        ".json",
        json_text(lambda doc: doc["archbench"]["not_ok"].append({"name": "again", "extra_info": failed(info(doc))})),
        "archbench.not_ok[1] (again): id 'dense-xs-fp32' is also in benchmarks",
    ),
    "not_ok entry mistyped": (
        ".json",
        json_text(setter("archbench", "not_ok", 0, "extra_info", "reason", value=["x"])),
        "archbench.not_ok[0] (test_train[dense-xs-zero3]): reason: expected a string or null",
    ),
    # streamed jsonl files
    "jsonl empty": (".jsonl", "", "empty, not a results file"),
    "jsonl bad line in the middle": (
        ".jsonl",
        jsonl_text(lambda lines: lines[:2] + [lines[2][:30]] + lines[3:]),
        "line 3: not JSON",
    ),
    "jsonl invalid UTF-8 in the middle": (
        ".jsonl",
        jsonl_text().encode().replace(b"amp-bf16", b"amp-bf\xe916", 1),
        "line 3: not UTF-8 text (byte 0xe9",
    ),
    "jsonl line not an object": (".jsonl", jsonl_text(lambda lines: lines[:2] + ["[1]"] + lines[2:]), "line 3: line:"),
    "jsonl unknown line type": (
        ".jsonl",
        jsonl_text(jsonl_line(2, setter("type", value="result"))),
        "line 2: type 'result' is neither 'machine' nor 'benchmark'",
    ),
    "jsonl second machine line": (
        ".jsonl",
        jsonl_text(lambda lines: lines[:2] + [lines[0]] + lines[2:]),
        "line 3: a second machine line",
    ),
    "jsonl benchmark before machine line": (
        ".jsonl",
        jsonl_text(lambda lines: lines[1:2] + lines[:1] + lines[2:]),
        "line 1: benchmark line before the machine line",
    ),
    "jsonl only a truncated line": (".jsonl", '{"type": "machine", "sch', "no machine line (not an archbench results"),
    "jsonl machine line without machine_info": (
        ".jsonl",
        jsonl_text(jsonl_line(1, deleter("machine_info"))),
        "line 1: missing field 'machine_info'",
    ),
    "jsonl mixed schema versions": (
        ".jsonl",
        jsonl_text(jsonl_line(3, setter(E, "schema", value="archbench/2"))),
        "line 3 (test_train[dense-xs-amp-bf16]): schema 'archbench/2' is not supported",
    ),
    "jsonl machine line of another schema": (
        ".jsonl",
        jsonl_text(jsonl_line(1, setter("schema", value="archbench/2"))),
        "line 1: schema 'archbench/2' is not supported",
    ),
    "jsonl duplicate id": (
        ".jsonl",
        jsonl_text(lambda lines: lines + lines[1:2]),
        "duplicate benchmark id 'dense-xs-fp32'",
    ),
    "jsonl NaN": (
        ".jsonl",
        jsonl_text(jsonl_line(2, setter(E, "mfu", value="__N__"))).replace('"__N__"', "NaN"),
        "line 2: extra_info.mfu: NaN is not a number",
    ),
}


# files a text cannot say: built in the test's directory


def fifo(directory: Path) -> Path:
    path = directory / "results.json"
    os.mkfifo(path)
    return path


def empty_directory(directory: Path) -> Path:
    path = directory / "results"
    path.mkdir()
    (path / "notes.txt").write_text("no results here")
    return path


BUILT: dict[str, tuple[Builder, str]] = {
    "FIFO": (fifo, "a FIFO, not a regular file"),
    "character device": (lambda _: Path(os.devnull), "a character device, not a regular file"),
    "directory without results": (empty_directory, "directory has no *.jsonl results files and no saved runs"),
    "missing file": (lambda d: d / "nowhere.json", "nowhere.json: no such file or directory"),
    "storage id that does not exist": (lambda _: Path("0042"), "0042: no such file, and no"),
}

COMMANDS: dict[str, Callable[[Path, Path, Path], list[str]]] = {
    "table": lambda bad, good, out: ["table", str(bad)],
    "compare": lambda bad, good, out: ["compare", str(good), str(bad)],
    "plot": lambda bad, good, out: ["plot", str(bad), "--output-dir", str(out / "plots")],
    "html": lambda bad, good, out: ["html", str(bad), "--output", str(out / "report.html")],
    "check as NEW": lambda bad, good, out: ["check", "--baseline", str(good), str(bad)],
    "check as BASE": lambda bad, good, out: ["check", "--baseline", str(bad), str(good)],
}


@contextlib.contextmanager
def no_hang(seconds: int = 20) -> Iterator[None]:
    """Fail instead of waiting forever (reading a FIFO without a writer would)."""

    def fail(*_: object) -> None:
        raise TimeoutError(f"the command did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run(argv: list[str], storage: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), no_hang():
        status = main([*argv, "--storage", str(storage)], stdout=out)
    return status, out.getvalue(), err.getvalue()


def assert_refused(argv: list[str], tmp_path: Path, bad: Path, problem: str) -> None:
    status, out, err = run(argv, tmp_path / ".benchmarks")
    assert status == 2, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert str(bad) in lines[0], err
    assert problem in lines[0], err


def good_run(tmp_path: Path) -> Path:
    return write_benchmark_json(tmp_path / "good.json", results())


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", KINDS)
def test_malformed_file_exits_2_with_one_line(tmp_path: Path, kind: str, command: str) -> None:
    suffix, content, problem = KINDS[kind]
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert_refused(COMMANDS[command](bad, good_run(tmp_path), tmp_path), tmp_path, bad, problem)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", BUILT)
def test_unusable_path_exits_2_with_one_line(tmp_path: Path, kind: str, command: str) -> None:
    build, problem = BUILT[kind]
    bad = build(tmp_path)
    assert_refused(COMMANDS[command](bad, good_run(tmp_path), tmp_path), tmp_path, bad, problem)


@pytest.mark.parametrize("command", COMMANDS)
def test_unreadable_file(tmp_path: Path, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """chmod 000 where permissions apply; as root (they do not), the OSError simulated."""
    bad = good_run(tmp_path).rename(tmp_path / "secret.json")
    if os.geteuid() == 0:
        real_open = os.open

        def refuse(path: Any, *args: Any, **kwargs: Any) -> int:
            if Path(path) == bad:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(reports.files.os, "open", refuse)
    else:
        bad.chmod(0)
    try:
        argv = COMMANDS[command](bad, good_run(tmp_path), tmp_path)
        assert_refused(argv, tmp_path, bad, "cannot read (Permission denied)")
    finally:
        bad.chmod(0o644)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 file: permissions do not apply")
def test_unreadable_file_by_permissions(tmp_path: Path) -> None:
    bad = good_run(tmp_path).rename(tmp_path / "secret.json")
    bad.chmod(0)
    try:
        assert_refused(["table", str(bad)], tmp_path, bad, "cannot read (Permission denied)")
    finally:
        bad.chmod(0o644)


def test_mixed_schema_versions_across_inputs(tmp_path: Path) -> None:
    good = good_run(tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json_text(setter(*EI, "schema", value="archbench/2")))
    for argv in (["table", str(good), str(other)], ["html", str(good), str(other), "-o", str(tmp_path / "r.html")]):
        assert_refused(argv, tmp_path, other, "schema 'archbench/2' is not supported")


def test_same_benchmark_in_two_inputs_of_one_machine(tmp_path: Path) -> None:
    first_run = good_run(tmp_path)
    second = write_benchmark_json(tmp_path / "second.json", results())
    assert_refused(["table", str(first_run), str(second)], tmp_path, second, "dense-xs-fp32 (world size 1, AMD EPYC")
    assert_refused(["table", str(first_run), str(second)], tmp_path, first_run, "give one run per machine")


def test_real_cli_prints_no_traceback(tmp_path: Path) -> None:
    """The same answers from ``python -m reports`` itself, in a subprocess."""
    bad = tmp_path / "bad.json"
    bad.write_text(literal("params", str(10**400)))
    pipe = fifo(tmp_path)
    for argv in (["table", str(bad)], ["check", "--baseline", str(good_run(tmp_path)), str(pipe)]):
        done = run_reports(*argv)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert len(done.stderr.splitlines()) == 1, done.stderr


# ---------------------------------------------------------------------------------------
# usable, with a caveat


def test_truncated_last_jsonl_line_is_kept_out_with_a_warning(tmp_path: Path) -> None:
    text = jsonl_text()
    path = tmp_path / "results-killed.jsonl"
    path.write_text(text + text.splitlines()[1][:40])  # killed mid-write: no newline
    status, out, err = run(["table", str(path)], tmp_path)
    assert status == 0, err
    assert err.splitlines() == [f"warning: {path}: line 5: truncated last line ignored"]
    assert "timeout [1]" in out and "- [1] watchdog: 60 s" in out


def test_truncated_multibyte_character_on_the_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results-killed.jsonl"
    cut = '{"type": "benchmark", "name": "d\u00e9'.encode()[:-1]  # half of a two-byte character
    path.write_bytes(jsonl_text().encode() + cut)
    status, _, err = run(["table", str(path)], tmp_path)
    assert status == 0, err
    assert err.splitlines() == [f"warning: {path}: line 5: truncated last line ignored"]


def test_no_warning_besides_the_error_line(tmp_path: Path) -> None:
    """A truncated last line warns, but an error in the same file is the one line printed."""
    path = tmp_path / "results-bad.jsonl"
    path.write_text(jsonl_text(jsonl_line(2, setter(E, "status", value="crashed"))) + '{"type": "bench')
    status, _, err = run(["table", str(path)], tmp_path)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"error: {path}: line 2")


def extreme_results() -> list[dict[str, Any]]:
    """Finite numbers at a float's ends: every metric huge, tiny or zero."""
    largest = 1.7976931348623157e308
    return [
        make_extra_info("dense", "xs", "fp32", **{k: 1e308 for k in METRIC_KEYS}, step_times_s=[1e300] * 5),
        make_extra_info("dense", "s", "fp32", **{k: 5e-324 for k in METRIC_KEYS}, step_times_s=[1e-300] * 5),
        make_extra_info("dense", "m", "fp32", **{k: 0 for k in METRIC_KEYS}),
        make_extra_info("dense", "xs", "amp-bf16", samples_per_s=largest, params=10**300, step_times_s=[1e-300]),
        make_extra_info("dense", "s", "amp-bf16", samples_per_s=1e-300, samples_per_step=2**62),
    ]


METRIC_KEYS = (
    "samples_per_s",
    "step_time_s",
    "tflops",
    "mfu",
    "accuracy",
    "accuracy_delta",
    "model_bytes",
    "params",
    "peak_mem_bytes",
    "model_state_bytes",
)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_huge_and_tiny_numbers_do_not_overflow(tmp_path: Path, suffix: str) -> None:
    writer = write_benchmark_json if suffix == ".json" else write_jsonl
    extreme = writer(tmp_path / f"extreme{suffix}", extreme_results())
    plain_results = [make_extra_info("dense", size, v) for size in ("xs", "s") for v in ("fp32", "amp-bf16")]
    plain = writer(tmp_path / f"plain{suffix}", plain_results)
    gpu = writer(tmp_path / f"gpu{suffix}", plain_results, machine_info("NVIDIA H100", "NVIDIA H100"))
    commands = [["table", str(extreme), "--format", fmt] for fmt in ("github", "latex", "html", "plain")]
    commands += [["compare", str(gpu), str(extreme)], ["compare", str(extreme), str(gpu)]]
    if suffix == ".json":  # the figures do not depend on the file format: drawn once (the slow part)
        commands += [
            ["plot", str(extreme), "--output-dir", str(tmp_path / "plots")],
            ["html", str(extreme), str(gpu), "--output", str(tmp_path / "report.html")],
        ]
    for argv in commands:
        status, _, err = run(argv, tmp_path)
        assert status == 0, (argv, err)
        assert all(line.startswith(("warning: ", "wrote ")) for line in err.splitlines()), err
        assert "RuntimeWarning" not in err, err  # no overflow, even one numpy would only warn about
    for argv in (["--baseline", str(plain), str(extreme)], ["--baseline", str(extreme), str(plain)]):
        status, _, err = run(["check", *argv], tmp_path)
        assert status in (0, 1), (argv, err)
