"""Label sets: class names and display colours, stored with every checkpoint.

A checkpoint carries its :class:`LabelSet` (via :meth:`LabelSet.to_dict`) so that
the node, the evaluation reports and the colour mask topic never depend on a
table that could drift from the one the weights were trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from mess_ros.data.errors import DataError
from mess_ros.registry import Registry

RGB = tuple[int, int, int]

#: Masks are uint8, so at most 255 classes fit beside the ignore value.
MAX_CLASSES = 255


@dataclass(frozen=True)
class LabelSet:
    """Names and colours of the classes a model predicts.

    Class ids are positions in ``class_names``; ``ignore_index`` marks pixels
    that carry no label (excluded from losses and metrics) and must lie
    outside ``[0, num_classes)`` so it can never be confused with a class.
    """

    name: str
    class_names: tuple[str, ...]
    colors: tuple[RGB, ...]
    ignore_index: int = 255

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.class_names:
            problems.append("it has no classes")
        if len(self.class_names) > MAX_CLASSES:
            problems.append(f"{len(self.class_names)} classes exceed the uint8 mask limit of 255")
        if len(set(self.class_names)) != len(self.class_names):
            problems.append(f"class names are not unique: {list(self.class_names)}")
        if len(self.colors) != len(self.class_names):
            problems.append(
                f"{len(self.colors)} colours for {len(self.class_names)} classes (need one each)"
            )
        for color in self.colors:
            if len(color) != 3 or any(not 0 <= int(c) <= 255 for c in color):
                problems.append(f"colour {color!r} is not an RGB triple in 0..255")
        if not len(self.class_names) <= self.ignore_index <= 255:
            problems.append(
                f"ignore_index {self.ignore_index} must be in [num_classes, 255] "
                f"= [{len(self.class_names)}, 255]"
            )
        if problems:
            raise DataError(f"invalid label set {self.name!r}: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def colorize(self, mask: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.uint8]:
        """Map a class-id mask to an RGB image for display.

        The ignore label and any id outside the set become black, so a
        visualisation never fails on a partially labelled or corrupt mask.
        """
        if mask.ndim != 2:
            raise DataError(f"colorize expects an HxW mask, got shape {mask.shape}")
        palette = np.zeros((256, 3), dtype=np.uint8)
        palette[: self.num_classes] = np.asarray(self.colors, dtype=np.uint8)
        if mask.dtype == np.uint8:
            ids = mask
        else:
            # Wider ids (int64 predictions) would alias when cast; send out-of-range ones to black.
            in_range = (mask >= 0) & (mask < self.num_classes)
            ids = np.where(in_range, mask, 255).astype(np.uint8)
        colored: npt.NDArray[np.uint8] = palette[ids]
        return colored

    def hex_colors(self) -> list[str]:
        """The colours as ``#rrggbb`` strings, the form visualisers and style sheets take."""
        return [f"#{r:02x}{g:02x}{b:02x}" for r, g, b in self.colors]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (lists, not tuples) for checkpoints and reports."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "colors": [list(c) for c in self.colors],
            "ignore_index": self.ignore_index,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSet:
        """Inverse of :meth:`to_dict`; raises :class:`DataError` naming what is missing."""
        if not isinstance(data, Mapping):
            raise DataError(f"a label set description must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("name", "class_names", "colors") if k not in data]
        if missing:
            raise DataError(
                f"label set description lacks {missing}; expected keys name, class_names, "
                f"colors and optionally ignore_index, got {sorted(data)}"
            )
        try:
            colors = tuple(_rgb(c) for c in data["colors"])
            return cls(
                name=str(data["name"]),
                class_names=tuple(str(n) for n in data["class_names"]),
                colors=colors,
                ignore_index=int(data.get("ignore_index", 255)),
            )
        except (TypeError, ValueError) as err:
            raise DataError(f"malformed label set description {dict(data)!r}: {err}") from err


def overlay(
    image: npt.NDArray[np.uint8], colored: npt.NDArray[np.uint8], alpha: float
) -> npt.NDArray[np.uint8]:
    """``image`` with a colour mask of its size laid over it, for people to look at.

    ``(1 - alpha) * image + alpha * colored``, rounded to the nearest
    integer: ``alpha`` 0 gives the image, 1 the colour mask.
    """
    if image.shape != colored.shape:
        raise DataError(
            f"an overlay needs an image and a colour mask of one size, got {image.shape} and "
            f"{colored.shape}"
        )
    # OpenCV refuses views with negative strides (a bgr8 frame read as RGB is one).
    pixels = np.ascontiguousarray(image)
    blended = cv2.addWeighted(pixels, 1.0 - alpha, colored, alpha, 0.0)
    return np.asarray(blended, dtype=np.uint8)  # OpenCV's typing widens its uint8 result


def _rgb(value: Sequence[Any]) -> RGB:
    r, g, b = (int(v) for v in value)
    return (r, g, b)


# The synthetic robot-camera world (see mess_ros.data.synthetic). Colours are
# chosen to be told apart at a glance in the colour mask topic.
SYNTHETIC_LABELS = LabelSet(
    name="synthetic",
    class_names=(
        "road",
        "terrain",
        "vegetation",
        "building",
        "sky",
        "person",
        "vehicle",
        "obstacle",
        "pole",
    ),
    colors=(
        (128, 64, 128),
        (152, 251, 152),
        (107, 142, 35),
        (70, 70, 70),
        (70, 130, 180),
        (220, 20, 60),
        (0, 0, 142),
        (255, 160, 0),
        (153, 153, 153),
    ),
)

# Official Cityscapes trainId table (cityscapesscripts/helpers/labels.py):
# trainIds 0..18 in order, with the official names and colours.
CITYSCAPES_LABELS = LabelSet(
    name="cityscapes",
    class_names=(
        "road",
        "sidewalk",
        "building",
        "wall",
        "fence",
        "pole",
        "traffic light",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "rider",
        "car",
        "truck",
        "bus",
        "train",
        "motorcycle",
        "bicycle",
    ),
    colors=(
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ),
)

#: Official Cityscapes labelId -> trainId for the ids that are evaluated; every
#: other labelId (unlabeled, ego vehicle, parking, guard rail, ...) maps to 255.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}


def cityscapes_id_to_train_id_lut() -> npt.NDArray[np.uint8]:
    """256-entry lookup table turning a labelIds mask into a trainIds mask in one indexing."""
    lut = np.full(256, CITYSCAPES_LABELS.ignore_index, dtype=np.uint8)
    for label_id, train_id in CITYSCAPES_ID_TO_TRAIN_ID.items():
        lut[label_id] = train_id
    return lut


LABEL_SETS: Registry[LabelSet] = Registry("label set", DataError)
LABEL_SETS.register(SYNTHETIC_LABELS.name)(SYNTHETIC_LABELS)
LABEL_SETS.register(CITYSCAPES_LABELS.name)(CITYSCAPES_LABELS)


def get_label_set(name: str) -> LabelSet:
    """Registered label set by name; the error lists the valid names."""
    return LABEL_SETS.get(name)
