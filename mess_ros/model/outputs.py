"""The one definition of how exit logits become a mask and a confidence.

The engine decides online from these numbers, the calibration cache stores
them offline, and the deployment search predicts accuracy from the cache. If
any of them computed confidence or masks differently, the accuracy the search
promises would not be the accuracy the robot gets; so all of them call this
module.

Confidence is the per-pixel top-1 softmax probability at the exit's own
resolution (cheap, and what the paper thresholds). Only the logits of the
exit finally taken are upsampled to the frame size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

CONFIDENCE_BINS = 100
"""Bins of the top-1 probability histogram over [0, 1]."""

CLASS_CONFIDENCE_BINS = 20
"""Bins of the per-class top-1 probability histogram (steps of 0.05: per-class thresholds and
the learnt exit decision's features need the class, not a finer grid)."""


def _bin_edges(device: torch.device, bins: int = CONFIDENCE_BINS) -> Tensor:
    """Inner edges k/bins (k = 1..bins-1) as float32, exactly as a Python threshold converts.

    Binning by comparison against these values (rather than ``floor(p * BINS)``,
    which rounds in float32) makes ``p >= k / BINS`` equivalent to
    ``bin(p) >= k`` for every pixel, so shares read from the histogram equal
    :func:`confident_share` exactly at thresholds on the bin grid.
    """
    edges = [k / bins for k in range(1, bins)]
    return torch.tensor(edges, dtype=torch.float32, device=device)


def top1_probability(logits: Tensor) -> Tensor:
    """(N, h, w) maximum softmax probability of (N, C, h, w) logits, in float32.

    Computed in float32 whatever the logits' precision, so fp16 inference
    and fp32 calibration threshold the same numbers.
    """
    return top1(logits)[0]


def top1(logits: Tensor) -> tuple[Tensor, Tensor]:
    """(N, h, w) top-1 softmax probability (float32) and (N, h, w) top-1 class of the logits."""
    probability, label = torch.softmax(logits.float(), dim=1).max(dim=1)
    return probability, label


def confident_share(logits: Tensor, pixel_threshold: float) -> Tensor:
    """(N,) share of pixels whose top-1 probability is at least ``pixel_threshold``."""
    confident = top1_probability(logits) >= pixel_threshold
    return confident.flatten(1).float().mean(dim=1)


def logits_to_mask(logits: Tensor, size_hw: tuple[int, int]) -> Tensor:
    """(N, H, W) int64 class ids: one bilinear upsample of the logits, then argmax.

    Upsampling logits (not the mask) keeps boundaries smooth; doing it only
    for the exit taken keeps early exits cheap. ``max(dim=1).indices`` gives
    the same ids as ``argmax(dim=1)`` (first maximum on ties) but is several
    times faster on CPU for NCHW tensors, where this step would otherwise cost
    more than an early exit's head.
    """
    height, width = int(size_hw[0]), int(size_hw[1])
    if tuple(logits.shape[-2:]) != (height, width):
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
    return logits.max(dim=1).indices


def confidence_histogram(logits: Tensor) -> Tensor:
    """(N, CONFIDENCE_BINS) int64 counts of pixels per top-1 probability bin.

    Bin ``k`` holds ``k/BINS <= p < (k+1)/BINS``; probability 1 falls in the
    last bin. From it the confident share at any grid threshold follows
    without the logits (see :func:`threshold_bin`).
    """
    probability = top1_probability(logits)
    bins = torch.bucketize(probability, _bin_edges(probability.device), right=True)
    batch = probability.shape[0]
    offsets = torch.arange(batch, device=bins.device).view(batch, 1, 1) * CONFIDENCE_BINS
    counts = torch.bincount((bins + offsets).flatten(), minlength=batch * CONFIDENCE_BINS)
    return counts.view(batch, CONFIDENCE_BINS)


def class_confidence_histogram(logits: Tensor, bins: int = CLASS_CONFIDENCE_BINS) -> Tensor:
    """(N, C, bins) int64 counts of pixels per top-1 class and top-1 probability bin.

    Bins as in :func:`confidence_histogram` (``k/bins <= p < (k+1)/bins``), so
    the share of pixels passing per-class thresholds on the grid (a pixel
    passes when its probability reaches the threshold of its top-1 class)
    follows exactly, and so do the features of the learnt exit decision.
    """
    probability, label = top1(logits)
    batch, classes = int(logits.shape[0]), int(logits.shape[1])
    binned = torch.bucketize(probability, _bin_edges(probability.device, bins), right=True)
    offsets = torch.arange(batch, device=binned.device).view(batch, 1, 1) * (classes * bins)
    index = (label * bins + binned + offsets).flatten()
    counts = torch.bincount(index, minlength=batch * classes * bins)
    return counts.view(batch, classes, bins)


def threshold_bin(pixel_threshold: float) -> int:
    """First histogram bin whose pixels all pass ``pixel_threshold``.

    ``hist[..., threshold_bin(t):].sum(-1) / hist.sum(-1)`` is the confident
    share; it equals :func:`confident_share` exactly when ``t`` is a multiple
    of ``1 / CONFIDENCE_BINS``, and otherwise rounds ``t`` up to the grid
    (above the last inner edge that leaves no bin: the share reads 0).
    """
    if pixel_threshold <= 0.0:
        return 0
    edges = _bin_edges(torch.device("cpu"))
    # Number of inner edges strictly below the threshold, compared in float32 as the pixels are.
    threshold = torch.tensor([pixel_threshold], dtype=torch.float32)
    return int(torch.searchsorted(edges, threshold, right=False).item()) + 1
