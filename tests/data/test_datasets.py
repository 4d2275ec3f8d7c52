"""Datasets: synthetic, image/mask folders, the Cityscapes layout, specs and the builder."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from mess_ros.data.datasets import (
    CityscapesDataset,
    DatasetSpec,
    FolderDataset,
    SyntheticDataset,
    build_dataset,
    verify_dataset,
)
from mess_ros.data.errors import DatasetError
from mess_ros.data.folder_writer import write_folder_dataset
from mess_ros.data.labels import CITYSCAPES_LABELS, SYNTHETIC_LABELS, LabelSet
from mess_ros.data.synthetic import HARD, SceneGenerator


def _write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def _write_gray(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), mask)


def _pair(seed: int, hw: tuple[int, int] = (8, 12)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    mask = rng.integers(0, SYNTHETIC_LABELS.num_classes, hw, dtype=np.uint8)
    mask[0, 0] = 255
    return image, mask


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for i, stem in enumerate(("b", "a", "c")):
        image, mask = _pair(i)
        _write_rgb(tmp_path / "images" / f"{stem}.png", image)
        _write_gray(tmp_path / "masks" / f"{stem}.png", mask)
    return tmp_path


# ------------------------------------------------------------------------------- synthetic
def test_synthetic_dataset_renders_the_generator_scenes() -> None:
    dataset = SyntheticDataset(num_images=4, height=32, width=64, seed=2, difficulty=HARD)
    assert len(dataset) == 4
    assert dataset.labels is SYNTHETIC_LABELS
    expected = SceneGenerator(32, 64, seed=2).render(3, HARD)
    np.testing.assert_array_equal(dataset[3].image, expected.image)
    np.testing.assert_array_equal(dataset[-1].mask, expected.mask)
    assert dataset[0].difficulty == HARD
    with pytest.raises(IndexError):
        dataset[4]
    with pytest.raises(DatasetError, match="num_images"):
        SyntheticDataset(num_images=0)
    with pytest.raises(DatasetError, match="difficulty"):
        SyntheticDataset(num_images=1, difficulty=5)


# ---------------------------------------------------------------------------------- folder
def test_folder_dataset_pairs_by_stem_in_name_order(folder: Path) -> None:
    dataset = FolderDataset(folder / "images", folder / "masks", SYNTHETIC_LABELS)
    assert [dataset[i].name for i in range(len(dataset))] == ["a", "b", "c"]
    image, mask = _pair(1)  # "a" was written second
    sample = dataset[0]
    np.testing.assert_array_equal(sample.image, image)
    np.testing.assert_array_equal(sample.mask, mask)
    assert sample.difficulty == -1
    assert (
        len(FolderDataset(folder / "images", folder / "masks", SYNTHETIC_LABELS, max_images=2)) == 2
    )
    dataset.verify()


def test_folder_dataset_lists_every_mismatched_pair(folder: Path) -> None:
    _write_rgb(folder / "images" / "lonely_image.jpg", _pair(5)[0])
    _write_gray(folder / "masks" / "orphan_mask.png", _pair(6)[1])
    _write_rgb(folder / "images" / "a.jpg", _pair(7)[0])  # second image with stem "a"
    _write_rgb(folder / "masks" / "c.jpg", _pair(8)[0])  # second mask for "c", lossy
    with pytest.raises(DatasetError) as info:
        FolderDataset(folder / "images", folder / "masks", SYNTHETIC_LABELS)
    message = str(info.value)
    assert str(folder / "images") in message
    assert "images without a mask (1): lonely_image.jpg" in message
    assert "masks without an image (1): orphan_mask.png" in message
    assert "images sharing a name stem (2): a.jpg, a.png" in message
    assert "masks sharing a name stem (2): c.jpg, c.png" in message


def test_folder_dataset_rejects_lossy_masks_and_missing_folders(tmp_path: Path) -> None:
    image, mask = _pair(0)
    _write_rgb(tmp_path / "images" / "x.png", image)
    _write_gray(tmp_path / "masks" / "x.jpg", mask)
    with pytest.raises(DatasetError, match=r"lossy format.*x\.jpg"):
        FolderDataset(tmp_path / "images", tmp_path / "masks", SYNTHETIC_LABELS)
    with pytest.raises(DatasetError, match=r"masks folder .*nowhere does not exist"):
        FolderDataset(tmp_path / "images", tmp_path / "nowhere", SYNTHETIC_LABELS)
    (tmp_path / "empty_images").mkdir()
    (tmp_path / "empty_masks").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        FolderDataset(tmp_path / "empty_images", tmp_path / "empty_masks", SYNTHETIC_LABELS)


def test_folder_dataset_names_unreadable_and_invalid_files(folder: Path) -> None:
    (folder / "images" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _write_gray(folder / "masks" / "b.png", np.full((8, 12), 40, dtype=np.uint8))
    _write_gray(folder / "masks" / "c.png", np.zeros((5, 5), dtype=np.uint8))
    dataset = FolderDataset(folder / "images", folder / "masks", SYNTHETIC_LABELS)
    with pytest.raises(DatasetError, match=r"cannot read image .*a\.png"):
        dataset[0]
    with pytest.raises(DatasetError, match=r"b\.png contains class ids \[40\]"):
        dataset[1]
    with pytest.raises(DatasetError, match=r"is 12x8 but its mask .*c\.png is 5x5"):
        dataset[2]
    with pytest.raises(DatasetError, match="3 of 3 samples cannot be used") as info:
        dataset.verify()
    for name in ("a.png", "b.png", "c.png"):
        assert name in str(info.value)


def test_folder_dataset_decodes_colour_masks(tmp_path: Path) -> None:
    image, mask = _pair(3)
    colored = SYNTHETIC_LABELS.colorize(mask)  # ignore becomes black, which decodes back to 255
    _write_rgb(tmp_path / "images" / "p.png", image)
    _write_rgb(tmp_path / "masks" / "p.png", colored)
    dataset = FolderDataset(tmp_path / "images", tmp_path / "masks", SYNTHETIC_LABELS)
    np.testing.assert_array_equal(dataset[0].mask, mask)
    colored[2, 3] = (1, 2, 3)
    _write_rgb(tmp_path / "masks" / "p.png", colored)
    with pytest.raises(DatasetError, match=r"colours \[\(1, 2, 3\)\] that are not in label set"):
        dataset[0]


# ------------------------------------------------------------------------------ cityscapes
def _cityscapes_fixture(root: Path) -> dict[str, np.ndarray]:
    """Two aachen frames: one with trainIds (and decoy labelIds), one with labelIds only."""
    expected: dict[str, np.ndarray] = {}
    label_ids = np.array([[7, 8, 26, 0], [21, 23, 9, 33]], dtype=np.uint8)
    mapped = np.array([[0, 1, 13, 255], [8, 10, 255, 18]], dtype=np.uint8)
    for frame, has_train_ids in (("000000_000019", True), ("000001_000019", False)):
        base = f"aachen_{frame}"
        image = np.full((2, 4, 3), 10 * len(expected), dtype=np.uint8)
        _write_rgb(root / "leftImg8bit" / "train" / "aachen" / f"{base}_leftImg8bit.png", image)
        gt = root / "gtFine" / "train" / "aachen"
        _write_gray(gt / f"{base}_gtFine_labelIds.png", label_ids)
        if has_train_ids:
            train_ids = np.array([[0, 2, 2, 255], [5, 5, 18, 11]], dtype=np.uint8)
            _write_gray(gt / f"{base}_gtFine_labelTrainIds.png", train_ids)
            expected[base] = train_ids
        else:
            expected[base] = mapped
    return expected


def test_cityscapes_layout_with_train_ids_and_label_ids(tmp_path: Path) -> None:
    expected = _cityscapes_fixture(tmp_path)
    dataset = CityscapesDataset(tmp_path, "train")
    assert dataset.labels is CITYSCAPES_LABELS
    assert len(dataset) == 2
    for i in range(2):
        sample = dataset[i]
        np.testing.assert_array_equal(sample.mask, expected[sample.name])
        assert sample.image.shape == (2, 4, 3)
    assert [dataset[i].name for i in range(2)] == sorted(expected)
    dataset.verify()


def test_cityscapes_layout_errors(tmp_path: Path) -> None:
    _cityscapes_fixture(tmp_path)
    with pytest.raises(
        DatasetError, match=r"no folder leftImg8bit/val.*splits present: \['train'\]"
    ):
        CityscapesDataset(tmp_path, "val")
    extra = tmp_path / "leftImg8bit" / "train" / "bonn" / "bonn_000000_000019_leftImg8bit.png"
    _write_rgb(extra, np.zeros((2, 4, 3), dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"images without .* \(1\): bonn/bonn_000000_000019"):
        CityscapesDataset(tmp_path, "train")


# ----------------------------------------------------------------------------- spec/builder
def test_dataset_spec_round_trip_and_validation() -> None:
    spec = DatasetSpec(
        kind="synthetic", split="val", num_images=3, height=32, width=64, difficulty=2
    )
    assert DatasetSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert DatasetSpec.from_dict({"difficulty": "hard", "num_images": "5"}).difficulty == 2
    with pytest.raises(DatasetError, match=r"unknown dataset spec keys \['colour'\]"):
        DatasetSpec.from_dict({"colour": 1})
    with pytest.raises(DatasetError, match="malformed"):
        DatasetSpec.from_dict({"difficulty": "extreme"})


def test_build_synthetic_uses_the_split_seed_unless_given() -> None:
    val = build_dataset(DatasetSpec(split="val", num_images=2, height=32, width=64))
    reference = SceneGenerator(32, 64, seed=1).render(1)
    np.testing.assert_array_equal(val[1].image, reference.image)
    explicit = build_dataset(DatasetSpec(split="val", seed=7, num_images=2, height=32, width=64))
    np.testing.assert_array_equal(explicit[1].mask, SceneGenerator(32, 64, seed=7).render(1).mask)
    with pytest.raises(DatasetError, match="conventional seed"):
        build_dataset(DatasetSpec(split="holdout", num_images=2))
    with pytest.raises(DatasetError, match="always use label set 'synthetic'"):
        build_dataset(DatasetSpec(num_images=2, labels="cityscapes"))


def test_build_folder_and_cityscapes(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="names no label set"):
        build_dataset(DatasetSpec(kind="folder", path=str(folder)))
    by_name = build_dataset(DatasetSpec(kind="folder", path=str(folder), labels="synthetic"))
    assert len(by_name) == 3
    (folder / "labels.json").write_text(json.dumps(SYNTHETIC_LABELS.to_dict()))
    by_file = build_dataset(DatasetSpec(kind="folder", path=str(folder), num_images=1))
    assert by_file.labels == SYNTHETIC_LABELS
    assert len(by_file) == 1
    (folder / "labels.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"labels\.json is invalid"):
        build_dataset(DatasetSpec(kind="folder", path=str(folder)))

    city_root = tmp_path / "cityscapes"
    _cityscapes_fixture(city_root)
    city = build_dataset(DatasetSpec(kind="cityscapes", path=str(city_root), split="train"))
    assert len(city) == 2
    with pytest.raises(DatasetError, match="does not exist"):
        build_dataset(DatasetSpec(kind="cityscapes", path=str(tmp_path / "missing")))
    with pytest.raises(DatasetError, match="valid names: cityscapes, folder, synthetic"):
        build_dataset(DatasetSpec(kind="kitti"))


def test_build_folder_prefers_the_split_subfolder(tmp_path: Path) -> None:
    for split, count in (("train", 2), ("val", 1)):
        for i in range(count):
            image, mask = _pair(i)
            _write_rgb(tmp_path / split / "images" / f"{i}.png", image)
            _write_gray(tmp_path / split / "masks" / f"{i}.png", mask)
    spec = DatasetSpec(kind="folder", path=str(tmp_path), split="val", labels="synthetic")
    assert len(build_dataset(spec)) == 1


def test_labels_json_at_the_root_serves_every_split(tmp_path: Path) -> None:
    source = SyntheticDataset(3, 16, 24, seed=1)
    for split in ("train", "val"):
        write_folder_dataset(source, tmp_path, split)
    assert (tmp_path / "labels.json").is_file()
    assert not (tmp_path / "val" / "labels.json").exists()
    dataset = build_dataset(DatasetSpec(kind="folder", path=str(tmp_path), split="val"))
    assert dataset.labels == SYNTHETIC_LABELS and len(dataset) == 3
    np.testing.assert_array_equal(dataset[1].mask, source[1].mask)
    np.testing.assert_array_equal(dataset[1].image, source[1].image)
    # A split's own labels.json wins over the root's.
    own = LabelSet("two", ("a", "b"), ((0, 0, 0), (255, 255, 255)))
    (tmp_path / "train" / "labels.json").write_text(json.dumps(own.to_dict()))
    masks = tmp_path / "train" / "masks"
    for path in masks.iterdir():
        _write_gray(path, np.zeros((16, 24), dtype=np.uint8))
    train = build_dataset(DatasetSpec(kind="folder", path=str(tmp_path), split="train"))
    assert train.labels == own


def test_missing_label_set_names_both_places(tmp_path: Path) -> None:
    write_folder_dataset(SyntheticDataset(1, 16, 24), tmp_path, "val")
    (tmp_path / "labels.json").unlink()
    with pytest.raises(DatasetError) as info:
        build_dataset(DatasetSpec(kind="folder", path=str(tmp_path), split="val"))
    assert str(tmp_path / "val" / "labels.json") in str(info.value)
    assert str(tmp_path / "labels.json") in str(info.value)


def test_verify_dataset_lists_every_bad_pair_at_once(tmp_path: Path) -> None:
    folder = write_folder_dataset(SyntheticDataset(8, 16, 24), tmp_path, "train")
    bad = ["train_00001", "train_00003", "train_00004", "train_00006"]
    for stem in bad:
        _write_gray(folder / "masks" / f"{stem}.png", np.zeros((10, 24), dtype=np.uint8))
    dataset = build_dataset(DatasetSpec(kind="folder", path=str(tmp_path), split="train"))
    with pytest.raises(DatasetError) as info:
        verify_dataset(dataset)
    message = str(info.value)
    assert "4 of 8 samples cannot be used" in message
    assert all(f"{stem}.png" in message for stem in bad)
    verify_dataset(SyntheticDataset(2, 16, 24))  # rendered scenes: nothing to read
