"""Confidence, histogram and mask: one definition, and the histogram agrees with it exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mess_ros.model import (
    CONFIDENCE_BINS,
    class_confidence_histogram,
    confidence_histogram,
    confident_share,
    logits_to_mask,
    threshold_bin,
    top1_probability,
)


def two_class_logits(probabilities: list[float]) -> torch.Tensor:
    """(1, 2, 1, P) logits whose top-1 probabilities are (close to) the given values."""
    margins = torch.tensor([math.log(p / (1.0 - p)) if p < 1 else 100.0 for p in probabilities])
    return torch.stack([torch.zeros_like(margins), margins]).view(1, 2, 1, -1)


def test_top1_probability_is_max_softmax_in_float32() -> None:
    logits = torch.randn(2, 4, 3, 5)
    expected = torch.softmax(logits, dim=1).max(dim=1).values
    torch.testing.assert_close(top1_probability(logits), expected)
    half = top1_probability(logits.half())
    assert half.dtype == torch.float32 and half.shape == (2, 3, 5)


def test_confident_share_counts_pixels_at_or_above_threshold() -> None:
    logits = torch.cat([two_class_logits([0.55, 0.7, 0.9, 0.99]), two_class_logits([0.6] * 4)])
    share = confident_share(logits, 0.65)
    torch.testing.assert_close(share, torch.tensor([0.75, 0.0]))
    assert confident_share(logits, 0.0).tolist() == [1.0, 1.0]


def test_logits_to_mask_upsamples_once_then_argmax() -> None:
    logits = torch.randn(2, 3, 5, 9)
    mask = logits_to_mask(logits, (17, 33))
    expected = F.interpolate(logits, size=(17, 33), mode="bilinear", align_corners=False)
    assert mask.dtype == torch.int64 and mask.shape == (2, 17, 33)
    assert torch.equal(mask, expected.argmax(dim=1))
    assert torch.equal(logits_to_mask(logits, (5, 9)), logits.argmax(dim=1))


def test_histogram_bins_and_totals() -> None:
    logits = torch.cat([two_class_logits([0.5, 0.504, 0.75, 1.0]), two_class_logits([0.999] * 4)])
    hist = confidence_histogram(logits)
    assert hist.dtype == torch.int64 and hist.shape == (2, CONFIDENCE_BINS)
    assert hist.sum(dim=1).tolist() == [4, 4]
    assert hist[0, 50] == 2 and hist[0, 75] == 1
    assert hist[0, CONFIDENCE_BINS - 1] == 1, "probability 1 lands in the last bin"
    assert hist[1, CONFIDENCE_BINS - 1] == 4


def test_histogram_share_equals_confident_share_on_the_grid() -> None:
    """Probabilities straddling every bin edge by an ulp must not flip between the two views."""
    edges = [k / CONFIDENCE_BINS for k in range(51, CONFIDENCE_BINS)]
    probabilities = [p for e in edges for p in (e, math.nextafter(e, 0), math.nextafter(e, 1))]
    logits = torch.cat([two_class_logits(probabilities), torch.randn(1, 2, 1, len(probabilities))])
    hist = confidence_histogram(logits)
    for k in range(CONFIDENCE_BINS):
        threshold = k / CONFIDENCE_BINS
        assert threshold_bin(threshold) == k
        from_hist = hist[:, k:].sum(dim=1).double() / hist.sum(dim=1).double()
        direct = confident_share(logits, threshold).double()
        torch.testing.assert_close(from_hist, direct, rtol=0, atol=1e-7, msg=f"threshold {k}")


@pytest.mark.parametrize(
    ("threshold", "expected"), [(-1.0, 0), (0.0, 0), (0.005, 1), (0.5, 50), (0.505, 51), (1.0, 100)]
)
def test_threshold_bin_rounds_up_off_the_grid(threshold: float, expected: int) -> None:
    assert threshold_bin(threshold) == expected


def test_class_histogram_splits_pixels_by_top1_class_and_probability() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 7) * 3
    hist = class_confidence_histogram(logits, bins=20)
    assert hist.shape == (2, 4, 20) and hist.dtype == torch.int64
    label = torch.softmax(logits, dim=1).argmax(dim=1)
    for c in range(4):
        assert (hist[:, c].sum(dim=1) == (label == c).flatten(1).sum(dim=1)).all()
    # Summed over classes and read at a grid threshold, it gives the confident share.
    for k in range(20):
        share = hist[:, :, k:].sum(dim=(1, 2)).float() / 35
        assert torch.equal(share, confident_share(logits, k / 20))
