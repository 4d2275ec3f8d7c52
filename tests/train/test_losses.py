"""Losses: exit weighting, ignore label, and the positive filter of the distillation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mess_ros.train.losses import (
    cross_entropy,
    exit_losses,
    positive_filter_mask,
    positive_filtering_distillation,
)


def one_hot_logits(classes: torch.Tensor, num_classes: int, scale: float = 5.0) -> torch.Tensor:
    """(1, C, H, W) logits that predict ``classes`` (H, W) with a given sharpness."""
    return F.one_hot(classes, num_classes).permute(2, 0, 1)[None].float() * scale


def test_cross_entropy_upsamples_logits_to_the_label_size_and_skips_ignored_pixels() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 4, 8)
    target = torch.randint(0, 4, (2, 16, 32))
    target[:, :8] = 255
    expected = F.cross_entropy(
        F.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False),
        target,
        ignore_index=255,
    )
    assert torch.allclose(cross_entropy(logits, target), expected)
    # Changing logits only where every label is ignored changes nothing.
    changed = logits.clone()
    changed[:, 0, :1] += 100.0  # top rows map only to ignored (top half) label rows
    assert torch.allclose(cross_entropy(changed, target), expected, atol=1e-6)


def test_exit_losses_weight_each_exit() -> None:
    torch.manual_seed(1)
    target = torch.randint(0, 3, (1, 8, 8))
    logits = {
        "a": torch.randn(1, 3, 4, 4),
        "final": torch.randn(1, 3, 8, 8),
        "b": torch.randn(1, 3, 2, 2),
    }
    total, _ = exit_losses(logits, target, {"a": 0.25, "final": 1.0}, {}, "final", 2.0)
    expected = 0.25 * cross_entropy(logits["a"], target) + cross_entropy(logits["final"], target)
    assert torch.allclose(total, expected)
    # "b" has no weight: not part of the loss.
    changed = {**logits, "b": logits["b"] + 10.0}
    same, _ = exit_losses(changed, target, {"a": 0.25, "final": 1.0}, {}, "final", 2.0)
    assert torch.equal(same, total)


def test_positive_filter_mask_covers_exactly_the_teacher_correct_pixels() -> None:
    target = torch.tensor([[0, 1, 2], [2, 255, 1]])
    teacher_classes = torch.tensor([[0, 2, 2], [1, 0, 1]])
    mask = positive_filter_mask(one_hot_logits(teacher_classes, 3), target[None])
    expected = torch.tensor([[True, False, True], [False, False, True]])
    assert torch.equal(mask[0], expected)


def test_distillation_ignores_pixels_the_teacher_gets_wrong() -> None:
    torch.manual_seed(2)
    target = torch.tensor([[[0, 1, 2, 1]]])  # (1, 1, 4)
    teacher_classes = torch.tensor([[0, 2, 2, 1]])  # wrong on pixel 1
    teacher = one_hot_logits(teacher_classes, 3, scale=2.0)
    student = torch.randn(1, 3, 1, 4)
    loss = positive_filtering_distillation(student, teacher, target, temperature=2.0)

    # Reference: KL(teacher_T || student_T) * T^2 averaged over pixels 0, 2, 3 only.
    t = 2.0
    p_teacher = F.softmax(teacher / t, dim=1)
    kl = (p_teacher * (F.log_softmax(teacher / t, 1) - F.log_softmax(student / t, 1))).sum(1)
    expected = kl[0, 0, [0, 2, 3]].mean() * t * t
    assert torch.allclose(loss, expected)

    # Whatever the student does on the wrongly classified pixel, the loss is the same.
    perturbed = student.clone()
    perturbed[..., 1] += torch.tensor([9.0, -9.0, 3.0]).view(1, 3, 1)
    same = positive_filtering_distillation(perturbed, teacher, target, temperature=2.0)
    assert torch.allclose(same, loss)
    # ...but it does change on a correctly classified one.
    perturbed[..., 0] += torch.tensor([9.0, -9.0, 3.0]).view(1, 3, 1)
    assert not torch.allclose(
        positive_filtering_distillation(perturbed, teacher, target, 2.0), loss
    )


def test_distillation_is_zero_when_the_student_matches_the_teacher() -> None:
    target = torch.tensor([[[0, 1], [1, 0]]])
    teacher = one_hot_logits(target[0], 2)
    loss = positive_filtering_distillation(teacher.clone(), teacher, target, temperature=3.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_distillation_without_positive_pixels_is_a_differentiable_zero() -> None:
    target = torch.tensor([[[1, 1]]])
    teacher = one_hot_logits(torch.tensor([[0, 0]]), 2)
    student = torch.randn(1, 2, 1, 2, requires_grad=True)
    loss = positive_filtering_distillation(student, teacher, target, temperature=1.0)
    loss.backward()
    assert loss.item() == 0.0
    assert student.grad is not None and float(student.grad.abs().sum()) == 0.0


def test_distillation_gradient_reaches_only_the_student() -> None:
    target = torch.tensor([[[0, 1, 1, 0]]])
    teacher = one_hot_logits(target[0], 2).requires_grad_(True)
    student = torch.tensor([[[[0.3, -0.2]], [[0.1, 0.4]]]], requires_grad=True)  # upsampled
    _, total = exit_losses(
        {"s": student, "final": teacher}, target, {}, {"s": 0.5}, "final", temperature=2.0
    )
    total.backward()
    assert teacher.grad is None
    assert student.grad is not None and float(student.grad.abs().sum()) > 0
    alone = positive_filtering_distillation(student.detach(), teacher.detach(), target, 2.0)
    assert torch.allclose(total, 0.5 * alone)
    assert math.isfinite(total.item())


def test_distillation_rejects_a_non_positive_temperature() -> None:
    logits = torch.zeros(1, 2, 2, 2)
    with pytest.raises(ValueError, match="temperature"):
        positive_filtering_distillation(logits, logits, torch.zeros(1, 2, 2, dtype=torch.long), 0.0)


def test_exit_losses_equal_the_separate_terms() -> None:
    torch.manual_seed(3)
    target = torch.randint(0, 4, (2, 16, 16))
    target[0, :3] = 255
    logits = {
        "a": torch.randn(2, 4, 4, 4),
        "b": torch.randn(2, 4, 8, 8),
        "final": torch.randn(2, 4, 2, 2) * 3,
    }
    ce_weights = {"a": 0.5, "b": 1.0}
    distill_weights = {"b": 2.0, "a": 0.25}
    ce, distill = exit_losses(logits, target, ce_weights, distill_weights, "final", 2.0)
    expected_ce = sum(w * cross_entropy(logits[e], target) for e, w in ce_weights.items())
    expected_kd = sum(
        w * positive_filtering_distillation(logits[e], logits["final"], target, 2.0)
        for e, w in distill_weights.items()
    )
    assert torch.allclose(ce, expected_ce) and torch.allclose(distill, expected_kd)
    _, none = exit_losses(logits, target, ce_weights, {}, "final", 2.0)
    assert none.item() == 0.0
