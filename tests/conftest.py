"""Fixtures shared by the telemetry tests: an empty RAPL tree and the fake NVML. Their
imports are inside them, so collecting other tests does not import torch or bench."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture
def no_rapl(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the sampler at an empty powercap tree."""
    from bench.telemetry import rapl

    root = tmp_path / "powercap"
    root.mkdir()
    monkeypatch.setattr(rapl, "RAPL_ROOT", str(root))
    return root


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch, no_rapl: Path):
    """Install a FakeNVML factory at the pynvml import boundary; no CUDA in torch.
    ``fake_nvml(FakeGPU(...), ...)`` returns the installed FakeNVML."""
    import torch

    from tests.fake_pynvml import FakeGPU, FakeNVML

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def install(*gpus: FakeGPU, init_error: int | None = None) -> FakeNVML:
        fake = FakeNVML(list(gpus) or [FakeGPU()], init_error=init_error)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


@pytest.fixture(scope="session")
def dense_s_rank_runs(tmp_path_factory):
    """The dense-s sessions at world size 2 and 1 (``tests.bench_runs.RANK_RUNS``)."""
    from tests.bench_runs import rank_runs

    return rank_runs(tmp_path_factory)
