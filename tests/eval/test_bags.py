"""Bags written in both storage formats and read back; damaged bags and bad frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from mess_ros.data.sample import Sample
from mess_ros.eval.bags import (
    DEFAULT_CAMERA_INFO_TOPIC,
    DEFAULT_CAMERA_TOPIC,
    DEFAULT_GT_TOPIC,
    BagReader,
    BagWriteOptions,
    load_frames,
    write_bag,
)
from mess_ros.eval.errors import BagError
from mess_ros.eval.messages import (
    CAMERA_INFO_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_FORMATS,
    IMAGE_TYPE,
    LOAD_TYPE,
    deserialize,
    stamp_to_ns,
)
from tests.eval.builders import (
    FRAME_HW,
    PERIOD_NS,
    START_NS,
    Record,
    image_bytes,
    load_bytes,
    mask_bytes,
    write_raw_bag,
)

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
    assert [stamp_to_ns(i) for i in infos] == [f.stamp_ns for f in load_frames(path)[0]]


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


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
def test_ground_truth_matched_by_stamp_in_any_order_and_missing_counted(
    tmp_path: Path, samples: list[Sample], suffix: str
) -> None:
    """GT logged before, after (late) or never; loads apply to the frames after them."""
    records = []
    for i, sample in enumerate(samples[:6]):
        stamp = START_NS + i * PERIOD_NS
        records.append(Record("/cam/image", stamp + 1000, image_bytes(sample.image, stamp)))
        if i % 3 == 0:
            continue  # frames 0 and 3: no ground truth at all
        delay = -500 if i % 2 else 3 * PERIOD_NS  # before the frame, or after two more frames
        records.append(Record("/cam/labels", stamp + 1000 + delay, mask_bytes(sample.mask, stamp)))
    records.append(Record("/robot/system_load", START_NS + PERIOD_NS + 10, load_bytes(0.25)))
    records.append(Record("/robot/system_load", START_NS + 4 * PERIOD_NS, load_bytes(0.75)))
    path = write_raw_bag(
        tmp_path / f"raw{suffix}",
        {"/cam/image": IMAGE_TYPE, "/cam/labels": IMAGE_TYPE, "/robot/system_load": LOAD_TYPE},
        records,
    )
    frames, stats, topics = load_frames(path)
    assert (topics.camera, topics.ground_truth, topics.load) == (
        "/cam/image",
        "/cam/labels",
        "/robot/system_load",
    )
    assert [f.index for f in frames] == list(range(6))
    has_gt = [f.gt is not None for f in frames]
    assert has_gt == [False, True, True, False, True, True]
    assert stats.without_gt == 2 and stats.unmatched_gt == 0
    for frame in frames:
        if frame.gt is not None:
            np.testing.assert_array_equal(frame.gt, samples[frame.index].mask)
    assert [f.load for f in frames] == [None, 0.25, 0.25, 0.25, 0.75, 0.75]


def test_bad_frames_are_skipped_and_counted(tmp_path: Path, samples: list[Sample]) -> None:
    good = samples[0]
    stamps = [START_NS + i * PERIOD_NS for i in range(5)]
    records = [
        Record("/image", stamps[0], image_bytes(good.image, stamps[0])),
        Record("/image", stamps[1], b"\x00\x01\x00\x00garbage"),
        Record("/image", stamps[2], image_bytes(good.image, stamps[2], "rgb8")[:-40]),
        Record("/image", stamps[3], image_bytes(good.image, stamps[3])),
        Record("/gt", stamps[3], mask_bytes(good.mask[:20], stamps[3])),
        Record("/image", stamps[4], image_bytes(good.image, stamps[4])),
    ]
    path = write_raw_bag(tmp_path / "bad.mcap", {"/image": IMAGE_TYPE, "/gt": IMAGE_TYPE}, records)
    with BagReader(path) as reader:
        frames = list(reader.frames())
        stats = reader.stats
    # Frame 3's ground truth is unusable: the frame stays (latency, exits), without it.
    assert [f.index for f in frames] == [0, 3, 4]
    assert frames[1].gt is None
    assert stats.skipped_total == 2
    assert stats.skipped["corrupt image"] + stats.skipped["bad_data_length"] == 2
    assert stats.bad_gt == {"ground truth size mismatch": 1}
    assert stats.without_gt == 3
    assert any(d.startswith("frame 3: ground truth on /gt:") for d in stats.details)


def test_undecodable_ground_truth_is_counted_on_its_topic(
    tmp_path: Path, samples: list[Sample]
) -> None:
    good = samples[0]
    stamps = [START_NS + i * PERIOD_NS for i in range(2)]
    mono16 = image_bytes(good.image, stamps[1], "mono16")
    records = [
        Record("/image", stamps[0], image_bytes(good.image, stamps[0])),
        Record("/gt", stamps[0], mask_bytes(good.mask, stamps[0])),
        Record("/image", stamps[1], image_bytes(good.image, stamps[1])),
        Record("/gt", stamps[1], mono16),
    ]
    path = write_raw_bag(tmp_path / "gt.mcap", {"/image": IMAGE_TYPE, "/gt": IMAGE_TYPE}, records)
    frames, stats, _ = load_frames(path)
    assert [f.index for f in frames] == [0, 1]
    assert frames[0].gt is not None and frames[1].gt is None
    assert stats.skipped_total == 0 and stats.bad_gt_total == 1
    assert "frame 1: ground truth on /gt" in stats.details[0]


def test_an_unrecognised_mono8_topic_is_offered_as_ground_truth(
    tmp_path: Path, samples: list[Sample]
) -> None:
    sample = samples[0]
    records = [
        Record("/cam/image", START_NS, image_bytes(sample.image, START_NS)),
        Record("/cam/semantic", START_NS, mask_bytes(sample.mask, START_NS)),
        Record("/cam/depth_preview", START_NS, image_bytes(sample.image, START_NS)),
    ]
    types = dict.fromkeys(("/cam/image", "/cam/semantic", "/cam/depth_preview"), IMAGE_TYPE)
    path = write_raw_bag(tmp_path / "semantic.mcap", types, records)
    with BagReader(path, camera_topic="/cam/image") as reader:
        assert reader.topics.ground_truth is None
        assert reader.topics.gt_candidates == ("/cam/semantic",)
    with BagReader(path, camera_topic="/cam/image", gt_topic="") as reader:
        assert reader.topics.gt_candidates == ()


def _two_image_bag(tmp_path: Path, samples: list[Sample]) -> Path:
    records = [
        Record("/front/image", START_NS, image_bytes(samples[0].image, START_NS)),
        Record("/rear/image", START_NS, image_bytes(samples[1].image, START_NS)),
        Record("/load", START_NS - 1, load_bytes(0.5)),
    ]
    types = {"/front/image": IMAGE_TYPE, "/rear/image": IMAGE_TYPE, "/load": LOAD_TYPE}
    return write_raw_bag(tmp_path / "two.db3", types, records)


def test_several_image_topics_need_a_name(tmp_path: Path, samples: list[Sample]) -> None:
    path = _two_image_bag(tmp_path, samples)
    with pytest.raises(BagError, match=r"two\.db3 has several image topics.*/front/image.*/rear"):
        BagReader(path)
    with BagReader(path, camera_topic="/rear/image") as reader:
        (frame,) = reader.frames()
    np.testing.assert_array_equal(frame.image, samples[1].image)


def test_named_topics_are_checked(tmp_path: Path, samples: list[Sample]) -> None:
    path = _two_image_bag(tmp_path, samples)
    with pytest.raises(BagError, match=r"no camera topic '/nope'.*/front/image.*/rear/image"):
        BagReader(path, camera_topic="/nope")
    with pytest.raises(BagError, match=r"message type std_msgs/msg/Float32.*camera topic"):
        BagReader(path, camera_topic="/load")
    with pytest.raises(BagError, match="no ground-truth topic '/gt'"):
        BagReader(path, camera_topic="/front/image", gt_topic="/gt")
    with BagReader(path, camera_topic="/front/image", load_topic="/load") as reader:
        assert [f.load for f in reader.frames()] == [0.5]


def test_bag_without_images_lists_its_topics(tmp_path: Path) -> None:
    path = write_raw_bag(
        tmp_path / "load.mcap", {"/load": LOAD_TYPE}, [Record("/load", 1, load_bytes(0.1))]
    )
    with pytest.raises(BagError, match=r"no camera image topic.*/load \(std_msgs/msg/Float32\)"):
        BagReader(path)


def test_missing_bag_is_named(tmp_path: Path) -> None:
    with pytest.raises(BagError, match=r"nothing\.mcap does not exist"):
        BagReader(tmp_path / "nothing.mcap")


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
@pytest.mark.parametrize("keep", [0.0, 0.5, 0.9])
def test_truncated_bag_is_a_clear_error_naming_the_file(
    tmp_path: Path, small_bag: Path, samples: list[Sample], suffix: str, keep: float
) -> None:
    source = tmp_path / f"full{suffix}"
    write_bag(source, samples)
    data = source.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(BagError, match=rf"cut\{suffix}"), BagReader(cut) as reader:
        list(reader.frames())


@pytest.mark.parametrize("suffix", [".mcap", ".db3"])
@pytest.mark.parametrize("seed", range(4))
def test_corrupt_bag_is_an_error_or_skipped_frames_never_a_crash(
    tmp_path: Path, samples: list[Sample], suffix: str, seed: int
) -> None:
    """Random byte damage: either a BagError naming the file, or frames skipped and counted."""
    source = tmp_path / f"full{suffix}"
    write_bag(source, samples)
    data = bytearray(source.read_bytes())
    rng = np.random.default_rng(seed)
    for position in rng.integers(0, len(data), 64):
        data[position] = int(rng.integers(0, 256))
    damaged = tmp_path / f"damaged{suffix}"
    damaged.write_bytes(bytes(data))
    try:
        with BagReader(damaged) as reader:
            frames = list(reader.frames())
            stats = reader.stats
    except BagError as err:
        assert "damaged" in str(err)
    else:
        assert len(frames) + stats.skipped_total == len(samples)


def test_garbage_file_is_a_bag_error(tmp_path: Path) -> None:
    path = tmp_path / "noise.db3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(BagError, match=r"cannot open bag .*noise\.db3"):
        BagReader(path)
