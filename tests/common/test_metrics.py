"""Metrics against hand-computed values and the official Cityscapes definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mess_ros.common.metrics import confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from mess_ros.data.labels import CITYSCAPES_ID_TO_TRAIN_ID, cityscapes_id_to_train_id_lut

GT = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
PRED = np.array([[0, 1, 1, 1], [2, 0, 0, 2]], dtype=np.int64)


def test_hand_computed_case() -> None:
    conf = confusion_matrix(GT, PRED, num_classes=4)
    # Rows are ground truth, columns prediction; the ignored pixel (predicted 0) is not counted.
    expected = np.array([[1, 1, 0, 0], [0, 2, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(conf, expected)
    assert conf.dtype == np.int64
    iou = iou_per_class(conf)
    # class 0: TP 1, FP 1 (gt 2 -> 0), FN 1 (-> 1); class 1: TP 2, FP 1, FN 1; class 2: 1/(1+1+1)
    np.testing.assert_allclose(iou[:3], [1 / 3, 2 / 4, 1 / 3])
    assert math.isnan(iou[3])  # absent from ground truth and prediction: excluded
    assert mean_iou(conf) == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert pixel_accuracy(conf) == pytest.approx(4 / 7)


def test_class_predicted_but_absent_from_ground_truth_scores_zero_and_counts() -> None:
    gt = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 3], [1, 1]])
    conf = confusion_matrix(gt, pred, num_classes=4)
    iou = iou_per_class(conf)
    assert iou[3] == 0.0
    assert math.isnan(iou[2])
    assert mean_iou(conf) == pytest.approx((1 / 2 + 1 + 0) / 3)


def test_confusion_matrices_add_over_images() -> None:
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, (6, 7)) for _ in range(3)]
    preds = [rng.integers(0, 5, (6, 7)) for _ in range(3)]
    total = sum(confusion_matrix(g, p, 5) for g, p in zip(gts, preds, strict=True))
    joint = confusion_matrix(np.stack(gts), np.stack(preds), 5)
    np.testing.assert_array_equal(total, joint)


def test_empty_and_invalid_inputs() -> None:
    conf = confusion_matrix(np.full((2, 2), 255), np.zeros((2, 2), dtype=np.int64), 3)
    assert conf.sum() == 0
    assert math.isnan(mean_iou(conf))
    assert math.isnan(pixel_accuracy(conf))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2), dtype=int), np.zeros((2, 3), dtype=int), 3)
    with pytest.raises(ValueError, match=r"ground truth contains class ids \[7\]"):
        confusion_matrix(np.array([0, 7]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match=r"prediction contains class ids \[-1\]"):
        confusion_matrix(np.array([0, 1]), np.array([0, -1]), 3)
    with pytest.raises(ValueError, match="square"):
        iou_per_class(np.zeros((2, 3), dtype=np.int64))


# ----------------------------------------------------------------------------------------------
# Reference: cityscapesscripts/evaluation/evalPixelLevelSemanticLabeling.py, restated on labelIds.
# The confusion matrix runs over ALL label ids (0..33); a class's false positives only count
# rows of evaluated labels, its false negatives its whole row; IoU is NaN when TP+FP+FN = 0;
# the mean skips NaN.
_EVALUATED = sorted(CITYSCAPES_ID_TO_TRAIN_ID)


def _official_iou_by_label_id(gt_ids: np.ndarray, pred_ids: np.ndarray) -> dict[int, float]:
    conf = np.zeros((34, 34), dtype=np.int64)
    for g, p in zip(gt_ids.ravel(), pred_ids.ravel(), strict=True):
        conf[g, p] += 1
    scores: dict[int, float] = {}
    for label in _EVALUATED:
        tp = conf[label, label]
        fn = conf[label, :].sum() - tp
        not_ignored = [other for other in _EVALUATED if other != label]
        fp = conf[not_ignored, label].sum()
        denom = tp + fp + fn
        scores[label] = float("nan") if denom == 0 else tp / denom
    return scores


def test_agrees_with_the_official_cityscapes_evaluation_on_a_constructed_case() -> None:
    rng = np.random.default_rng(42)
    # Ground truth over every label id, including ids not evaluated (unlabeled, parking, ...).
    # Predictions only use evaluated ids, as a trainId model mapped back to ids would.
    # Some classes never occur (IoU NaN) and one occurs only in predictions (IoU 0).
    used_gt = [0, 4, 7, 8, 9, 11, 17, 21, 23, 24, 26, 33]
    used_pred = [7, 8, 11, 17, 21, 23, 24, 26, 28, 33]
    gt_ids = rng.choice(used_gt, size=(40, 50))
    pred_ids = np.where(rng.random((40, 50)) < 0.6, gt_ids, rng.choice(used_pred, size=(40, 50)))
    pred_ids = np.where(np.isin(pred_ids, _EVALUATED), pred_ids, 7)

    official = _official_iou_by_label_id(gt_ids, pred_ids)
    lut = cityscapes_id_to_train_id_lut()
    conf = confusion_matrix(lut[gt_ids], lut[pred_ids], num_classes=19)
    ours = iou_per_class(conf)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        expected = official[label_id]
        if math.isnan(expected):
            assert math.isnan(ours[train_id]), label_id
        else:
            assert ours[train_id] == pytest.approx(expected), label_id
    assert ours[CITYSCAPES_ID_TO_TRAIN_ID[28]] == 0.0  # bus: predicted only
    assert math.isnan(ours[CITYSCAPES_ID_TO_TRAIN_ID[12]])  # wall: nowhere
    valid = [s for s in official.values() if not math.isnan(s)]
    assert mean_iou(conf) == pytest.approx(sum(valid) / len(valid))
