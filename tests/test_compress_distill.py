"""Distillation: Hinton's loss against a hand computation, its T^2 scaling, and students of every family and
size at no more than half the teacher's parameters."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from workloads import FAMILIES
from workloads.compress import hinton_loss, student_config
from workloads.compress.distill import ALIGN, ALPHA, TEMPERATURE


def hand_hinton(s: torch.Tensor, t: torch.Tensor, y: torch.Tensor, T: float, a: float) -> float:
    """KL(p_t || p_s) per sample, averaged, times T^2; cross-entropy of the raw logits."""
    kl_sum, ce_sum = 0.0, 0.0
    for i in range(s.shape[0]):
        ps = [math.exp(v / T) for v in s[i].tolist()]
        pt = [math.exp(v / T) for v in t[i].tolist()]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        kl_sum += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
        raw = [math.exp(v) for v in s[i].tolist()]
        ce_sum += -math.log(raw[int(y[i])] / sum(raw))
    n = s.shape[0]
    return a * T * T * kl_sum / n + (1 - a) * ce_sum / n


def test_hinton_loss_matches_hand_computation():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 10, generator=gen) * 3, torch.randn(5, 10, generator=gen) * 3
    y = torch.randint(0, 10, (5,), generator=gen)
    for T, a in [(TEMPERATURE, ALPHA), (1.0, 0.5), (2.0, 0.25)]:
        assert float(hinton_loss(s, t, y, T, a)) == pytest.approx(hand_hinton(s, t, y, T, a), rel=1e-5)


def test_kd_term_is_zero_when_student_equals_teacher():
    logits = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert float(hinton_loss(logits, logits, y, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert float(hinton_loss(logits, logits, y, alpha=0.3)) == pytest.approx(0.7 * float(ce), rel=1e-5)


def test_soft_term_scales_with_t_squared():
    """The T^2 factor: at high T the KL of softened outputs falls as 1/T^2, so T^2 * KL tends to a constant."""
    s, t = torch.randn(16, 10) * 0.5, torch.randn(16, 10) * 0.5
    y = torch.zeros(16, dtype=torch.long)
    kd = [float(hinton_loss(s, t, y, temperature=T, alpha=1.0)) for T in (20.0, 40.0)]
    assert kd[0] == pytest.approx(kd[1], rel=0.01)
    kl = torch.nn.functional.kl_div(s.log_softmax(-1), t.log_softmax(-1), reduction="batchmean", log_target=True)
    raw = float(kl)
    one = float(hinton_loss(s, t, y, temperature=1.0, alpha=1.0))
    assert one == pytest.approx(raw, rel=1e-5)


def test_teacher_gets_no_gradient():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    hinton_loss(s, t, torch.zeros(4, dtype=torch.long)).backward()
    assert s.grad is not None and t.grad is None


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("size", ["xs", "s", "m"])
def test_student_at_most_half_the_teacher(family, size):
    cfg = FAMILIES[family].Config.from_size(size)
    student = student_config(family, cfg)
    assert type(student) is type(cfg) and student != cfg
    assert student.n_params() <= 0.5 * cfg.n_params()
    assert student.n_params() >= 0.4 * cfg.n_params()  # the widest that fits, not one halving (a quarter)


def test_student_keeps_depth_and_heads_with_narrower_heads():
    cfg = FAMILIES["transformer"].Config.from_size("m")  # d 384, 6 heads
    student = student_config("transformer", cfg)
    step = math.lcm(6, ALIGN)  # a multiple of the head count on the vector kernels' grid
    assert (student.n_layer, student.n_head) == (6, 6) and student.d_model % step == 0
    # the next such width up would pass half the teacher's parameters
    wider = dataclasses.replace(student, d_model=student.d_model + step)
    assert wider.n_params() > 0.5 * cfg.n_params() >= student.n_params()


def test_student_config_refuses_a_ratio_no_width_meets():
    cfg = FAMILIES["transformer"].Config.from_size("xs")  # embeddings alone pass 1% at any width
    with pytest.raises(ValueError, match="cannot narrow"):
        student_config("transformer", cfg, max_ratio=0.001)


def test_student_config_refuses_unknown_family():
    with pytest.raises(ValueError, match="allowed: dense, cnn, transformer"):
        student_config("rnn", FAMILIES["dense"].Config.from_size("xs"))
