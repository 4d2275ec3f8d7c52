"""Bags read back: topics recognised or named, ground truth matched, damaged bags and frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mess_ros.data.sample import Sample
from mess_ros.eval.bag_reader import BagReader, load_frames
from mess_ros.eval.bag_writer import write_bag
from mess_ros.eval.errors import BagError
from mess_ros.eval.messages import (
    IMAGE_TYPE,
    LOAD_TYPE,
)
from tests.eval.builders import (
    PERIOD_NS,
    START_NS,
    Record,
    image_bytes,
    load_bytes,
    mask_bytes,
    write_raw_bag,
)


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
