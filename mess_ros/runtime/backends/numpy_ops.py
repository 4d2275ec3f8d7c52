"""The confidence and histogram of :mod:`mess_ros.model.outputs` on numpy arrays.

Backends that hand back numpy logits (ONNX Runtime) decide exits with these;
they compute the same numbers as the torch definitions (top-1 softmax
probability in float32, bins compared against the float32 edges ``k/bins``),
so that the calibration cache, the deployment search and every backend agree
on which exit a frame takes. They import numpy only (the histogram's bin
count comes from :data:`mess_ros.model.CLASS_CONFIDENCE_BINS` through the caller).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def top1(logits: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.intp]]:
    """(h, w) top-1 softmax probability (float32) and top-1 class of (1, C, h, w) logits.

    The top-1 probability is ``1 / sum(exp(l - max))``: the softmax's largest
    entry, without dividing every class.
    """
    values = np.asarray(logits[0], dtype=np.float32)
    label = values.argmax(axis=0)
    peak = np.take_along_axis(values, label[None], axis=0)
    total = np.exp(values - peak).sum(axis=0, dtype=np.float32)
    probability: npt.NDArray[np.float32] = (np.float32(1.0) / total).astype(np.float32)
    return probability, label


def confident_share(
    logits: npt.NDArray[np.floating],
    pixel_threshold: float,
    class_thresholds: npt.NDArray[np.float32] | None = None,
) -> float:
    """Share of pixels whose top-1 probability reaches the threshold (of their top-1 class)."""
    probability, label = top1(logits)
    if class_thresholds is None:
        confident = probability >= np.float32(pixel_threshold)
    else:
        confident = probability >= class_thresholds[label]
    return float(confident.mean())


def thresholds_array(values: Sequence[float]) -> npt.NDArray[np.float32]:
    """Per-class thresholds as the float32 array :func:`confident_share` indexes."""
    return np.asarray(values, dtype=np.float32)


def class_confidence_histogram(
    logits: npt.NDArray[np.floating], bins: int
) -> npt.NDArray[np.int64]:
    """(C, bins) pixels per top-1 class and top-1 probability bin of (1, C, h, w) logits."""
    probability, label = top1(logits)
    classes = int(logits.shape[1])
    edges = np.asarray([k / bins for k in range(1, bins)], dtype=np.float32)
    binned = np.searchsorted(edges, probability, side="right")
    counts = np.bincount((label * bins + binned).ravel(), minlength=classes * bins)
    histogram: npt.NDArray[np.int64] = counts.astype(np.int64).reshape(classes, bins)
    return histogram
