"""Segmentation metrics with the Cityscapes evaluation definitions.

Everything is derived from one confusion matrix accumulated over a whole set
(rows = ground truth, columns = prediction), as the official
``evalPixelLevelSemanticLabeling`` does:

* pixels whose ground truth is the ignore label are not counted at all, so a
  prediction on them is neither a false positive nor a true negative;
* IoU of class c = TP / (TP + FP + FN) over the whole set, not averaged per image;
* a class with TP + FP + FN = 0 (absent from ground truth and never predicted)
  has no IoU (NaN) and is left out of the mean; a class that is predicted but
  absent from ground truth scores 0 and counts.

Confusion matrices add, which is what lets the calibration cache store one per
image and exit and recompute the accuracy of any exit configuration exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

ConfusionMatrix = npt.NDArray[np.int64]


def confusion_matrix(
    gt: npt.NDArray[np.integer[Any]],
    pred: npt.NDArray[np.integer[Any]],
    num_classes: int,
    ignore_index: int = 255,
) -> ConfusionMatrix:
    """(C, C) int64 counts with rows = ground truth class, columns = predicted class.

    Ground truth outside ``[0, num_classes)`` other than ``ignore_index``, or a
    prediction outside it, is a ValueError rather than silently dropped: it
    means the mask and the model disagree about the label set.
    """
    if gt.shape != pred.shape:
        raise ValueError(
            f"ground truth shape {gt.shape} differs from prediction shape {pred.shape}"
        )
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    gt_flat = gt.reshape(-1).astype(np.int64, copy=False)
    pred_flat = pred.reshape(-1).astype(np.int64, copy=False)
    valid = gt_flat != ignore_index
    gt_valid = gt_flat[valid]
    pred_valid = pred_flat[valid]
    _check_range(gt_valid, num_classes, "ground truth", ignore_index)
    _check_range(pred_valid, num_classes, "prediction", None)
    counts = np.bincount(gt_valid * num_classes + pred_valid, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _check_range(
    values: npt.NDArray[np.int64], num_classes: int, what: str, ignore_index: int | None
) -> None:
    if values.size == 0:
        return
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= num_classes:
        bad = np.unique(values[(values < 0) | (values >= num_classes)])[:10].tolist()
        allowed = f"0..{num_classes - 1}"
        if ignore_index is not None:
            allowed += f" or the ignore label {ignore_index}"
        raise ValueError(f"{what} contains class ids {bad}; expected {allowed}")


def iou_per_class(conf: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.float64]:
    """IoU of every class; NaN where the class is absent from ground truth and prediction."""
    conf64 = _square(conf)
    tp = np.diag(conf64).astype(np.float64)
    fp = conf64.sum(axis=0) - tp
    fn = conf64.sum(axis=1) - tp
    denom = tp + fp + fn
    iou = np.full(conf64.shape[0], np.nan, dtype=np.float64)
    present = denom > 0
    iou[present] = tp[present] / denom[present]
    return iou


def mean_iou(conf: npt.NDArray[np.integer[Any]]) -> float:
    """Mean over the classes that have an IoU; NaN when no class does (empty matrix)."""
    iou = iou_per_class(conf)
    present = ~np.isnan(iou)
    if not present.any():
        return float("nan")
    return float(iou[present].mean())


def per_image_miou(confusion: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.float64]:
    """:func:`mean_iou` of every matrix of a ``[..., C, C]`` stack at once (NaN where empty).

    What "as good as the final exit on this image" is judged by: the learnt
    exit decision's training target and the per-image oracle.
    """
    conf = np.asarray(confusion, dtype=np.int64)
    tp = np.diagonal(conf, axis1=-2, axis2=-1).astype(np.float64)
    union = conf.sum(axis=-1) + conf.sum(axis=-2) - tp
    present = union > 0
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=present)
    count = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, iou.sum(axis=-1) / count, np.nan), dtype=np.float64)


def pixel_accuracy(conf: npt.NDArray[np.integer[Any]]) -> float:
    """Share of non-ignored pixels classified correctly; NaN when no pixel was counted."""
    conf64 = _square(conf)
    total = int(conf64.sum())
    if total == 0:
        return float("nan")
    return float(np.trace(conf64)) / total


def _square(conf: npt.NDArray[np.integer[Any]]) -> ConfusionMatrix:
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"a confusion matrix must be square (C, C), got shape {conf.shape}")
    return conf.astype(np.int64, copy=False)
