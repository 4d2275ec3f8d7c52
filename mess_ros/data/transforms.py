"""Preprocessing and training augmentation.

:func:`normalize_image` is the one preprocessing of the product: training
evaluation, calibration and the runtime engine all call it, so that accuracy
measured offline is the accuracy the robot gets. Augmentation only exists at
training time and always moves image and mask together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from mess_ros.data.datasets import SegmentationDataset
from mess_ros.data.errors import DataError
from mess_ros.data.sample import Sample
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD

# (x / 255 - mean) / std folded into one multiply and one subtract.
_GAIN = (1.0 / (255.0 * np.asarray(IMAGENET_STD))).astype(np.float32)
_OFFSET = (np.asarray(IMAGENET_MEAN) / np.asarray(IMAGENET_STD)).astype(np.float32)
# Padding colour of crops beyond the border: the mean, i.e. zero after normalisation.
_PAD_RGB = tuple(round(255.0 * m) for m in IMAGENET_MEAN)
# ITU-R BT.601 luma, for the saturation jitter.
_LUMA = np.asarray([0.299, 0.587, 0.114], dtype=np.float32)


def _as_u8(array: npt.NDArray[np.generic]) -> npt.NDArray[np.uint8]:
    """OpenCV's typing widens every result; its uint8 inputs give uint8 outputs."""
    return np.asarray(array, dtype=np.uint8)


def _check_hw(size_hw: tuple[int, int], what: str) -> tuple[int, int]:
    if len(size_hw) != 2 or min(size_hw) <= 0:
        raise DataError(f"{what} must be a (height, width) pair of positive ints, got {size_hw}")
    return int(size_hw[0]), int(size_hw[1])


def _check_image(image: npt.NDArray[np.generic]) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(
            f"expected an HxWx3 uint8 RGB image, got dtype {image.dtype} shape {image.shape}"
        )


def normalize_image(
    image: npt.NDArray[np.uint8], size_hw: tuple[int, int]
) -> npt.NDArray[np.float32]:
    """Resize (bilinear) to ``size_hw`` and normalise with ImageNet statistics -> float32 CHW.

    The result is C-contiguous so ``torch.from_numpy`` needs no copy.
    """
    _check_image(image)
    height, width = _check_hw(size_hw, "size_hw")
    if image.shape[:2] != (height, width):
        image = _as_u8(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
    pixels = image.astype(np.float32)
    pixels *= _GAIN
    pixels -= _OFFSET
    chw: npt.NDArray[np.float32] = np.ascontiguousarray(pixels.transpose(2, 0, 1))
    return chw


@dataclass
class Augment:
    """Random scale, crop, horizontal flip and colour jitter for training.

    The image is first resized to ``base_hw`` (default ``crop_hw``) times a
    random scale, so that on average objects have the size the network sees
    at evaluation, where :func:`normalize_image` resizes the whole frame to
    the input size. Then a ``crop_hw`` window is cut at a random place; where
    it extends beyond the scaled image the image is padded with the mean
    colour and the mask with ``ignore_index`` (no loss on invented pixels).
    Masks are resized with pixel-centre nearest neighbour (``INTER_NEAREST_EXACT``,
    the sampling grid of the bilinear image resize) so no class id is ever blended
    and mask and image stay aligned to a fraction of a pixel.
    """

    crop_hw: tuple[int, int]
    scale_range: tuple[float, float] = (0.75, 1.25)
    hflip: bool = True
    color_jitter: float = 0.2
    base_hw: tuple[int, int] | None = None
    ignore_index: int = 255

    def __post_init__(self) -> None:
        self.crop_hw = _check_hw(self.crop_hw, "crop_hw")
        if self.base_hw is not None:
            self.base_hw = _check_hw(self.base_hw, "base_hw")
        low, high = self.scale_range
        if not 0.0 < low <= high:
            raise DataError(f"scale_range must satisfy 0 < low <= high, got {self.scale_range}")
        if not 0.0 <= self.color_jitter < 1.0:
            raise DataError(f"color_jitter must be in [0, 1), got {self.color_jitter}")

    def __call__(
        self, sample: Sample, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        image, mask = sample.image, sample.mask
        _check_image(image)
        if mask.shape != image.shape[:2]:
            raise DataError(
                f"sample {sample.name}: mask {mask.shape} and image {image.shape} differ"
            )
        base_h, base_w = self.base_hw or self.crop_hw
        scale = rng.uniform(*self.scale_range)
        scaled_hw = (max(1, round(base_h * scale)), max(1, round(base_w * scale)))
        if image.shape[:2] != scaled_hw:
            size = (scaled_hw[1], scaled_hw[0])
            image = _as_u8(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR))
            mask = _as_u8(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT))
        image, mask = self._random_crop(image, mask, rng)
        if self.hflip and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.color_jitter > 0.0:
            image = self._jitter_colors(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def _random_crop(
        self,
        image: npt.NDArray[np.uint8],
        mask: npt.NDArray[np.uint8],
        rng: np.random.Generator,
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        crop_h, crop_w = self.crop_hw
        height, width = mask.shape
        pad_h, pad_w = max(0, crop_h - height), max(0, crop_w - width)
        if pad_h or pad_w:
            # Pad on a random side so padded borders do not always sit bottom-right.
            top, left = int(rng.integers(0, pad_h + 1)), int(rng.integers(0, pad_w + 1))
            borders = (top, pad_h - top, left, pad_w - left)
            image = _as_u8(cv2.copyMakeBorder(image, *borders, cv2.BORDER_CONSTANT, value=_PAD_RGB))
            ignore = self.ignore_index
            mask = _as_u8(cv2.copyMakeBorder(mask, *borders, cv2.BORDER_CONSTANT, value=ignore))
            height, width = mask.shape
        y0 = int(rng.integers(0, height - crop_h + 1))
        x0 = int(rng.integers(0, width - crop_w + 1))
        return image[y0 : y0 + crop_h, x0 : x0 + crop_w], mask[y0 : y0 + crop_h, x0 : x0 + crop_w]

    def _jitter_colors(
        self, image: npt.NDArray[np.uint8], rng: np.random.Generator
    ) -> npt.NDArray[np.uint8]:
        """Brightness, contrast and saturation, each by a factor in 1 +- color_jitter."""
        low, high = 1.0 - self.color_jitter, 1.0 + self.color_jitter
        brightness, contrast, saturation = rng.uniform(low, high, 3).astype(np.float32)
        pixels = image.astype(np.float32) * brightness
        mean = np.float32(pixels.mean())
        pixels = (pixels - mean) * contrast + mean
        gray = (pixels @ _LUMA)[..., None]
        pixels = (pixels - gray) * saturation + gray
        np.clip(pixels, 0.0, 255.0, out=pixels)
        jittered: npt.NDArray[np.uint8] = (pixels + 0.5).astype(np.uint8)
        return jittered


class TorchSegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A :class:`SegmentationDataset` as (normalised float 3xHxW, int64 HxW mask) tensors.

    With ``augment`` every item is a random ``augment.crop_hw`` view; its
    random stream comes from torch's generator, which DataLoader seeds
    differently in every worker and epoch and ``torch.manual_seed`` makes
    reproducible. Without it the image is resized to ``size_hw`` exactly as the
    engine does, and the mask stays at label resolution (evaluation compares
    at the resolution of the annotation) unless ``resize_mask`` asks for a
    nearest-neighbour resize to ``size_hw``.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        augment: Augment | None = None,
        size_hw: tuple[int, int] | None = None,
        *,
        resize_mask: bool = False,
    ) -> None:
        if augment is not None and size_hw is not None and tuple(size_hw) != augment.crop_hw:
            raise DataError(
                f"size_hw {size_hw} conflicts with the augmentation crop {augment.crop_hw}; "
                "with augmentation the network input is the crop"
            )
        if size_hw is not None:
            size_hw = _check_hw(size_hw, "size_hw")
        self.dataset = dataset
        self.augment = augment
        self.size_hw = size_hw
        self.resize_mask = resize_mask

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.dataset[index]
        if self.augment is not None:
            seed = int(torch.randint(0, 2**62, ()).item())
            image, mask = self.augment(sample, np.random.default_rng(seed))
        else:
            image, mask = sample.image, sample.mask
        size_hw = self.size_hw or (image.shape[0], image.shape[1])
        if self.resize_mask and mask.shape != size_hw:
            size = (size_hw[1], size_hw[0])
            mask = _as_u8(cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST_EXACT))
        tensor = torch.from_numpy(normalize_image(image, size_hw))
        return tensor, torch.from_numpy(mask.astype(np.int64))
