"""Loss parity at 2 ranks, for the ZeRO and the parallel tests in one ``torchrun`` (a launch of
2 ranks costs tens of seconds on 2 cores): ``torchrun --nproc-per-node 2 tests/parity.py OUT``
writes ``OUT/parallel.json`` and, where deepspeed is installed, ``OUT/zero.json``."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import test_parallel, test_zero  # noqa: E402


def launch(out: Path, timeout: float = 600) -> dict[str, dict]:
    """Run this file under torchrun; what each worker wrote, by name."""
    import os
    import subprocess

    from bench.distributed import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), __file__, str(out)]  # fmt: skip
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    return {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    test_parallel.parity_worker(str(out / "parallel.json"))
    if importlib.util.find_spec("deepspeed") is not None:
        test_zero.parity_worker(str(out / "zero.json"))
