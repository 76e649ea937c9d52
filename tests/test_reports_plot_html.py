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


def test_html_is_self_contained_and_holds_the_tables(report: Path) -> None:
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>")
    for title in ("Machines", "Throughput", "Accuracy", "Efficiency", "Scaling"):
        assert f"<h2>{title}</h2>" in page
    assert re.search(r"<td>\s*1\.23k \(1\.23x\)\s*</td>", page)
    assert "oom: CUDA out of memory | tried 2 GiB" in page
    assert "AMD EPYC 7B13" in page
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", page)) == 3  # a figure per family
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*(?!["']?data:)""", page)
    assert "<style>" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_html_renders_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    assert CHROMIUM is not None
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
        report.as_uri(),
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
