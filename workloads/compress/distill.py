"""Knowledge distillation: Hinton's loss and a student config of the teacher's family.

The training loop is the caller's: it computes the teacher's logits (no grad) and the student's, and
minimizes ``hinton_loss``. Report the same student trained without a teacher beside the distilled one: on
an easy task (digits) the teacher may not help (a 42x smaller student: 96.9% distilled, 97.3% alone).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..base import FamilyConfig

# Defaults of ``hinton_loss``. T = 4 softens a 10-class output enough that the teacher's ranking of the wrong
# classes carries signal without flattening it to uniform (Hinton et al. 2015 report T in 2..20, lower for
# smaller students). alpha = 0.9 weighs the teacher's soft targets most, as in the widely used
# knowledge-distillation-pytorch CIFAR-10 recipe; the T*T factor keeps that term's gradients at the scale
# of the hard-label term. The PyTorch tutorial uses T = 2 with 0.25/0.75 weights: these are starting
# points to sweep, not tuned values.
TEMPERATURE = 4.0
ALPHA = 0.9
# (temperature, alpha) per accuracy task. Text is next-byte prediction over 256 classes from a teacher
# that is right on 48% of bytes: its soft targets at T = 4 are near uniform, and weighed at 0.9 they
# drown the labels. A sweep on transformer-s at the standard budget (student 0.27x the parameters,
# 400 steps; next-byte accuracy on the test split, teacher 48.0%, the student without teacher 39.3%):
# T=4/a=0.9 34.3%, T=2/a=0.5 37.6%, T=1/a=0.2 39.9%, T=1/a=0.5 40.7%.
SETTINGS: dict[str, tuple[float, float]] = {"digits": (TEMPERATURE, ALPHA), "text": (1.0, 0.5)}
MAX_STUDENT_RATIO = 0.5


def hinton_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float = TEMPERATURE,
    alpha: float = ALPHA,
) -> torch.Tensor:
    """``alpha * T^2 * KL(p_teacher^T || p_student^T) + (1 - alpha) * CE(student, targets)``.

    Logits are (N, classes); the KL term is averaged over the batch (``reduction="batchmean"``, the
    mathematically correct mean of KL; ``"mean"`` would divide by the classes too) and compares
    log-probabilities on both sides (``log_target=True``). The teacher is detached.
    """
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    soft = F.kl_div(s, t, reduction="batchmean", log_target=True) * temperature * temperature
    hard = F.cross_entropy(student_logits.float(), targets)
    return alpha * soft + (1.0 - alpha) * hard


# Widths of 64 and more are rounded to multiples of ALIGN (a transformer's d_model to a multiple of
# its head count and of ALIGN): off-grid shapes miss the vectorized kernels. transformer-m's student
# at d_model 270 (6 heads of 45) ran its forward 39% slower than at 264, with 5% more parameters
# (batch 16 x 128 tokens, 2 threads, torch.utils.benchmark).
ALIGN = 8


def _scaled(width: int, scale: float, step: int = 1) -> int:
    step = math.lcm(step, ALIGN) if width >= 64 else step
    return step * max(1, round(width * scale / step))


def _scaled_dense(cfg, scale: float):
    return dataclasses.replace(cfg, width=_scaled(cfg.width, scale))


def _scaled_cnn(cfg, scale: float):
    stages = tuple((_scaled(c, scale), n) for c, n in cfg.stages)
    return dataclasses.replace(cfg, stages=stages, fc=tuple(_scaled(w, scale) for w in cfg.fc))


def _scaled_transformer(cfg, scale: float):
    # the head count is kept: d_model stays a multiple of it, each head narrower
    return dataclasses.replace(cfg, d_model=_scaled(cfg.d_model, scale, cfg.n_head))


# family -> its config with every width times ``scale`` (depth is kept: the student runs the same
# pipeline, only thinner)
SCALED: dict[str, Callable[[FamilyConfig, float], FamilyConfig]] = {
    "dense": _scaled_dense,
    "cnn": _scaled_cnn,
    "transformer": _scaled_transformer,
}


def student_config(family: str, cfg: FamilyConfig, max_ratio: float = MAX_STUDENT_RATIO) -> FamilyConfig:
    """The widest student of the teacher's family and depth with at most ``max_ratio`` of its parameters.

    Its widths are the teacher's times one scale (rounded: ``ALIGN``), the largest (to 1/1000, by
    bisection) whose model fits the ratio. Halving every width instead would leave a transformer or
    a dense net about a quarter of the teacher's parameters: on transformer-s that student ended
    7.3 points under its teacher.
    """
    if family not in SCALED:
        raise ValueError(f"student_config: unknown family {family!r}; allowed: {', '.join(SCALED)}")
    teacher = cfg.n_params()
    scaled = SCALED[family]
    lo, hi = 0.0, 1.0
    for _ in range(10):
        mid = (lo + hi) / 2
        if scaled(cfg, mid).n_params() <= max_ratio * teacher:
            lo = mid
        else:
            hi = mid
    student = scaled(cfg, lo)
    if student == cfg or student.n_params() > max_ratio * teacher:
        raise ValueError(f"{family}: cannot narrow {cfg} to {max_ratio} of its parameters")
    return student
