"""The statistics every image is normalised with before it enters a network.

:func:`mess_ros.data.transforms.normalize_image` (the one preprocessing of
training, calibration and the engine) subtracts the ImageNet mean and divides
by its standard deviation. Weights trained with other statistics declare
theirs in their :class:`~mess_ros.model.backbones.BackboneSpec`, and the
backbone converts its input on entry. Both sides read these constants from
here, so that the model package does not import the data package.
"""

from __future__ import annotations

from typing import Final

IMAGENET_MEAN: Final[tuple[float, float, float]] = (0.485, 0.456, 0.406)
"""Per-channel mean of RGB values scaled to [0, 1] (torchvision's ImageNet statistics)."""

IMAGENET_STD: Final[tuple[float, float, float]] = (0.229, 0.224, 0.225)
"""Per-channel standard deviation of RGB values scaled to [0, 1]."""
