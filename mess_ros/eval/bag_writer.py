"""Writing labelled datasets as rosbag2 bags (``.db3`` and ``.mcap``) with ``rosbags``.

A bag written here looks like a camera driver recorded it: the camera topic
(raw ``Image`` in any supported encoding, or ``CompressedImage``), a
``mono8`` ground-truth topic the reader recognises by name, and a pinhole
``camera_info``, at a fixed rate. Samples that cannot be encoded are skipped
and counted; the bag is built beside the target and moved into place at the
end, so an interrupted run never leaves a half bag.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from tqdm import tqdm

from mess_ros.data.image_codec import COMPRESSED_FORMATS
from mess_ros.eval.errors import BagError, FrameError
from mess_ros.eval.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_FORMATS,
    IMAGE_TYPE,
    encode_compressed,
    encode_image,
    encode_mask,
    pinhole_camera_info,
    serialize,
    typestore,
)

# Topic names written by default; the reader recognises the ground truth by its last segment.
DEFAULT_CAMERA_TOPIC: Final = "/camera/image_raw"
DEFAULT_GT_TOPIC: Final = "/camera/ground_truth"
DEFAULT_CAMERA_INFO_TOPIC: Final = "/camera/camera_info"
# A recording date rather than 1970, so stamps look like a real robot's; fixed for reproducibility.
DEFAULT_START_NS: Final = 1_700_000_000 * 1_000_000_000

STORAGE_SUFFIXES: Final[dict[str, StoragePlugin]] = {
    ".mcap": StoragePlugin.MCAP,
    ".db3": StoragePlugin.SQLITE3,
}
STORAGE_NAMES: Final[dict[str, StoragePlugin]] = {
    "mcap": StoragePlugin.MCAP,
    "sqlite3": StoragePlugin.SQLITE3,
}


class LabelledImage(Protocol):
    """An image with its class-id mask, as the datasets' ``Sample`` provides."""

    @property
    def image(self) -> np.ndarray: ...
    @property
    def mask(self) -> np.ndarray: ...


@dataclass(frozen=True)
class BagWriteOptions:
    """How a dataset is packaged as a bag (topic names empty = not written)."""

    rate_hz: float = 15.0
    image_format: str = "rgb8"
    camera_topic: str = DEFAULT_CAMERA_TOPIC
    gt_topic: str = DEFAULT_GT_TOPIC
    camera_info_topic: str = DEFAULT_CAMERA_INFO_TOPIC
    frame_id: str = "camera"
    start_ns: int = DEFAULT_START_NS
    storage: str = "mcap"  # for a directory output; a .db3/.mcap file name decides itself
    overwrite: bool = False

    def validate(self) -> None:
        if not np.isfinite(self.rate_hz) or self.rate_hz <= 0:
            raise BagError(
                f"rate must be a positive number of frames per second, got {self.rate_hz}"
            )
        if self.image_format not in IMAGE_FORMATS:
            raise BagError(
                f"unknown image format {self.image_format!r}; expected one of "
                f"{', '.join(IMAGE_FORMATS)}"
            )
        if self.storage not in STORAGE_NAMES:
            raise BagError(
                f"unknown storage {self.storage!r}; expected one of {', '.join(STORAGE_NAMES)}"
            )
        if not self.camera_topic:
            raise BagError("the camera topic name must not be empty")
        named = [t for t in (self.camera_topic, self.gt_topic, self.camera_info_topic) if t]
        if len(set(named)) != len(named):
            raise BagError(f"camera, ground-truth and camera_info topics must differ, got {named}")


@dataclass(frozen=True)
class BagWriteSummary:
    path: Path
    frames: int
    skipped: dict[str, int]
    duration_s: float
    topics: dict[str, str]


def _storage_for(path: Path, options: BagWriteOptions) -> tuple[StoragePlugin, bool]:
    """The storage plugin and whether ``path`` names a single storage file."""
    plugin = STORAGE_SUFFIXES.get(path.suffix.lower())
    if plugin is not None:
        return plugin, True
    return STORAGE_NAMES[options.storage], False


def write_bag(
    path: str | Path,
    samples: Iterable[LabelledImage],
    options: BagWriteOptions | None = None,
    *,
    total: int | None = None,
    progress: bool = False,
) -> BagWriteSummary:
    """Write ``samples`` as a bag recorded at ``options.rate_hz``.

    A path ending in ``.mcap`` or ``.db3`` becomes that single file (which
    ``ros2 bag play`` and :class:`BagReader` open directly); any other path
    becomes a bag directory. The bag is built next to the target and moved
    into place at the end, so an interrupted run never leaves a half bag.
    Samples that cannot be encoded (wrong shape or dtype, mask size not the
    image's) are skipped and counted.
    """
    options = options or BagWriteOptions()
    options.validate()
    target = Path(path)
    plugin, single_file = _storage_for(target, options)
    if target.exists() and not options.overwrite:
        raise BagError(f"output {target} already exists; remove it or allow overwriting")
    if not target.parent.is_dir():
        raise BagError(f"cannot write bag {target}: directory {target.parent} does not exist")
    # The writer names the storage file after its directory: build "<stem>/<stem>.<ext>"
    # inside a hidden scratch directory so the moved result carries the user's name.
    scratch = target.parent / f".{target.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    work = scratch / (target.stem if single_file else target.name)
    period_ns = round(1e9 / options.rate_hz)
    skipped = Counter[str]()
    frames = 0
    store = typestore()
    try:
        with Writer(work, version=Writer.VERSION_LATEST, storage_plugin=plugin) as writer:
            compressed = options.image_format in COMPRESSED_FORMATS
            camera_conn = writer.add_connection(
                options.camera_topic,
                COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE,
                typestore=store,
            )
            gt_conn = (
                writer.add_connection(options.gt_topic, IMAGE_TYPE, typestore=store)
                if options.gt_topic
                else None
            )
            info_conn = (
                writer.add_connection(options.camera_info_topic, CAMERA_INFO_TYPE, typestore=store)
                if options.camera_info_topic
                else None
            )
            for sample in tqdm(samples, total=total, disable=not progress, unit="frame"):
                stamp_ns = options.start_ns + frames * period_ns
                try:
                    records = _encode_sample(sample, stamp_ns, options, gt_conn is not None)
                except FrameError as err:
                    skipped[err.reason] += 1
                    continue
                camera_msg, gt_msg = records
                writer.write(camera_conn, stamp_ns, camera_msg)
                if info_conn is not None:
                    height, width = sample.image.shape[:2]
                    info = pinhole_camera_info(height, width, stamp_ns, options.frame_id)
                    writer.write(info_conn, stamp_ns, serialize(info))
                if gt_conn is not None and gt_msg is not None:
                    writer.write(gt_conn, stamp_ns, gt_msg)
                frames += 1
        if frames == 0:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(skipped.items())) or "no samples"
            raise BagError(f"no frame could be written to {target} ({reasons})")
        if target.exists():
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink()
        if single_file:
            stored = next(p for p in work.iterdir() if p.suffix in STORAGE_SUFFIXES)
            stored.replace(target)
        else:
            work.replace(target)
    except (WriterError, OSError) as err:
        raise BagError(f"cannot write bag {target}: {err}") from err
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    topics = {"camera": options.camera_topic}
    if gt_conn is not None:
        topics["ground_truth"] = options.gt_topic
    if info_conn is not None:
        topics["camera_info"] = options.camera_info_topic
    return BagWriteSummary(
        path=target,
        frames=frames,
        skipped=dict(skipped),
        duration_s=frames * period_ns / 1e9,
        topics=topics,
    )


def _encode_sample(
    sample: LabelledImage, stamp_ns: int, options: BagWriteOptions, with_gt: bool
) -> tuple[bytes, bytes | None]:
    image = np.asarray(sample.image)
    if options.image_format in COMPRESSED_FORMATS:
        camera = encode_compressed(image, options.image_format, stamp_ns, options.frame_id)
    else:
        camera = encode_image(image, options.image_format, stamp_ns, options.frame_id)
    if not with_gt:
        return serialize(camera), None
    mask = np.asarray(sample.mask)
    if mask.shape != image.shape[:2]:
        raise FrameError(
            f"mask of shape {mask.shape} does not match image of shape {image.shape}",
            "wrong size",
        )
    return serialize(camera), serialize(encode_mask(mask, stamp_ns, options.frame_id))
