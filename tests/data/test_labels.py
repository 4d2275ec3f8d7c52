"""Label sets: the synthetic and Cityscapes tables, colouring and serialisation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mess_ros.data.errors import DataError
from mess_ros.data.labels import (
    CITYSCAPES_ID_TO_TRAIN_ID,
    CITYSCAPES_LABELS,
    LABEL_SETS,
    SYNTHETIC_LABELS,
    LabelSet,
    cityscapes_id_to_train_id_lut,
    get_label_set,
)


def test_synthetic_label_set_describes_a_robot_scene() -> None:
    assert SYNTHETIC_LABELS.num_classes >= 8
    for name in ("road", "terrain", "vegetation", "building", "sky", "person", "vehicle", "pole"):
        assert name in SYNTHETIC_LABELS.class_names
    assert len(set(SYNTHETIC_LABELS.colors)) == SYNTHETIC_LABELS.num_classes
    assert SYNTHETIC_LABELS.ignore_index == 255


@pytest.mark.parametrize(
    ("train_id", "name", "color"),
    [
        (0, "road", (128, 64, 128)),
        (1, "sidewalk", (244, 35, 232)),
        (2, "building", (70, 70, 70)),
        (5, "pole", (153, 153, 153)),
        (6, "traffic light", (250, 170, 30)),
        (8, "vegetation", (107, 142, 35)),
        (9, "terrain", (152, 251, 152)),
        (10, "sky", (70, 130, 180)),
        (11, "person", (220, 20, 60)),
        (13, "car", (0, 0, 142)),
        (16, "train", (0, 80, 100)),
        (18, "bicycle", (119, 11, 32)),
    ],
)
def test_cityscapes_train_ids_match_the_official_table(
    train_id: int, name: str, color: tuple[int, int, int]
) -> None:
    assert CITYSCAPES_LABELS.num_classes == 19
    assert CITYSCAPES_LABELS.class_names[train_id] == name
    assert CITYSCAPES_LABELS.colors[train_id] == color


def test_cityscapes_id_to_train_id_mapping() -> None:
    lut = cityscapes_id_to_train_id_lut()
    assert lut.shape == (256,)
    assert lut[7] == 0  # road
    assert lut[8] == 1  # sidewalk
    assert lut[21] == 8  # vegetation
    assert lut[26] == 13  # car
    assert lut[33] == 18  # bicycle
    for ignored in (0, 1, 4, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 200, 255):
        assert lut[ignored] == 255, ignored
    assert sorted(CITYSCAPES_ID_TO_TRAIN_ID.values()) == list(range(19))


def test_colorize_uses_colours_and_blacks_out_ignore_and_unknown_ids() -> None:
    mask = np.array([[0, 1, 255], [8, 9, 200]], dtype=np.uint8)
    colored = SYNTHETIC_LABELS.colorize(mask)
    assert colored.shape == (2, 3, 3)
    assert colored.dtype == np.uint8
    assert tuple(colored[0, 0]) == SYNTHETIC_LABELS.colors[0]
    assert tuple(colored[1, 0]) == SYNTHETIC_LABELS.colors[8]
    for unknown in ((0, 2), (1, 1), (1, 2)):  # ignore, one past the last class, far past it
        assert tuple(colored[unknown]) == (0, 0, 0)
    wide = np.array([[1, -3, 300]], dtype=np.int64)
    np.testing.assert_array_equal(SYNTHETIC_LABELS.colorize(wide)[0, 1:], 0)
    assert tuple(SYNTHETIC_LABELS.colorize(wide)[0, 0]) == SYNTHETIC_LABELS.colors[1]
    with pytest.raises(DataError, match="HxW"):
        SYNTHETIC_LABELS.colorize(np.zeros((2, 2, 3), dtype=np.uint8))


def test_round_trip_through_json() -> None:
    for labels in (SYNTHETIC_LABELS, CITYSCAPES_LABELS):
        restored = LabelSet.from_dict(json.loads(json.dumps(labels.to_dict())))
        assert restored == labels


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_names": ("a", "b"), "colors": ((0, 0, 0),)}, "colours for 2 classes"),
        ({"class_names": ("a", "a"), "colors": ((0, 0, 0), (1, 1, 1))}, "not unique"),
        ({"class_names": ("a",), "colors": ((0, 0, 300),)}, "RGB triple"),
        (
            {"class_names": ("a", "b"), "colors": ((0, 0, 0), (1, 1, 1)), "ignore_index": 1},
            "ignore_index",
        ),
        ({"class_names": (), "colors": ()}, "no classes"),
    ],
)
def test_invalid_label_sets_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(DataError, match=message):
        LabelSet(name="bad", **kwargs)  # type: ignore[arg-type]


def test_from_dict_reports_missing_keys() -> None:
    with pytest.raises(DataError, match="lacks"):
        LabelSet.from_dict({"name": "x", "class_names": ["a"]})
    with pytest.raises(DataError, match="malformed"):
        LabelSet.from_dict({"name": "x", "class_names": ["a"], "colors": [[1, 2]]})


def test_registry_lookup() -> None:
    assert get_label_set("cityscapes") is CITYSCAPES_LABELS
    assert get_label_set("synthetic") is SYNTHETIC_LABELS
    assert {"cityscapes", "synthetic"} <= set(LABEL_SETS.names())
    with pytest.raises(DataError, match="valid names: cityscapes, synthetic"):
        get_label_set("ade20k")
