"""Training batches that can be resumed at any step and split over processes.

Every batch is a pure function of (seed, stage, step, rank): the image order
comes from :class:`~torch.utils.data.DistributedSampler` (one shuffle per
epoch, a disjoint share per rank) and every augmentation draws from a random
generator seeded by (seed, stage, epoch, image index). So a resumed run sees
exactly the batches the uninterrupted run would have seen, and the result
does not depend on the number of data-loading workers. (The general-purpose
:class:`mess_ros.data.transforms.TorchSegmentationDataset` draws augmentation
seeds from torch's global generator instead, which interleaves with dropout
and would break exact resumption.)
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from mess_ros.data.datasets import SegmentationDataset
from mess_ros.data.transforms import Augment, normalize_image
from mess_ros.train.config import TrainConfig
from mess_ros.train.distributed import DistContext
from mess_ros.train.errors import TrainError

ItemKey = tuple[int, int]
"""(image index, epoch): what a batch sampler hands to :class:`TrainingImages`."""


class TrainingImages(Dataset[tuple[Tensor, Tensor]]):
    """Augmented, normalised ``(image 3xHxW float32, mask HxW int64)`` pairs at ``input_hw``.

    Without augmentation, images go through the shared preprocessing and
    masks are resized with nearest neighbour so that batches stack.
    """

    def __init__(
        self,
        dataset: SegmentationDataset,
        input_hw: tuple[int, int],
        augment: Augment | None,
        seed: int,
    ) -> None:
        self.dataset = dataset
        self.input_hw = input_hw
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: ItemKey) -> tuple[Tensor, Tensor]:
        index, epoch = key
        sample = self.dataset[index]
        image, mask = sample.image, sample.mask
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, index])
            image, mask = self.augment(sample, rng)
        height, width = self.input_hw
        if mask.shape != (height, width):
            resized = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
            mask = np.asarray(resized, dtype=np.uint8)
        tensor = torch.from_numpy(normalize_image(image, self.input_hw))
        return tensor, torch.from_numpy(mask.astype(np.int64))


class StepBatchSampler(Sampler[list[ItemKey]]):
    """Endless batches for steps ``start_step, start_step + 1, ...`` of one rank."""

    def __init__(
        self,
        images: TrainingImages,
        per_rank_batch: int,
        ctx: DistContext,
        seed: int,
        start_step: int,
    ) -> None:
        self.sampler: DistributedSampler[int] = DistributedSampler(
            images,
            num_replicas=ctx.world_size,
            rank=ctx.rank,
            shuffle=True,
            seed=seed,
            drop_last=True,
        )
        self.per_rank_batch = per_rank_batch
        self.start_step = start_step
        self.steps_per_epoch = len(self.sampler) // per_rank_batch
        if self.steps_per_epoch == 0:
            msg = (
                f"the training dataset has {len(images)} images, fewer than one batch of "
                f"{per_rank_batch * ctx.world_size}; use more images or a smaller batch_size"
            )
            raise TrainError(msg)

    def __iter__(self) -> Iterator[list[ItemKey]]:
        epoch, offset = divmod(self.start_step, self.steps_per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for batch in range(offset, self.steps_per_epoch):
                chosen = order[batch * self.per_rank_batch : (batch + 1) * self.per_rank_batch]
                yield [(index, epoch) for index in chosen]
            epoch, offset = epoch + 1, 0


def training_batches(
    dataset: SegmentationDataset,
    config: TrainConfig,
    ctx: DistContext,
    stage_index: int,
    start_step: int,
    pin_memory: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of one rank for a stage, from ``start_step`` on (never exhausted)."""
    augment = (
        Augment(
            crop_hw=config.input_hw,
            scale_range=config.scale_range,
            hflip=config.hflip,
            color_jitter=config.color_jitter,
        )
        if config.augment
        else None
    )
    stage_seed = config.seed * 1000 + stage_index
    images = TrainingImages(dataset, config.input_hw, augment, stage_seed)
    sampler = StepBatchSampler(
        images, ctx.per_rank_batch(config.batch_size), ctx, stage_seed, start_step
    )
    loader = DataLoader(
        images,
        batch_sampler=sampler,
        num_workers=config.workers,
        pin_memory=pin_memory,
        persistent_workers=config.workers > 0,
        # An own generator: otherwise creating the iterator draws from torch's global
        # generator, and a resumed run would see different dropout masks.
        generator=torch.Generator().manual_seed(stage_seed),
    )
    return iter(loader)
