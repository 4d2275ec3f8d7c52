"""Preprocessing and augmentation: exact normalisation, image/mask alignment, tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mess_ros.data.datasets import SyntheticDataset
from mess_ros.data.errors import DataError
from mess_ros.data.sample import Sample
from mess_ros.data.transforms import Augment, TorchSegmentationDataset, normalize_image
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD

PALETTE = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250], [250, 250, 0]], dtype=np.uint8)


def _blocky_sample(hw: tuple[int, int] = (24, 40), block: int = 4) -> Sample:
    """Image colour is a function of the mask, so any misalignment shows as a wrong colour."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, len(PALETTE), (hw[0] // block, hw[1] // block)).astype(np.uint8)
    mask = np.kron(coarse, np.ones((block, block), dtype=np.uint8))
    return Sample(image=PALETTE[mask], mask=mask, difficulty=-1, name="blocks")


def test_normalize_image_matches_the_formula() -> None:
    image = np.random.default_rng(1).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    out = normalize_image(image, (6, 10))
    expected = (image.astype(np.float64) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    assert out.shape == (3, 6, 10)
    assert out.dtype == np.float32
    assert out.flags.c_contiguous
    np.testing.assert_allclose(out, expected.transpose(2, 0, 1), atol=1e-5)


def test_normalize_image_resizes_bilinearly() -> None:
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    image[:, 2:] = 200
    out = normalize_image(image, (2, 8))
    assert out.shape == (3, 2, 8)
    red = out[0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert red[0] == pytest.approx(0.0, abs=1e-5)
    assert red[-1] == pytest.approx(200 / 255, abs=1e-5)
    assert 0.0 < red[3] < 200 / 255 or 0.0 < red[4] < 200 / 255  # blended edge
    with pytest.raises(DataError, match="HxWx3 uint8"):
        normalize_image(image[..., 0], (2, 2))
    with pytest.raises(DataError, match="size_hw"):
        normalize_image(image, (0, 2))


def test_crop_and_flip_keep_image_and_mask_aligned_exactly() -> None:
    sample = _blocky_sample()
    augment = Augment(crop_hw=(16, 16), scale_range=(1.0, 1.0), color_jitter=0.0, base_hw=(24, 40))
    flips = 0
    for seed in range(20):
        image, mask = augment(sample, np.random.default_rng(seed))
        assert image.shape == (16, 16, 3)
        assert mask.shape == (16, 16)
        np.testing.assert_array_equal(image, PALETTE[mask])
        flips += int(not _occurs_unflipped(sample.mask, mask))
    assert 0 < flips < 20  # both flipped and unflipped crops were drawn


def _occurs_unflipped(full: np.ndarray, crop: np.ndarray) -> bool:
    h, w = crop.shape
    return any(
        np.array_equal(full[y : y + h, x : x + w], crop)
        for y in range(full.shape[0] - h + 1)
        for x in range(full.shape[1] - w + 1)
    )


def _coordinate_sample() -> Sample:
    """Image colours encode each pixel's coordinates; the mask is a fine function of them.

    Bilinear resizing keeps a linear gradient linear, so after any scale, crop
    and flip every image pixel still tells where it came from, and the mask
    must hold the id of that place.
    """
    ys, xs = np.mgrid[0:48, 0:80]
    image = np.stack([3 * xs, 5 * ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)
    return Sample(image=image, mask=_coordinate_ids(xs, ys), difficulty=-1, name="coords")


def _coordinate_ids(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.asarray((xs // 5 + 2 * (ys // 7)) % 4, dtype=np.uint8)


def test_scaling_keeps_alignment_and_never_blends_mask_ids() -> None:
    sample = _coordinate_sample()
    augment = Augment(crop_hw=(40, 64), scale_range=(0.6, 1.7), color_jitter=0.0, base_hw=(48, 80))
    for seed in range(12):
        image, mask = augment(sample, np.random.default_rng(seed))
        assert set(np.unique(mask)) <= {0, 1, 2, 3, 255}
        source_x = image[..., 0] / 3.0
        source_y = image[..., 1] / 5.0
        # Skip pixels whose source position lies near a pixel border, where rounding decides.
        clear = (np.abs(source_x - np.round(source_x)) < 0.25) & (
            np.abs(source_y - np.round(source_y)) < 0.25
        )
        checked = clear & (mask != 255)
        expected = _coordinate_ids(np.round(source_x).astype(int), np.round(source_y).astype(int))
        assert checked.sum() > 0.1 * mask.size, seed
        np.testing.assert_array_equal(mask[checked], expected[checked], err_msg=f"seed {seed}")
        # The check has teeth: a mask off by one pixel disagrees in many places.
        shifted = np.roll(mask, 1, axis=1)
        assert (shifted[checked] != expected[checked]).mean() > 0.05, seed


def test_crop_beyond_the_border_pads_with_ignore_and_mean_colour() -> None:
    sample = _blocky_sample()
    augment = Augment(crop_hw=(32, 48), scale_range=(0.5, 0.5), color_jitter=0.0, base_hw=(24, 40))
    image, mask = augment(sample, np.random.default_rng(3))
    padded = mask == 255
    assert padded.sum() == 32 * 48 - 12 * 20
    mean_rgb = [round(255 * m) for m in IMAGENET_MEAN]
    assert np.all(image[padded] == mean_rgb)
    assert not np.any(np.all(image[~padded] == mean_rgb, axis=-1))


def test_colour_jitter_changes_the_image_only() -> None:
    sample = _blocky_sample()
    plain = Augment(crop_hw=(24, 40), scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0)
    jitter = Augment(crop_hw=(24, 40), scale_range=(1.0, 1.0), hflip=False, color_jitter=0.4)
    image_a, mask_a = plain(sample, np.random.default_rng(0))
    image_b, mask_b = jitter(sample, np.random.default_rng(0))
    np.testing.assert_array_equal(mask_a, mask_b)
    np.testing.assert_array_equal(mask_a, sample.mask)
    assert np.abs(image_a.astype(int) - image_b.astype(int)).mean() > 2.0


def test_default_base_size_is_the_crop() -> None:
    sample = _blocky_sample((48, 80))
    augment = Augment(crop_hw=(24, 40), scale_range=(1.0, 1.0), hflip=False, color_jitter=0.0)
    _, mask = augment(sample, np.random.default_rng(0))
    # The whole frame is resized to the crop, as the engine resizes it to the input size.
    np.testing.assert_array_equal(mask, sample.mask[1::2, 1::2])


def test_invalid_augment_settings() -> None:
    with pytest.raises(DataError, match="scale_range"):
        Augment(crop_hw=(8, 8), scale_range=(1.5, 1.0))
    with pytest.raises(DataError, match="color_jitter"):
        Augment(crop_hw=(8, 8), color_jitter=1.5)
    with pytest.raises(DataError, match="crop_hw"):
        Augment(crop_hw=(8, -1))


def test_torch_dataset_with_and_without_augmentation() -> None:
    base = SyntheticDataset(num_images=3, height=32, width=64, seed=4)
    evaluation = TorchSegmentationDataset(base, size_hw=(16, 32))
    image, mask = evaluation[1]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 16, 32)
    assert mask.dtype == torch.int64 and tuple(mask.shape) == (32, 64)  # label resolution
    np.testing.assert_allclose(image.numpy(), normalize_image(base[1].image, (16, 32)))
    _, small_mask = TorchSegmentationDataset(base, size_hw=(16, 32), resize_mask=True)[1]
    assert tuple(small_mask.shape) == (16, 32)

    training = TorchSegmentationDataset(base, Augment(crop_hw=(24, 24)))
    torch.manual_seed(0)
    first = training[0]
    torch.manual_seed(0)
    again = training[0]
    assert tuple(first[0].shape) == (3, 24, 24) and tuple(first[1].shape) == (24, 24)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert len(training) == 3
    with pytest.raises(DataError, match="conflicts"):
        TorchSegmentationDataset(base, Augment(crop_hw=(24, 24)), size_hw=(16, 32))
