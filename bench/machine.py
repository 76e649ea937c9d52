"""Machine facts for pytest-benchmark's machine_info (torch, CUDA, DeepSpeed, CPU and GPU), and
apart from them what the session measures (the matmul peaks, torch's thread count).

pytest-benchmark's ``--benchmark-compare`` warns when the machine_info of two runs differs at
all, so machine_info holds only facts of the machine and its software; the per-session
measurements go to the JSON's top-level ``archbench.session`` and the streamed machine line's
``session`` (``bench.conftest``), and every benchmark keeps its own ``peak_tflops``.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform

import torch


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_facts() -> dict:
    """GPU name, count, driver; absent keys are None with ``gpu_reason`` saying why."""
    if not torch.cuda.is_available():
        return {"gpu_name": None, "gpu_count": 0, "driver": None, "gpu_reason": "torch sees no CUDA device"}
    facts = {
        "gpu_name": torch.cuda.get_device_name(0),
        "gpu_count": torch.cuda.device_count(),
        "driver": None,
        "gpu_reason": None,
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        facts["driver"] = driver.decode() if isinstance(driver, bytes) else driver
    except Exception as e:  # NVML missing or unusable: the driver stays unknown, with the reason
        facts["gpu_reason"] = f"driver version unavailable: {e}"
    return facts


# pytest-benchmark's machine_info["cpu"] (py-cpuinfo) keys that change from read to read
VOLATILE_CPU_KEYS = ("hz_actual", "hz_actual_friendly")


def session_facts(peak_tflops: dict[str, float]) -> dict:
    """What this session measured or chose, which another session of the same machine may not share."""
    return {"peak_tflops": dict(peak_tflops), "torch_threads": torch.get_num_threads()}


def machine_facts(device: str) -> dict:
    """Facts of the machine and its software: the same in every session of this machine."""
    gpu = gpu_facts()
    cpu = cpu_model()
    uses_gpu = device.startswith("cuda") and gpu["gpu_name"]
    from workloads.cpu_features import machine_info as cpu_facts

    return {
        **cpu_facts(),  # ISA features: whether bf16 and int8 have fast paths here
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "deepspeed": _version("deepspeed"),
        "torchao": _version("torchao"),
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        **gpu,
        "device": device,
        "label": gpu["gpu_name"] if uses_gpu else cpu,
    }
