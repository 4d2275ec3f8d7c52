"""Losses of the two training stages.

Exit logits come out of the network at the exit's own resolution (input /
stride). Losses are computed at the *label* resolution: logits are upsampled
bilinearly (``align_corners=False``) to the mask size. This is the same
operation :func:`mess_ros.model.outputs.logits_to_mask` applies at inference,
so training optimises exactly the mask that is later measured; downsampling
labels instead would need a nearest/majority rule that erases thin objects and
gives every exit a different target.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def upsample_to(logits: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """Bilinearly resize ``(N, C, h, w)`` logits to ``size_hw`` (no-op when equal)."""
    if tuple(logits.shape[-2:]) == tuple(size_hw):
        return logits
    return F.interpolate(logits, size=size_hw, mode="bilinear", align_corners=False)


def cross_entropy(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Pixel-wise cross-entropy of exit-resolution logits against an ``(N, H, W)`` mask.

    Computed in float32 even under autocast: the log-softmax of low-precision
    logits loses the small probabilities the loss is made of.
    """
    size_hw = (int(target.shape[-2]), int(target.shape[-1]))
    full = upsample_to(logits.float(), size_hw)
    return F.cross_entropy(full, target, ignore_index=ignore_index)


def positive_filter_mask(
    teacher_logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Pixels (``(N, H, W)`` bool) where the teacher's prediction equals the ground truth.

    These are the only pixels whose soft predictions are worth imitating: on
    the others the teacher is wrong and distilling would teach its mistakes.
    Ignored pixels are never positive.
    """
    size_hw = (int(target.shape[-2]), int(target.shape[-1]))
    prediction = upsample_to(teacher_logits.float(), size_hw).max(dim=1).indices
    return (prediction == target) & (target != ignore_index)


def positive_filtering_distillation(
    student_logits: Tensor,
    teacher_logits: Tensor,
    target: Tensor,
    temperature: float,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """KL(teacher_T || student_T) * T^2, averaged over the positive-filter pixels only.

    Both logits are brought to the label resolution, softened by the
    temperature T and compared per pixel; the T^2 factor keeps the gradient
    scale independent of T (Hinton et al.). The teacher is detached: it is the
    frozen final exit. With no positive pixel in the batch the loss is an exact
    zero that still belongs to the student's graph, so backward stays valid.
    """
    teacher = _Teacher(teacher_logits, target, temperature, ignore_index)
    return teacher.distill(student_logits)


def exit_losses(
    logits: Mapping[str, Tensor],
    target: Tensor,
    ce_weights: Mapping[str, float],
    distill_weights: Mapping[str, float],
    teacher_id: str,
    temperature: float,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """Weighted cross-entropy and weighted distillation of a whole stage, in one pass.

    The sum over ``ce_weights`` of :func:`cross_entropy` and over
    ``distill_weights`` of :func:`positive_filtering_distillation` from the
    ``teacher_id`` exit, but every exit's logits are upsampled once and shared
    by both terms, and the teacher's soft targets are computed once for all
    students: with a pool of dozens of heads, label-resolution losses are most
    of the cost of a stage-2 step. Exits without a weight add nothing.
    Returns ``(ce_total, distill_total)``; a term with no weighted exit is an
    exact zero.
    """
    size_hw = (int(target.shape[-2]), int(target.shape[-1]))
    teacher = (
        _Teacher(logits[teacher_id], target, temperature, ignore_index) if distill_weights else None
    )
    ce_total = torch.zeros((), device=target.device)
    distill_total = torch.zeros((), device=target.device)
    for exit_id in dict.fromkeys([*ce_weights, *distill_weights]):
        full = upsample_to(logits[exit_id].float(), size_hw)
        if exit_id in ce_weights:
            loss = F.cross_entropy(full, target, ignore_index=ignore_index)
            ce_total = ce_total + ce_weights[exit_id] * loss
        if teacher is not None and exit_id in distill_weights:
            distill_total = distill_total + distill_weights[exit_id] * teacher.distill(full)
    return ce_total, distill_total


class _Teacher:
    """The teacher's label-resolution soft targets and positive mask, computed once.

    KL(p || q) = sum p log p - sum p log q; the first sum depends on the
    teacher only, so it is computed once for all students.
    """

    def __init__(
        self, teacher_logits: Tensor, target: Tensor, temperature: float, ignore_index: int
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"distillation temperature must be > 0, got {temperature}")
        self.size_hw = (int(target.shape[-2]), int(target.shape[-1]))
        self.temperature = temperature
        teacher = upsample_to(teacher_logits.detach().float(), self.size_hw)
        self.mask = positive_filter_mask(teacher, target, ignore_index)
        self.any_positive = bool(self.mask.any())
        log_p = F.log_softmax(teacher / temperature, dim=1)
        self.p = log_p.exp()
        self.p_log_p = (self.p * log_p).sum(dim=1)

    def distill(self, student_logits: Tensor) -> Tensor:
        student = upsample_to(student_logits.float(), self.size_hw)
        if not self.any_positive:
            return student.sum() * 0.0
        student_log_p = F.log_softmax(student / self.temperature, dim=1)
        kl_per_pixel = self.p_log_p - (self.p * student_log_p).sum(dim=1)
        return kl_per_pixel[self.mask].mean() * (self.temperature**2)
