"""``compile``: the step through ``torch.compile`` (inductor), training and inference.

Spelling: ``compile`` (fp32) and ``compile+bf16`` (autocast to bfloat16 around the compiled
forward, like ``amp-bf16``). Both run the ``train`` phase (AdamW, DDP at world size > 1, the
model compiled: ``torch.compile(DDP(model))`` there) and the ``infer`` phase (a compiled forward
pass under ``inference_mode`` with inductor's weight freezing, as TorchBench times compiled
inference; the model comes from ``InferVariant.model``, so compressed ``int8`` variants compare
with compiled fp32 on the same model).

Compilation happens in the first call, which the harness makes in its untimed warm-up; the
variant times that call itself and reports, apart from the steady step:

- ``compile_s``: the first step's time minus the median of the next ``STEADY_STEPS`` steps (what
  compiling added); ``first_step_s`` the first step's whole time;
- ``graph_breaks``: graph breaks dynamo met while compiling (``torch._dynamo`` counters, reasons
  summed); ``compiled_graphs`` the graphs it made (``unique_graphs``);
- ``compile_cache_hits``, ``compile_cache_misses``: inductor's FX-graph cache over the first step.
  A hit reuses code compiled by an earlier process (``/tmp/torchinductor_$USER``): compile_s is
  then seconds where a cold compile takes tens of seconds on a small CPU.

Quality (the accuracy task) is evaluated with the eager module in training (same weights; the
compiled step is what trained them) and with the compiled model in inference.
"""

from __future__ import annotations

import contextlib
import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import Unsupported
from .context import CaseContext
from .variants import ForwardStep, Runnable, TorchTrainer, TrainVariant

PRECISIONS: dict[str, torch.dtype | None] = {"": None, "+bf16": torch.bfloat16}
STEADY_STEPS = 5  # steps after the first whose median is the steady step compile_s is taken against


COUNTS = {  # result key -> (counter group, counter or None: the group's sum)
    "graph_breaks": ("graph_break", None),
    "compiled_graphs": ("stats", "unique_graphs"),
    "compile_cache_hits": ("inductor", "fxgraph_cache_hit"),
    "compile_cache_misses": ("inductor", "fxgraph_cache_miss"),
}


def dynamo_counts() -> dict[str, int]:
    """The ``COUNTS`` torch._dynamo has counted in this process so far."""
    from torch._dynamo.utils import counters

    return {
        key: sum(counters[group].values()) if name is None else counters[group][name]
        for key, (group, name) in COUNTS.items()
    }


class CompileClock:
    """Times the calls of a compiled callable: the first (compilation) and the next few (steady),
    with dynamo's graph-break and graph counts over the first."""

    def __init__(self) -> None:
        self.first_s: float | None = None
        self.steady: list[float] = []
        self.counts: dict[str, int | None] = dict.fromkeys(COUNTS)

    def timed(self, call: Callable[[], Any]) -> Any:
        if self.first_s is not None and len(self.steady) >= STEADY_STEPS:
            return call()
        before = dynamo_counts() if self.first_s is None else None
        start = time.perf_counter()
        out = call()
        elapsed = time.perf_counter() - start
        if before is None:
            self.steady.append(elapsed)
        else:
            self.first_s = elapsed
            after = dynamo_counts()
            self.counts = {key: after[key] - before[key] for key in COUNTS}
        return out

    def info(self) -> dict[str, Any]:
        """``compile_s``, ``first_step_s``, the ``COUNTS`` and ``absent``."""
        steady = statistics.median(self.steady) if self.steady else None
        out: dict[str, Any] = {
            "first_step_s": self.first_s,
            "compile_s": self.first_s - steady if self.first_s is not None and steady is not None else None,
            **self.counts,
        }
        reason = "the compiled step has not run" if self.first_s is None else "no step after the first ran"
        out["absent"] = {k: reason for k, v in out.items() if v is None}
        return out


class CompiledTrainer(TorchTrainer):
    """TorchTrainer whose forward and backward run through ``torch.compile`` (the optimizer
    step stays eager); the first steps are timed by a CompileClock."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model = torch.compile(self.model)  # the DDP wrapper at world size > 1, else the module
        self.clock = CompileClock()

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.clock.timed(functools.partial(super().train_step, inputs, targets))

    def extra_info(self) -> dict[str, Any]:
        return self.clock.info()


class CompiledForward(ForwardStep):
    """A compiled forward pass: ``step`` is timed by a CompileClock (the warm-up compiles)."""

    def __init__(self, ctx: CaseContext, module: nn.Module, autocast_dtype: torch.dtype | None):
        compiled = torch.compile(module, options={"freezing": True})  # weights constant: inference only
        self.clock = CompileClock()

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            cast = torch.autocast(ctx.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with cast:
                return compiled(inputs)

        super().__init__(ctx, forward, module)

    def step(self) -> None:
        self.clock.timed(super().step)

    def extra_info(self) -> dict[str, Any]:
        return self.clock.info()


class Compile(TrainVariant):
    """``torch.compile`` of the training step (train) or of the forward pass (infer)."""

    phases = ("train", "infer")

    def __init__(self, precision: str = ""):
        if precision not in PRECISIONS:
            raise ValueError(f"compile variant: unknown precision {precision!r}; allowed: {', '.join(PRECISIONS)}")
        self.name = "compile" + precision
        self.autocast_dtype = PRECISIONS[precision]
        self.compute_dtype = self.autocast_dtype or torch.float32

    def check(self, device: torch.device, world_size: int) -> None:
        if self.autocast_dtype is not None and not torch.amp.is_autocast_available(device.type):
            raise Unsupported(f"{self.name}: torch has no autocast for device type {device.type}")
        if device.type == "cuda" and self.autocast_dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
            raise Unsupported(f"{self.name}: {torch.cuda.get_device_name(device)} has no bfloat16 support")

    def trainer(self, model, loss_fn, lr, device, world_size):
        return CompiledTrainer(model, loss_fn, lr, device, autocast_dtype=self.autocast_dtype, world_size=world_size)

    def build(self, ctx: CaseContext) -> Runnable:
        if ctx.phase == "infer":  # the trained fp32 reference, compiled: what compressed variants compare with
            from .reference import trained_reference

            return CompiledForward(ctx, trained_reference(ctx)[0], self.autocast_dtype)
        return super().build(ctx)

    def predicted_state_bytes(self, n_params: int, world_size: int) -> int:
        return 16 * n_params  # fp32 parameters, gradients and AdamW state, as fp32 and amp-bf16


COMPILE_VARIANTS = {"compile" + p: functools.partial(Compile, p) for p in PRECISIONS}
