"""The unit every dataset yields: one RGB image with its class-id mask.

Kept in its own module so that the synthetic generator and the dataset classes
can both return it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Difficulty of a sample whose source does not grade it (real datasets).
UNKNOWN_DIFFICULTY = -1


@dataclass(frozen=True)
class Sample:
    """One labelled frame.

    ``image`` is HxWx3 uint8 RGB, ``mask`` HxW uint8 class ids with 255 for
    unlabelled pixels. ``difficulty`` is 0 easy, 1 medium, 2 hard for
    synthetic scenes and -1 where unknown; evaluation reports accuracy per
    level with it. ``name`` identifies the frame in reports and errors.
    """

    image: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8]
    difficulty: int
    name: str
