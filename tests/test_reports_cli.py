"""``python -m reports`` end to end, in subprocesses: outputs, exit codes, error lines."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from reports.bench_render import measure
from reports.load import load_json
from reports.synthetic import machine_info, make_extra_info, write_benchmark_json, write_jsonl
from tests.reports_fixtures import find_row, parse_tables, python_env, run_reports, session_results


@pytest.fixture
def results_json(tmp_path: Path) -> Path:
    return write_benchmark_json(tmp_path / "cpu.json", session_results())


def test_table_command(results_json: Path, tmp_path: Path) -> None:
    done = run_reports("table", str(results_json))
    assert done.returncode == 0, done.stderr
    rows = parse_tables(done.stdout)["Throughput"]
    row = find_row(rows, family="dense", size="xs", phase="train", metric="samples/s")
    assert row["amp-bf16"] == "1.23k (1.23x ±6%)"
    out = tmp_path / "tables.tex"
    done = run_reports("table", str(results_json), "--format", "latex", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "\\begin{tabular}" in out.read_text()


def test_table_from_results_directory_with_truncated_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "results-1.jsonl", session_results())
    with path.open("a") as file:
        file.write('{"type": "benchmark", "name": "cut')
    done = run_reports("table", str(tmp_path), "--format", "plain")
    assert done.returncode == 0, done.stderr
    assert "skipped [" in done.stdout and "] needs DeepSpeed" in done.stdout  # jsonl carries results that did not run
    assert done.stderr.strip() == f"warning: {path}: line 13: truncated last line ignored"


def test_compare_command(results_json: Path, tmp_path: Path) -> None:
    gpu = [make_extra_info("dense", "xs", "fp32", samples_per_s=3000.0)]
    h100 = machine_info("NVIDIA H100", gpu_name="NVIDIA H100")
    gpu_json = write_benchmark_json(tmp_path / "h100.json", gpu, h100)
    done = run_reports("compare", str(results_json), str(gpu_json))
    assert done.returncode == 0, done.stderr
    rows = parse_tables(done.stdout)["Hardware comparison: samples/s"]
    assert find_row(rows, benchmark="dense-xs-fp32")["NVIDIA H100"] == "3k (3.00x ±6%)"
    assert find_row(rows, benchmark="dense geomean")["NVIDIA H100"] == "3.00x ±6% (n=1)"


def test_storage_id_from_the_working_directory(tmp_path: Path) -> None:
    machine_dir = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    machine_dir.mkdir(parents=True)
    write_benchmark_json(machine_dir / "0001_abc123_20250115_100000.json", session_results())
    done = run_reports("table", "0001", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1.23k (1.23x ±6%)" in done.stdout


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (input path, what the error line must say)."""
    good = write_benchmark_json(tmp_path / "good.json", [make_extra_info()])
    doc = json.loads(good.read_text())

    def variant(name: str, mutate: object) -> Path:
        data = json.loads(json.dumps(doc))
        extra_info = data["benchmarks"][0]["extra_info"]
        assert callable(mutate)
        mutate(extra_info)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        return path

    not_json = tmp_path / "not-json.json"
    not_json.write_text("<html>502 Bad Gateway</html>")
    empty_dir = tmp_path / "empty-results"
    empty_dir.mkdir()
    return {
        "not json": (not_json, "not JSON"),
        "wrong schema": (
            variant("schema", lambda e: e.update(schema="archbench/0")),
            "schema 'archbench/0' is not supported",
        ),
        "missing field": (
            variant("missing", lambda e: e.pop("status")),
            "missing field 'status'",
        ),
        "mistyped field": (
            variant("mistyped", lambda e: e.update(samples_per_s="1.2k")),
            "samples_per_s: expected a number or null, got str",
        ),
        "directory": (empty_dir, "directory has no *.jsonl results files"),
        "missing file": (tmp_path / "nowhere.json", "no such file"),
    }


@pytest.mark.parametrize(
    "case",
    ["not json", "wrong schema", "missing field", "mistyped field", "directory", "missing file"],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    path, problem = _bad_inputs(tmp_path)[case]
    done = run_reports("table", str(path))
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {path}")
    assert problem in lines[0]
    assert "Traceback" not in done.stderr


def test_check_is_lazy_and_says_when_it_is_missing(results_json: Path) -> None:
    if importlib.util.find_spec("reports.check") is not None:
        pytest.skip("reports.check exists; its own tests cover it")
    done = run_reports("check", "--baseline", str(results_json), str(results_json))
    assert done.returncode == 2
    assert done.stderr.strip() == "error: check is not available: reports/check.py is not installed"
    help_text = run_reports("--help").stdout
    assert "check" in help_text


def test_reports_never_imports_torch(results_json: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from reports.cli import main
        assert main(["table", {str(results_json)!r}]) == 0
        assert main(["compare", {str(results_json)!r}, {str(results_json)!r}]) == 0
        assert "matplotlib" not in sys.modules, "tables must not import matplotlib"
        assert main(["html", {str(results_json)!r}, "-o", {str(tmp_path / "r.html")!r}]) == 0
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_valid_json_stays_readable_by_pytest_benchmark_compare(results_json: Path) -> None:
    load_json(results_json)  # what reports accepts ...
    done = subprocess.run(  # ... pytest-benchmark's own tool reads too
        [sys.executable, "-m", "pytest_benchmark", "compare", str(results_json)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "Failed to load" not in output
    assert "test_train[dense-xs-amp-bf16]" in output


def test_real_pytest_benchmark_output_loads(tmp_path: Path) -> None:
    """A --benchmark-json written by pytest-benchmark itself, with archbench extra_info."""
    (tmp_path / "test_case.py").write_text(
        textwrap.dedent(
            """
            import pytest
            from reports.synthetic import make_extra_info

            @pytest.mark.parametrize("variant", ["fp32", "amp-bf16"])
            def test_train(benchmark, variant):
                benchmark.extra_info.update(make_extra_info("dense", "xs", variant))
                benchmark.pedantic(lambda: sum(range(1000)), rounds=3, iterations=1)
            """
        )
    )
    out = tmp_path / "out.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_case.py"]
        + [f"--benchmark-json={out}", "--rootdir", str(tmp_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = load_json(out)
    assert sorted(r.id for r in run.results) == ["dense-xs-amp-bf16", "dense-xs-fp32"]
    assert run.results[0].stats is not None
    assert run.label == run.machine_info["cpu"]["brand_raw"]  # no archbench block: CPU brand


def test_render_time_of_500_benchmarks() -> None:
    timings = measure(500, repeat=1)
    assert timings["benchmarks"] == 500
    # The figure belongs to `python -m reports.bench_render`; this only catches a blow-up.
    assert timings["github end to end"] < 10.0
