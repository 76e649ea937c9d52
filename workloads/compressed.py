"""Inference on trained models: ``fp32`` (the trained reference itself) and the compressed
variants, each a transformation of that reference (``workloads.compress``), applied in the
case's own worker process (torchao and the x86 quantizer change process-wide settings).

- ``fp32`` (infer): the trained fp32 reference, eager.
- ``int8``: PT2E static int8 + ``torch.compile`` on x86 CPUs (``reduce_range`` without VNNI);
  torchao dynamic int8 on CUDA.
- ``int8-wo``: torchao int8 weight-only (eager): 4x smaller weights, speed as measured.
- ``prune``: torch-pruning structured, ``PRUNE_RATIO`` of the channels and heads removed, then
  a short fine-tune.
- ``prune-unstructured``: global magnitude pruning at ``SPARSITY``, fine-tuned, stored dense
  (no speed-up expected: the measurement says so).
- ``lowrank``: Linear layers as W = B·A (truncated SVD), at the smallest rank whose validation
  accuracy meets ``RANK_TARGET`` of the reference's.
- ``distill``: a student of at most half the teacher's parameters, trained with Hinton's loss;
  the same student trained without the teacher is reported beside it (``accuracy_no_teacher``).

Every result carries ``prepare_s`` (export, calibration, compile, SVD, fine-tune, distillation:
never inside the timed step), ``model_bytes`` (the bytes of the tensors the model computes with),
``accuracy`` with ``accuracy_reference`` (the trained reference's, on the same test samples),
``accuracy_delta``, McNemar's paired test on those samples (``mcnemar_p``, ``errors_added``,
``errors_fixed``) and MLPerf's quality targets (``meets_99``, ``meets_99_9``). The session adds
``speedup`` (over fp32 inference of the same case) and ``speedup_vs_compiled``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from . import accuracy
from .base import count_params
from .budget import training_flops
from .context import CaseContext
from .reference import reference_budget, trained_reference
from .tasks import task_for
from .variants import ForwardStep, InferVariant, Runnable

PRUNE_RATIO = 0.5  # half the channels and heads
SPARSITY = 0.5
FINE_TUNE_FRACTION = 0.5  # pruning's fine-tunes: this share of the reference's training steps
# students (with and without the teacher) train as many steps as the reference: the teacher's budget
RANK_CANDIDATES = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2)
RANK_TARGET = 0.99  # of the reference's validation accuracy


class FineTuner:
    """AdamW on the trainable parameters of ``model`` minimizing ``loss(model, inputs, targets)``;
    a Trainer for ``accuracy.train`` (which sets its learning rate by the budget's schedule)."""

    def __init__(
        self, model: nn.Module, loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], lr: float
    ):
        self.model, self.loss = model, loss
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        value = self.loss(self.model, inputs, targets)
        value.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return value.detach()


def fine_tune(ctx: CaseContext, model: nn.Module, steps: int, loss: Callable | None = None) -> None:
    """``steps`` steps of AdamW on the fit split of the family's task (the case's batch and peak
    learning rate, its warm-up and cosine schedule over ``steps``); ``loss(model, inputs,
    targets)`` defaults to the task loss."""
    if steps < 1:
        return
    task = task_for(ctx.workload, ctx.data_dir)
    budget = dataclasses.replace(accuracy.case_budget(ctx), steps=steps)
    tuner = FineTuner(model, loss or (lambda m, x, y: task.loss(m(x), y)), budget.lr)
    model.train()
    accuracy.train(dataclasses.replace(ctx, world_size=1), tuner, budget, ctx.seed + 1, task)
    model.eval()


def counted_flops(ctx: CaseContext, model: nn.Module) -> float:
    """FLOPs of one sample's forward pass through ``model`` (torch's FLOP counter, math attention):
    what a pruned or factorized model really computes."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    x, _ = ctx.workload.synthetic_batch(1, ctx.device, torch.Generator().manual_seed(0))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return float(counter.get_total_flops())


class CompressedStep(ForwardStep):
    """A compressed model's forward pass, judged against the reference on the same samples."""

    def __init__(self, ctx: CaseContext, model, module: nn.Module, reference: nn.Module, info: dict[str, Any]):
        super().__init__(ctx, model, module)
        self.reference = reference
        self.info = info
        self.flops: float | None = None

    def params(self) -> int:
        return count_params(self.module)

    def flops_per_sample(self) -> float | None:
        return self.flops

    def model_bytes(self) -> int:
        from .compress import model_bytes

        return model_bytes(self.module)

    def accuracy(self) -> dict[str, Any]:
        from .compress import mcnemar, meets

        ref = accuracy.evaluate(self.ctx, inference(self.reference))
        new = super().accuracy()
        test = mcnemar(ref.pop("_correct"), new.pop("_correct"))
        a, r = new["accuracy"], ref["accuracy"]
        return new | {
            "accuracy_reference": r,
            "accuracy_delta": a - r,
            "mcnemar_p": test["p_value"],
            "errors_added": test["b"],
            "errors_fixed": test["c"],
            "meets_99": meets(a, r, 0.99) if r > 0 else None,
            "meets_99_9": meets(a, r, 0.999) if r > 0 else None,
        }

    def close(self) -> None:
        super().close()
        self.reference = None  # type: ignore[assignment]


def inference(model: Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    def predict(inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(inputs)

    return predict


class Compressed(InferVariant):
    """A transformation of the trained reference: ``compress`` returns (callable, module, fields)."""

    baselines = ("fp32",)
    compiles = False  # compared with compiled fp32 too (``speedup_vs_compiled``)
    measured_flops = False  # the model's FLOPs differ from the family's analytic count

    def compress(self, ctx: CaseContext, reference: nn.Module) -> tuple[Callable, nn.Module, dict[str, Any]]:
        raise NotImplementedError

    def prepare_flops(self, ctx: CaseContext) -> float:
        """Analytic FLOPs of the training ``compress`` runs (fine-tunes, students), one rank; 0
        where it trains nothing. ``--plan`` reads it: known before the case runs."""
        return 0.0

    def build(self, ctx: CaseContext) -> Runnable:
        reference, about = trained_reference(ctx)
        start = time.perf_counter()
        model, module, fields = self.compress(ctx, reference)
        info = {"prepare_s": time.perf_counter() - start, "compiled": self.compiles, **fields}
        info |= {"reference_train_s": about["train_s"], "reference_cached": about["cached"]}
        step = CompressedStep(ctx, model, module, reference, info)
        if self.measured_flops:
            step.flops = counted_flops(ctx, module)
        return step


def fine_tune_steps(ctx: CaseContext) -> int:
    """Steps of pruning's fine-tunes: ``FINE_TUNE_FRACTION`` of the reference's."""
    return int(FINE_TUNE_FRACTION * reference_budget(ctx).steps)


def _train_flops(ctx: CaseContext, workload, steps: int) -> float:
    """Analytic FLOPs of ``steps`` training steps of ``workload`` at the reference's batch."""
    return training_flops(workload, reference_budget(ctx), steps)


def student_workload(ctx: CaseContext):
    """The distillation student of the case's family: its workload at ``student_config``."""
    from .compress import student_config

    return type(ctx.workload)(student_config(ctx.family, ctx.workload.cfg))


def reference_step(ctx: CaseContext) -> Runnable:
    """fp32 inference: the trained reference's forward pass (accuracy: its own, the reference)."""
    reference, about = trained_reference(ctx)
    info = {"reference_train_s": about["train_s"], "reference_cached": about["cached"], "compiled": False}
    return CompressedStep(ctx, reference, reference, reference, info)


def calibration(ctx: CaseContext, batches: int = 8) -> list[torch.Tensor]:
    """Inputs of the fit split (real data: images, or byte windows of shape (batch, seq_len))
    at the case's batch size, for int8 calibration."""
    data = accuracy.batches(dataclasses.replace(ctx, world_size=1), ctx.seed + 2, ctx.batch_size)
    return [x for x, _ in itertools.islice(data, batches)]


class Int8(Compressed):
    name = "int8"
    compute_dtype = torch.int8
    compiles = True
    baselines = ("fp32", "compile")

    def compress(self, ctx, reference):
        from .compress import quantize_dynamic_int8, quantize_static_int8
        from .compress.int8 import StaticBatches
        from .cpu_features import has_vnni

        if ctx.device.type == "cuda":
            model = quantize_dynamic_int8(reference)
            return model, model, {"int8_path": "torchao dynamic int8 (CUDA)"}
        reduce_range = not has_vnni()
        batches = calibration(ctx)  # real inputs at the timed batch: their shape is the graph's
        timed = quantize_static_int8(reference, batches[0], batches, reduce_range)
        # batch 1 (latency) gets its own graph, calibrated on the same samples one at a time
        rows = [x[i : i + 1] for x in batches for i in range(x.shape[0])]
        single = quantize_static_int8(reference, rows[0], rows, reduce_range)
        fields = {
            "int8_path": "PT2E static, X86InductorQuantizer, torch.compile (freezing); "
            f"static graphs at batch {batches[0].shape[0]} and 1",
            "reduce_range": reduce_range,
        }
        return StaticBatches({batches[0].shape[0]: timed, 1: single}), timed, fields


class Int8WeightOnly(Compressed):
    name = "int8-wo"

    def compress(self, ctx, reference):
        from .compress import quantize_weight_only_int8

        model = quantize_weight_only_int8(reference)
        return model, model, {"int8_path": "torchao Int8WeightOnlyConfig (eager)"}


class Prune(Compressed):
    name = "prune"
    measured_flops = True

    def prepare_flops(self, ctx):  # the fine-tune of a model with about (1 - ratio) of the FLOPs
        return _train_flops(ctx, ctx.workload, fine_tune_steps(ctx)) * (1 - PRUNE_RATIO)

    def compress(self, ctx, reference):
        from .compress import prune_structured

        example, _ = ctx.workload.synthetic_batch(2, ctx.device, torch.Generator().manual_seed(ctx.seed))
        steps = fine_tune_steps(ctx)
        pruned = prune_structured(reference, example, PRUNE_RATIO, fine_tune=lambda m: fine_tune(ctx, m, steps))
        fields = {"prune_ratio": PRUNE_RATIO, "params_before": pruned.params_before, "fine_tune_steps": steps}
        return pruned.model.eval(), pruned.model, fields


class PruneUnstructured(Compressed):
    name = "prune-unstructured"

    def prepare_flops(self, ctx):  # zeros are stored: the fine-tune costs the whole model's
        return _train_flops(ctx, ctx.workload, fine_tune_steps(ctx))

    def compress(self, ctx, reference):
        from .compress import prune_unstructured

        steps = fine_tune_steps(ctx)
        done = prune_unstructured(reference, SPARSITY, fine_tune=lambda m: fine_tune(ctx, m, steps))
        fields = {"sparsity": done.sparsity, "fine_tune_steps": steps, "storage": "dense (zeros stored)"}
        return done.model.eval(), done.model, fields


class LowRank(Compressed):
    name = "lowrank"
    measured_flops = True

    def compress(self, ctx, reference):
        from .compress import choose_rank

        target = RANK_TARGET * accuracy.evaluate(ctx, inference(reference), on="validation")["accuracy"]

        def score(model: nn.Module) -> float:
            return accuracy.evaluate(ctx, inference(model.eval()), on="validation")["accuracy"]

        choice = choose_rank(reference, RANK_CANDIDATES, score, target)
        factorized = choice.factorized
        if factorized is None:  # no rank met the target: the largest candidate, said so
            from .compress import factorize_linear

            factorized = factorize_linear(reference, rank_fraction=max(RANK_CANDIDATES))
        layers = factorized.layers
        kept = sum(layer.energy for layer in layers) / len(layers) if layers else None
        fields = {
            "rank_fraction": choice.rank_fraction if choice.rank_fraction is not None else max(RANK_CANDIDATES),
            "rank_target_met": choice.rank_fraction is not None,
            "rank_target": target,
            "rank_scores": {f"{k:.4g}": v for k, v in choice.scores.items()},
            "ranks": {layer.name: layer.rank for layer in layers},
            "kept_energy": kept,
        }
        return factorized.model.eval(), factorized.model, fields


class Distill(Compressed):
    name = "distill"
    measured_flops = True

    def prepare_flops(self, ctx):  # two students (with and without teacher), and the teacher's forwards
        steps = reference_budget(ctx).steps
        return 2 * _train_flops(ctx, student_workload(ctx), steps) + _train_flops(ctx, ctx.workload, steps) / 3

    def compress(self, ctx, reference):
        from .compress import hinton_loss
        from .compress.distill import SETTINGS

        w = ctx.workload
        student_ctx = dataclasses.replace(ctx, workload=student_workload(ctx))
        steps = reference_budget(ctx).steps
        task = task_for(w, ctx.data_dir)
        temperature, alpha = SETTINGS[w.accuracy_task]

        def distilled(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """Hinton's loss on the scored logits: per image, or per token of the text task."""
            with torch.no_grad():
                teacher, _ = task.scored_logits(reference(x), y)
            student, targets = task.scored_logits(model(x), y)
            return hinton_loss(student, teacher, targets, temperature, alpha)

        torch.manual_seed(ctx.seed)
        student = student_ctx.workload.build_model().to(ctx.device)
        fine_tune(student_ctx, student, steps, distilled)
        torch.manual_seed(ctx.seed)
        alone = student_ctx.workload.build_model().to(ctx.device)
        fine_tune(student_ctx, alone, steps)
        fields = {
            "student_params": count_params(student),
            "teacher_params": count_params(reference),
            "distill_temperature": temperature,
            "distill_alpha": alpha,
            "distill_steps": steps,
            "accuracy_no_teacher": accuracy.evaluate(ctx, inference(alone))["accuracy"],
        }
        return student, student, fields
