"""Datasets written as bags in both storage formats, directories and single files, read back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from mess_ros.common.stamps import header_stamp_ns
from mess_ros.data.sample import Sample
from mess_ros.eval.bag_reader import BagReader, load_frames
from mess_ros.eval.bag_writer import (
    DEFAULT_CAMERA_INFO_TOPIC,
    DEFAULT_CAMERA_TOPIC,
    DEFAULT_GT_TOPIC,
    BagWriteOptions,
    write_bag,
)
from mess_ros.eval.errors import BagError
from mess_ros.eval.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_FORMATS,
    IMAGE_TYPE,
    deserialize,
)
from tests.eval.builders import FRAME_HW

LOSSLESS = {"rgb8", "bgr8", "rgba8", "bgra8", "png"}


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
@pytest.mark.parametrize("image_format", IMAGE_FORMATS)
def test_written_bag_reads_back_with_every_encoding(
    tmp_path: Path, samples: list[Sample], suffix: str, image_format: str
) -> None:
    path = tmp_path / f"bag{suffix}"
    summary = write_bag(path, samples[:3], BagWriteOptions(rate_hz=10, image_format=image_format))
    assert path.is_file()
    assert summary.frames == 3
    assert summary.duration_s == pytest.approx(0.3)
    frames, stats, topics = load_frames(path)
    assert topics.camera == DEFAULT_CAMERA_TOPIC
    assert topics.ground_truth == DEFAULT_GT_TOPIC
    expected_type = COMPRESSED_IMAGE_TYPE if image_format in ("jpeg", "png") else IMAGE_TYPE
    assert topics.camera_type == expected_type
    assert [f.index for f in frames] == [0, 1, 2]
    assert stats.frames == 3 and stats.skipped_total == 0 and stats.without_gt == 0
    for frame, sample in zip(frames, samples, strict=False):
        assert frame.stamp_ns == frame.receive_ns
        assert frame.image.shape == (*FRAME_HW, 3) and frame.image.dtype == np.uint8
        assert frame.gt is not None
        np.testing.assert_array_equal(frame.gt, sample.mask)
        if image_format in LOSSLESS:
            np.testing.assert_array_equal(frame.image, sample.image)
        elif image_format.startswith("mono"):
            assert np.array_equal(frame.image[:, :, 0], frame.image[:, :, 2])
        else:
            assert np.abs(frame.image.astype(int) - sample.image).mean() < 12
    assert [f.stamp_ns for f in frames][1] - frames[0].stamp_ns == 100_000_000


def test_bag_directory_and_camera_info(tmp_path: Path, samples: list[Sample]) -> None:
    path = tmp_path / "recording"
    write_bag(path, samples[:2], BagWriteOptions(storage="sqlite3"))
    assert (path / "metadata.yaml").is_file()
    assert (path / "recording.db3").is_file()
    assert not list(tmp_path.glob(".*partial*"))
    with BagReader(path) as reader:
        assert reader.frame_count == 2
    with Reader(path) as raw_reader:
        connections = [c for c in raw_reader.connections if c.topic == DEFAULT_CAMERA_INFO_TOPIC]
        infos = [
            deserialize(raw, CAMERA_INFO_TYPE, "camera info")
            for _, _, raw in raw_reader.messages(connections=connections)
        ]
    assert [(i.height, i.width) for i in infos] == [FRAME_HW, FRAME_HW]
    assert [header_stamp_ns(i) for i in infos] == [f.stamp_ns for f in load_frames(path)[0]]


def test_writer_refuses_to_overwrite_unless_asked(tmp_path: Path, samples: list[Sample]) -> None:
    path = tmp_path / "bag.mcap"
    write_bag(path, samples[:1])
    with pytest.raises(BagError, match=r"bag\.mcap already exists"):
        write_bag(path, samples[:2])
    write_bag(path, samples[:2], BagWriteOptions(overwrite=True))
    assert len(load_frames(path)[0]) == 2


def test_writer_skips_and_counts_samples_that_do_not_fit(
    tmp_path: Path, samples: list[Sample]
) -> None:
    bad_mask = Sample(samples[0].image, samples[0].mask[:10], 0, "cropped mask")
    grey = Sample(samples[1].image[:, :, 0], samples[1].mask, 0, "grey image")
    summary = write_bag(tmp_path / "b.db3", [bad_mask, samples[2], grey])
    assert summary.frames == 1
    assert summary.skipped == {"wrong size": 2}
    with pytest.raises(BagError, match="no frame could be written"):
        write_bag(tmp_path / "c.db3", [bad_mask])
    assert not (tmp_path / "c.db3").exists()


def test_writer_without_ground_truth_or_camera_info(tmp_path: Path, samples: list[Sample]) -> None:
    path = tmp_path / "plain.mcap"
    summary = write_bag(path, samples[:2], BagWriteOptions(gt_topic="", camera_info_topic=""))
    assert summary.topics == {"camera": DEFAULT_CAMERA_TOPIC}
    frames, stats, topics = load_frames(path)
    assert topics.ground_truth is None
    assert [f.gt for f in frames] == [None, None]
    assert stats.without_gt == 2
