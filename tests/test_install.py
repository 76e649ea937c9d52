"""The user's path: the wheel holds everything a run needs, and ``archbench`` works from it.

What this proves: a wheel built from this tree (``pip wheel --no-deps``), installed by pip with
its requirements into a fresh virtual environment, runs a benchmark with ``archbench run`` and
reads it with ``archbench report table``, in a directory outside the checkout, with the
bench, workloads and reports code coming from the wheel only (the test asserts where every
module was imported from, in the driver and in the fork server's case workers). ``pytest
--pyargs bench --benchmark-only`` from the installed package collects and runs too: the
installed ``bench/conftest.py`` is what parametrizes it.

What it does not: download the heavy requirements. A fresh ``pip install torch==2.13.0`` takes
minutes, so the environment sees this environment's installed packages through a ``.pth``
file naming a folder of links to them, every one but archbench itself; pip then resolves the
wheel's requirements against those (``--no-index``: nothing is downloaded), which also shows that
they are met by the CPU build of torch already there and do not ask for another torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SKIP_COPY = shutil.ignore_patterns(".git", ".venv", "build", "dist", "results", "*.egg-info", "__pycache__", ".*cache")
OUR_NAMES = ("archbench", "__editable__", "bench", "workloads", "reports")


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """``pip wheel --no-deps`` of a copy of this tree (the checkout gets no build/ folder)."""
    source = tmp / "src"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         str(source)], tmp, env)  # fmt: skip
    (wheel,) = (tmp / "dist").glob("archbench-*.whl")
    return wheel


def dependency_links(tmp: Path) -> Path:
    """A folder of links to this environment's installed packages, archbench's own left out."""
    links = tmp / "deps"
    links.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(OUR_NAMES) or entry.suffix == ".pth":
            continue
        (links / entry.name).symlink_to(entry)
    return links


def fresh_venv(tmp: Path, links: Path, env: dict[str, str]) -> Path:
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, env)
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env)
    (Path(purelib.stdout.strip()) / "_archbench_test_deps.pth").write_text(f"{links}\n")
    return venv


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("install")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    wheel = build_wheel(tmp, env)
    venv = fresh_venv(tmp, dependency_links(tmp), env)
    done = run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-index",
                str(wheel)], tmp, env)  # fmt: skip
    assert "Successfully installed archbench-" in done.stdout, done.stdout
    work = tmp / "work"  # outside the checkout
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return venv, work, env


def test_wheel_holds_the_bench_and_asks_for_no_cuda_torch(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, _, _ = installed
    (wheel,) = (venv.parent / "dist").glob("archbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for name in ("bench/conftest.py", "bench/test_train.py", "bench/worker.py", "bench/figures/gate.py",
                 "bench/telemetry/sampler.py", "workloads/compress/int8.py", "reports/cli.py",
                 "workloads/corpus/cpython-3.11-stdlib.txt.gz", "workloads/corpus/LICENSE-PYTHON.txt"):  # fmt: skip
        assert name in names, name
    assert not any(n.startswith("tests/") for n in names)
    assert "archbench = bench.cli:main" in entry_points
    assert "pytest11" not in entry_points  # the plugin does not load into every pytest run
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert "Requires-Dist: torch>=2.3" in requires
    assert not [r for r in requires if "cu1" in r or "nvidia-cu" in r or "+cu" in r], requires


def test_modules_come_from_the_wheel(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, work, env = installed
    script = "import bench, bench.worker, workloads.compress, reports; print(bench.__file__, reports.__file__)"
    files = run([str(venv / "bin" / "python"), "-c", script], work, env).stdout.split()
    for file in files:
        assert Path(file).is_relative_to(venv), file
        assert not Path(file).is_relative_to(REPO), file


def test_archbench_run_and_report_table(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, work, env = installed
    done = run(["archbench", "run", "--family", "dense", "--size", "xs", "--variant", "fp32", "--no-accuracy",
                "--benchmark-json", "run.json", "--case-timeout", "300"], work, env)  # fmt: skip
    assert "archbench [1/1] ok dense-xs-fp32 (train)" in done.stdout
    assert f"rootdir: {venv}" in done.stdout
    data = json.loads((work / "run.json").read_text())
    (bench,) = data["benchmarks"]
    assert bench["extra_info"]["id"] == "dense-xs-fp32" and bench["extra_info"]["status"] == "ok"
    assert bench["fullname"] == "bench/test_train.py::test_train[dense-xs-fp32]"
    assert (work / "results").is_dir()  # relative paths are the working directory's
    table = run(["archbench", "report", "table", "run.json"], work, env).stdout
    assert "## Throughput" in table and "| dense " in table
    plan = run(["archbench", "run", "--plan", "--family", "dense", "--size", "xs"], work, env).stdout
    assert plan.splitlines()[-1].startswith("total: 3 cases")
    assert "1 earlier run(s) in results" in plan  # the run above, found in the working directory


@pytest.mark.nightly  # the archbench run above starts its workers outside the checkout, with no path to it
def test_workers_import_the_installed_package(installed: tuple[Path, Path, dict[str, str]]) -> None:
    venv, work, env = installed
    probe = work / "where.py"
    probe.write_text(
        "import multiprocessing as mp, sys\n"
        "def where(q):\n"
        "    import bench.worker, workloads\n"
        "    q.put([bench.worker.__file__, workloads.__file__])\n"
        "if __name__ == '__main__':\n"
        "    from bench.supervisor import BASE_PRELOAD\n"
        "    ctx = mp.get_context('forkserver'); ctx.set_forkserver_preload([*BASE_PRELOAD, 'bench.worker'])\n"
        "    q = ctx.Queue(); p = ctx.Process(target=where, args=(q,)); p.start(); print(*q.get()); p.join()\n"
    )
    files = run([str(venv / "bin" / "python"), str(probe)], work, env).stdout.split()
    assert files and all(Path(f).is_relative_to(venv) for f in files), files


def test_plain_pytest_pyargs_collects_the_installed_bench(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """``pytest --pyargs bench --benchmark-only``: the conftest is found in the installed package
    (it parametrizes the tests); its options need ``archbench run``, so the smoke tier's defaults
    apply."""
    venv, work, env = installed
    listed = run([str(venv / "bin" / "python"), "-m", "pytest", "--pyargs", "bench", "--benchmark-only",
                  "--collect-only", "-q", "-p", "no:cacheprovider"], work, env).stdout  # fmt: skip
    assert "test_train.py::test_train[transformer-m-amp-fp16]" in listed
    assert "21 tests collected" in listed


@pytest.mark.nightly
def test_plain_pytest_pyargs_runs_the_installed_bench(installed: tuple[Path, Path, dict[str, str]]) -> None:
    """The same, running one case (``-k``) at the smoke tier's defaults, accuracy on."""
    venv, work, env = installed
    done = run([str(venv / "bin" / "python"), "-m", "pytest", "--pyargs", "bench", "--benchmark-only", "-p",
                "no:cacheprovider", "-k", "dense-xs-fp32", "--benchmark-json", "pyargs.json"], work, env)  # fmt: skip
    assert "1 passed" in done.stdout, done.stdout[-2000:]
    (bench,) = json.loads((work / "pyargs.json").read_text())["benchmarks"]
    assert bench["extra_info"]["accuracy"] > 0.5  # the smoke tier's defaults: accuracy on
