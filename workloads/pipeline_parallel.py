"""Pipeline parallelism (``torch.distributed.pipelining``), registered into ``VARIANTS``.

Spelling: ``pipeline`` runs the 1F1B schedule with 4 micro-batches, ``pipeline-gpipe`` GPipe
(all forwards, then all backwards) with 4; a ``+mK`` suffix sets K micro-batches, K in
``MICROBATCHES`` (``pipeline+m8``, ``pipeline-gpipe+m16``). One stage per rank, so world size
>= 2 (at world size 1 the variant is refused: that is the ``fp32`` step).

The model is cut into units (the dense MLP: each Linear with the ops before it; the CNN: each
conv stage, then the fully connected head; the transformer: the embeddings, each block, the
final norm with the tied head), and the units into contiguous stages of about equal forward
FLOPs (counted on one sample with ``FlopCounterMode`` at the first step). Each rank builds the
seeded model, keeps its stage and runs it as a ``PipelineStage`` (gloo on CPUs); the first
stage reads the inputs, the last computes the loss on each micro-batch, and every stage steps
AdamW on its own parameters. The transformer's tied embedding and head sit on the first and
the last stage: each holds a copy and their gradients are summed across the two before the step
(Megatron's embedding group), so the copies stay equal.

A step's batch is the whole pipeline's (``data_parallel = False``): the ranks share one batch of
``batch_size`` samples, split into micro-batches; ``samples_per_step`` is ``batch_size``, not
``batch_size x world_size`` as for DDP. The loss is the mean over micro-batches (gradients
scaled by 1/K), so a step equals an fp32 step on the same batch; ``train_step`` returns it on the
last stage and NaN elsewhere.

Reported: ``bubble_measured``, the idle share of a stage over the pipeline schedule of a step
(1 - time in its forward and backward micro-batch computations / the schedule's wall time),
the median over the steps after the first, averaged over stages (each stage's in
``bubble_measured_per_stage``), beside the schedule's ideal ``bubble_ideal`` = (p-1)/(K+p-1) for
p stages (equal stages, free communication); ``microbatches``, ``pipeline_schedule`` and
``stage_params``. Model state per rank is its stage's parameters, gradients and AdamW state;
the prediction is 16 bytes per parameter of the largest stage.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from .accuracy import case_budget
from .base import Unsupported
from .cnn import ConvNet
from .context import CaseContext
from .dense import MLP
from .state import optimizer_state_tensors, tensor_bytes
from .transformer import GPT
from .variants import LossFn, Runnable, TrainVariant

SCHEDULES: dict[str, str] = {"pipeline": "Schedule1F1B", "pipeline-gpipe": "ScheduleGPipe"}
MICROBATCHES: tuple[int, ...] = (2, 4, 8, 16)
DEFAULT_MICROBATCHES = 4


def ideal_bubble(stages: int, microbatches: int) -> float:
    """Idle share of each stage in a GPipe/1F1B step with equal stages: (p-1)/(K+p-1)."""
    return (stages - 1) / (microbatches + stages - 1)


# --------------------------------------------------------------------------------------
# Units and stages


class Embed(nn.Module):
    """The transformer's token and position embeddings: (B, T) tokens -> (B, T, d)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.wte, self.wpe = gpt.wte, gpt.wpe

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))


class Head(nn.Module):
    """The transformer's final norm and (tied) head: (B, T, d) -> (B, T, vocab)."""

    def __init__(self, gpt: GPT):
        super().__init__()
        self.ln_f, self.head = gpt.ln_f, gpt.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(x))


def mlp_units(model: MLP) -> list[nn.Module]:
    """Each Linear with the parameter-free ops before it (Flatten, ReLU)."""
    units, pending = [], []
    for layer in model.net:
        pending.append(layer)
        if isinstance(layer, nn.Linear):
            units.append(nn.Sequential(*pending))
            pending = []
    return units


def cnn_units(model: ConvNet) -> list[nn.Module]:
    """Each conv stage (convolutions, ReLUs, its pooling), then the fully connected head."""
    units, pending = [], []
    for layer in model.features:
        pending.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            units.append(nn.Sequential(*pending))
            pending = []
    return units + [model.classifier]


def gpt_units(model: GPT) -> list[nn.Module]:
    return [Embed(model), *model.blocks, Head(model)]


SPLITTERS: dict[type[nn.Module], Callable[[nn.Module], list[nn.Module]]] = {
    MLP: mlp_units,
    ConvNet: cnn_units,
    GPT: gpt_units,
}


def unit_flops(units: Sequence[nn.Module], example: torch.Tensor) -> list[float]:
    """Forward FLOPs of each unit on ``example`` (fed through the units in order)."""
    from torch.utils.flop_counter import FlopCounterMode

    costs, x = [], example
    with torch.no_grad():
        for unit in units:
            with FlopCounterMode(display=False) as counter:
                x = unit(x)
            costs.append(float(counter.get_total_flops()))
    return costs


def balanced_split(costs: Sequence[float], parts: int) -> list[int]:
    """Start index of each of ``parts`` contiguous, non-empty groups of ``costs`` that minimize
    the largest group's sum (dynamic programming; ties keep earlier cuts)."""
    n = len(costs)
    if not 1 <= parts <= n:
        raise ValueError(f"cannot split {n} units into {parts} non-empty stages")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    # best[k][i]: (largest sum, cuts) splitting the first i units into k groups
    best: list[dict[int, tuple[float, list[int]]]] = [{0: (0.0, [])}]
    for k in range(1, parts + 1):
        row = {}
        for i in range(k, n - (parts - k) + 1):
            row[i] = min(
                (max(best[k - 1][j][0], prefix[i] - prefix[j]), best[k - 1][j][1] + [j])
                for j in range(k - 1, i)
                if j in best[k - 1]
            )
        best.append(row)
    return best[parts][n][1]


# --------------------------------------------------------------------------------------
# The trainer


class BubbleClock:
    """Busy time of one stage inside each schedule step: wraps the stage's micro-batch forward
    and backward computations."""

    def __init__(self, stage) -> None:
        self.busy = 0.0
        self.bubbles: list[float] = []
        for name in ("forward_one_chunk", "backward_one_chunk"):
            setattr(stage, name, self._timed(getattr(stage, name)))

    def _timed(self, compute: Callable) -> Callable:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return compute(*args, **kwargs)
            finally:
                self.busy += time.perf_counter() - start

        return timed

    def step(self, run: Callable[[], None]) -> None:
        self.busy = 0.0
        start = time.perf_counter()
        run()
        self.bubbles.append(max(0.0, 1.0 - self.busy / (time.perf_counter() - start)))

    def median(self) -> float | None:
        steady = self.bubbles[1:] or self.bubbles  # the first step infers shapes and allocates
        return statistics.median(steady) if steady else None


class PipelineTrainer:
    """AdamW training of this rank's stage through a pipeline schedule; implements ``Trainer``.
    The stages are cut at the first step (the FLOPs of each unit on one sample of it)."""

    def __init__(self, variant: Pipeline, model: nn.Module, loss_fn: LossFn, lr: float, device: torch.device):
        import torch.distributed as dist

        splitter = SPLITTERS.get(type(model))
        if splitter is None:
            raise Unsupported(f"{variant.name}: no stage split for a {type(model).__name__} model")
        self.variant, self.loss_fn, self.lr, self.device = variant, loss_fn, lr, device
        self.rank, self.stages = dist.get_rank(), dist.get_world_size()
        self.full = model.to(device)
        self.full_bytes = tensor_bytes(model.state_dict().values())
        self.units = splitter(model)
        if len(self.units) < self.stages:
            raise Unsupported(
                f"{variant.name}: the model has {len(self.units)} units to split, fewer than the {self.stages} ranks"
            )
        self.model: nn.Module | None = None
        self.clock: BubbleClock | None = None

    def _cut(self, example: torch.Tensor) -> None:
        """Keep this rank's stage, its schedule, AdamW and the groups of its tied parameters."""
        import torch.distributed as dist
        from torch.distributed import pipelining

        starts = balanced_split(unit_flops(self.units, example), self.stages) + [len(self.units)]
        stages = [self.units[a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
        self.stage_params = [sum(p.numel() for p in nn.Sequential(*s).parameters()) for s in stages]
        self.model = nn.Sequential(*stages[self.rank])
        stage = pipelining.PipelineStage(self.model, self.rank, self.stages, self.device)
        self.clock = BubbleClock(stage)
        schedule = getattr(pipelining, SCHEDULES[self.variant.schedule])
        self.schedule = schedule(stage, self.variant.microbatches, loss_fn=self.loss_fn)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
        self.tied: list[tuple[nn.Parameter, object]] = []  # (parameter, the group of stages holding it)
        holders: dict[int, list[int]] = {}
        params = {}
        for s, units in enumerate(stages):
            for p in nn.Sequential(*units).parameters():
                holders.setdefault(id(p), []).append(s)
                params[id(p)] = p
        for key, ranks in holders.items():
            if len(ranks) > 1:
                group = dist.new_group(ranks)  # every rank creates every group, in the same order
                if self.rank in ranks:
                    self.tied.append((params[key], group))
        self.units = self.full = None  # only this stage is kept

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (the optimizer's, once the first step made it)."""
        self.lr = lr
        if self.model is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if self.model is None:
            self._cut(inputs[:1])
        losses: list[torch.Tensor] = []
        if self.rank == 0:
            run = functools.partial(self.schedule.step, inputs, return_outputs=False)
        elif self.rank == self.stages - 1:
            run = functools.partial(self.schedule.step, target=targets, losses=losses, return_outputs=False)
        else:
            run = functools.partial(self.schedule.step, return_outputs=False)
        self.clock.step(run)
        for param, group in self.tied:  # a tied weight's copies: the sum of their gradients
            dist.all_reduce(param.grad, group=group)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return torch.stack(losses).mean().detach() if losses else torch.tensor(float("nan"))

    @torch.no_grad()
    def predict(self, inputs: torch.Tensor) -> torch.Tensor:
        """The whole model's output on every rank: each stage in turn, its output broadcast."""
        import torch.distributed as dist

        if self.model is None:
            raise RuntimeError("pipeline: predict before the first training step (the stages are cut there)")
        self.model.eval()
        try:
            x = inputs
            for stage in range(self.stages):
                box = [self.model(x) if stage == self.rank else None]
                dist.broadcast_object_list(box, src=stage)
                x = box[0].to(self.device)
            return x
        finally:
            self.model.train()

    def model_state_bytes(self) -> int | None:
        """This stage's parameters, a gradient per parameter and AdamW state (after a step)."""
        if self.model is None:
            return None  # not cut yet
        params = list(self.model.parameters())
        return 2 * tensor_bytes(params) + tensor_bytes(optimizer_state_tensors(self.optimizer))

    def predicted_state_bytes(self) -> int | None:
        return 16 * max(self.stage_params) if self.model is not None else None

    def model_bytes(self) -> int:
        return self.full_bytes

    def extra_info(self) -> dict:
        """Every rank's bubble (a collective: every rank calls it, as the harness does)."""
        import torch.distributed as dist

        info: dict = {
            "pipeline_schedule": "1F1B" if self.variant.schedule == "pipeline" else "GPipe",
            "microbatches": self.variant.microbatches,
            "bubble_ideal": ideal_bubble(self.stages, self.variant.microbatches),
            "absent": {},
        }
        mine = self.clock.median() if self.clock is not None else None
        per_stage: list = [None] * self.stages
        dist.all_gather_object(per_stage, mine)
        info["bubble_measured_per_stage"] = per_stage
        info["stage_params"] = getattr(self, "stage_params", None)
        if any(b is None for b in per_stage):
            info["bubble_measured"] = None
            info["absent"]["bubble_measured"] = "no pipeline step ran on every stage"
        else:
            info["bubble_measured"] = statistics.fmean(per_stage)
        return info

    def close(self) -> None:
        if self.model is not None:
            self.optimizer.state.clear()


# --------------------------------------------------------------------------------------
# The variants


class Pipeline(TrainVariant):
    """Layers split into one stage per rank, micro-batches through a 1F1B or GPipe schedule."""

    data_parallel = False

    def __init__(self, schedule: str = "pipeline", microbatches: int = DEFAULT_MICROBATCHES):
        if schedule not in SCHEDULES or microbatches not in MICROBATCHES:
            raise ValueError(
                f"pipeline variant: unknown {schedule!r} with {microbatches} micro-batches; schedules "
                f"{', '.join(SCHEDULES)}, micro-batches {', '.join(map(str, MICROBATCHES))}"
            )
        self.schedule, self.microbatches = schedule, microbatches
        self.name = schedule if microbatches == DEFAULT_MICROBATCHES else f"{schedule}+m{microbatches}"

    def check(self, device: torch.device, world_size: int) -> None:
        if world_size < 2:
            raise Unsupported(
                f"{self.name}: puts one stage on each rank and needs --world-size >= 2 "
                "(at world size 1 it is the fp32 step)"
            )
        if not torch.distributed.is_available():
            raise Unsupported(f"{self.name}: this torch build has no torch.distributed")

    def build(self, ctx: CaseContext) -> Runnable:
        for what, batch in (("--batch-size", ctx.batch_size), ("the accuracy batch", case_budget(ctx).batch_size)):
            if batch % self.microbatches:
                raise Unsupported(f"{self.name}: {what} {batch} does not split into {self.microbatches} micro-batches")
        return super().build(ctx)

    def trainer(self, model, loss_fn, lr, device, world_size):
        return PipelineTrainer(self, model, loss_fn, lr, device)

    def predicted_state_bytes(self, n_params: int, world_size: int) -> int:
        """Equal stages: 16 bytes per parameter over the ranks (the trainer knows its stages)."""
        return round(16 * n_params / world_size)


PIPELINE_VARIANTS = {
    (s if m == DEFAULT_MICROBATCHES else f"{s}+m{m}"): functools.partial(Pipeline, s, m)
    for s in SCHEDULES
    for m in MICROBATCHES
}
