"""Scaling plots and the self-contained HTML report (rendered by headless Chromium if present)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reports.load import run_from_extra_info
from reports.synthetic import machine_info, make_extra_info, write_benchmark_json, write_jsonl
from tests.reports_fixtures import run_reports, session_results

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def scaling_results() -> list[dict[str, object]]:
    return [
        make_extra_info(family, size, variant)
        for family in ("dense", "transformer")
        for size in ("xs", "s", "m")
        for variant in ("fp32", "amp-bf16", "zero2")
    ]


def test_plot_writes_one_png_per_family(tmp_path: Path) -> None:
    results = write_benchmark_json(tmp_path / "run.json", scaling_results())
    out = tmp_path / "plots"
    done = run_reports("plot", str(results), "--output-dir", str(out))
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in out.iterdir())
    assert written == ["dense.png", "transformer.png"]
    assert done.stdout.split() == [str(out / name) for name in written]
    for name in written:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000


def test_plot_names_figures_by_machine_and_world_size_when_they_vary() -> None:
    from reports.plot import figure_groups

    cpu_results = [make_extra_info(world_size=1), make_extra_info(world_size=2)]
    cpu = run_from_extra_info(cpu_results, machine_info("AMD EPYC 7B13"))
    gpu = run_from_extra_info([make_extra_info()], machine_info("NVIDIA H100", "NVIDIA H100"))
    assert sorted(figure_groups([cpu, gpu])) == [
        "amd-epyc-7b13-dense-ws1",
        "amd-epyc-7b13-dense-ws2",
        "nvidia-h100-dense-ws1",
    ]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp_path = tmp_path_factory.mktemp("report")
    session = session_results()
    ids = {info["id"] for info in session}
    more = [info for info in scaling_results() if info["id"] not in ids]
    results = write_jsonl(tmp_path / "results-1.jsonl", session + more)
    out = tmp_path / "report.html"
    done = run_reports("html", str(results), "--output", str(out))
    assert done.returncode == 0, done.stderr
    return out


def section(page: str, anchor: str) -> str:
    """The HTML of one section: from its heading to the next ``<h2``."""
    start = page.index(f'<h2 id="{anchor}">')
    end = page.find("<h2 ", start + 1)
    return page[start : end if end > 0 else len(page)]


def images(html: str) -> int:
    return len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", html))


def test_html_is_self_contained_and_holds_the_tables(report: Path) -> None:
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for title in ("Machines", "Throughput", "Accuracy", "Efficiency", "Scaling", "Cases"):
        anchor = title.lower()
        assert f'<h2 id="{anchor}">{title}</h2>' in page
        assert f'<li><a href="#{anchor}">{title}</a></li>' in page  # the table of contents
    assert re.search(r"<td>\s*1\.23k \(1\.23x ±6%\)\s*</td>", page)
    assert re.search(r"<td>\s*oom \[\d\]\s*</td>", page) and "CUDA out of memory | tried 2 GiB</li>" in page
    assert "AMD EPYC 7B13" in page
    assert images(section(page, "scaling")) == 3  # a figure per family
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?(data:|#))""", page)  # inline data, links within the page
    assert "<style>" in page


def test_html_plots_every_case_in_human_units_and_names_the_machine(report: Path) -> None:
    cases = section(report.read_text(), "cases")
    ran = [info for info in session_results() if info["status"] == "ok"]
    assert images(cases) >= len(ran)
    assert '<h3 id="case-dense-xs-fp32-on-amd-epyc-7b13">dense-xs-fp32 on AMD EPYC 7B13</h3>' in cases
    assert "median step 32 ms, 95% CI 31.4 ms to 33 ms; 5 rounds; timing stopped: budget" in cases


def test_case_figure_units_and_title() -> None:
    from reports.charts import SERIES, case_title, step_times_ms, telemetry_series
    from reports.load import Result

    result = Result(make_extra_info(unstable=True, contended=True), "x")
    series = telemetry_series(result)
    assert sorted(series) == ["mem_bytes", "util_pct"]  # power absent on this CPU: no panel
    assert series["mem_bytes"][1][0] == 256.0  # 2**28 bytes in MiB
    assert [unit for _, _, unit in SERIES.values()] == ["MiB", "W", "%"]
    assert step_times_ms(result)[0] == pytest.approx(result.extra_info["step_times_s"][0] * 1e3)
    assert case_title(result, "AMD EPYC 7B13") == "dense-xs-fp32 on AMD EPYC 7B13 (unstable, contended)"


def test_plot_axes_in_human_units(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from reports.inputs import load_input
    from reports.plot import _draw, figure_groups

    path = write_benchmark_json(tmp_path / "run.json", scaling_results())
    (results, _) = figure_groups([load_input(path)]).values()
    figure = Figure()
    _draw(figure, "dense on AMD EPYC 7B13", results)
    labels = [axes.get_ylabel() for axes in figure.axes]
    assert labels == ["samples/s", "peak memory (MiB)", "MFU (%)", "accuracy (%)"]  # the quality panel: digits
    assert figure.get_suptitle() == "dense on AMD EPYC 7B13"
    memory = figure.axes[1].lines[0].get_ydata()
    assert memory[0] == pytest.approx((300 * 2**20 + 20 * 100_000) / 2**20)


@pytest.fixture(scope="module")
def two_runs_two_machines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """before.json and after.json from one CPU (after: slower fp32, unstable; bf16 contended),
    and an H100 run: the report with every section."""
    tmp_path = tmp_path_factory.mktemp("before-after")
    before_results = [
        make_extra_info("dense", "xs", "fp32", samples_per_s=1000.0) if info["id"] == "dense-xs-fp32" else info
        for info in scaling_results()
    ]
    before = write_benchmark_json(tmp_path / "before.json", before_results)
    changed = {
        "dense-xs-fp32": dict(samples_per_s=900.0, step_time_s=0.04, unstable=True),
        "dense-xs-amp-bf16": dict(contended=True),
    }
    after_results = [
        make_extra_info(info["family"], info["size"], info["variant"], **changed.get(str(info["id"]), {}))
        for info in scaling_results()
    ]
    after = write_benchmark_json(tmp_path / "after.json", after_results)
    gpu = [make_extra_info("dense", size, "fp32", samples_per_s=9e4) for size in ("xs", "s")]
    h100 = write_benchmark_json(tmp_path / "h100.json", gpu, machine_info("NVIDIA H100", gpu_name="NVIDIA H100"))
    out = tmp_path / "report.html"
    done = run_reports("html", str(before), str(after), str(h100), "--output", str(out))
    assert done.returncode == 0, done.stderr
    return out


def test_html_before_and_after_of_one_machine(two_runs_two_machines: Path) -> None:
    page = two_runs_two_machines.read_text()
    anchor = "before-and-after-amd-epyc-7b13"
    assert f'<li><a href="#{anchor}">Before and after: AMD EPYC 7B13</a></li>' in page
    table = section(page, anchor)
    assert "<th>before (before.json)</th>" in table and "<th>after / before</th>" in table
    # dense-xs-fp32 samples/s: 1000 before, 900 after (unstable, ±12%): the ratio with its interval
    row = re.search(
        r"<tr><td>dense-xs-fp32</td><td>samples/s</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>", table
    )
    assert row is not None, table[:3000]
    assert (row[1], row[2]) == ("1k", "900~")
    assert re.fullmatch(r"0\.90x ±1[4-9]%", row[3]), row[3]
    assert "contended" in table and "~: unstable, CI half-width &gt; 5% of the median step time" in table
    # the tables show the last run of the machine
    assert "The tables below show the last run of AMD EPYC 7B13" in table


def test_html_charts_a_metric_across_machines(two_runs_two_machines: Path) -> None:
    page = two_runs_two_machines.read_text()
    comparison = section(page, "hardware-comparison-samples-s")
    assert "<th>NVIDIA H100</th>" in comparison and images(comparison) == 1
    assert '<h3 id="case-dense-xs-fp32-on-nvidia-h100">' in page


def test_html_numbers_are_rounded(two_runs_two_machines: Path) -> None:
    page = re.sub(r'src="data:[^"]*"', "", two_runs_two_machines.read_text())
    assert "cpu:float32 0.18 TFLOP/s" in page
    assert not re.findall(r"\d\.\d{5,}", page)  # no 17-digit peaks, nor any long number


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
@pytest.mark.parametrize("which", ["one run", "before/after and machines"])
def test_html_renders_in_headless_chromium(
    report: Path, two_runs_two_machines: Path, tmp_path: Path, which: str
) -> None:
    assert CHROMIUM is not None
    page = report if which == "one run" else two_runs_two_machines
    shot = tmp_path / "shot.png"
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,2000",
        page.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 30_000  # a page of tables and plots, not a blank screen

    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    assert pixels.std() > 0.05
