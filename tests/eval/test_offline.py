"""Offline evaluation of a small bag with a tiny model, every frame and at the recorded rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mess_ros.common.metrics import confusion_matrix, mean_iou
from mess_ros.config import SegmentationConfig
from mess_ros.data.sample import Sample
from mess_ros.eval.bag_reader import load_frames
from mess_ros.eval.bag_writer import BagWriteOptions, write_bag
from mess_ros.eval.errors import EvalError
from mess_ros.eval.messages import IMAGE_TYPE, LOAD_TYPE
from mess_ros.eval.offline import OfflineEvaluator, OfflineOptions, build_engines, evaluate_offline
from mess_ros.eval.runs import build_runs
from mess_ros.runtime.engine import SegmentationEngine
from tests.eval.builders import (
    EARLY_EXIT,
    NUM_FRAMES,
    PERIOD_NS,
    START_NS,
    Record,
    image_bytes,
    load_bytes,
    mask_bytes,
    write_raw_bag,
)

QUIET = OfflineOptions(progress=False)


def test_every_frame_mode_scores_what_the_engine_produces(
    small_bag: Path, base_config: SegmentationConfig
) -> None:
    """The report's mIoU is the one computed directly from the engine's masks."""
    evaluation = evaluate_offline(small_bag, build_runs(base_config), QUIET)
    (run,) = evaluation.runs
    summary = run.summary()
    assert evaluation.mode == "offline"
    assert (summary.frames, summary.processed, summary.dropped, summary.scored) == (8, 8, 0, 8)
    assert summary.exit_usage == {"final": NUM_FRAMES}
    assert summary.latency_ms["p50"] is not None and summary.latency_ms["p50"] > 0
    frames, _, _ = load_frames(small_bag)
    engine = SegmentationEngine(base_config)
    labels = engine.labels
    total = np.zeros((labels.num_classes, labels.num_classes), dtype=np.int64)
    for frame in frames:
        assert frame.gt is not None
        total += confusion_matrix(frame.gt, engine.infer(frame.image).mask, labels.num_classes)
    assert summary.miou == pytest.approx(mean_iou(total), abs=1e-12)
    assert [r.index for r in run.records] == list(range(NUM_FRAMES))
    assert evaluation.read["frames"] == NUM_FRAMES
    assert [e.index for e in evaluation.examples] == [0, 1, 3, 4, 6, 7]


def test_several_configurations_see_the_same_frames(
    small_bag: Path, base_config: SegmentationConfig
) -> None:
    """final, an always-confident early exit, and a fixed exit, in one pass."""
    base_config.policy.image_thresholds = [0.0]
    base_config.policy.fixed_exit = EARLY_EXIT
    specs = build_runs(base_config, ["final", "confidence", "fixed"])
    evaluation = evaluate_offline(small_bag, specs, QUIET)
    final, confidence, fixed = (run.summary() for run in evaluation.runs)
    assert final.exit_usage == {"final": NUM_FRAMES}
    assert confidence.exit_usage == {EARLY_EXIT: NUM_FRAMES}
    assert fixed.exit_usage == {EARLY_EXIT: NUM_FRAMES}
    # The same exit on the same frames gives the same masks whatever the policy.
    assert confidence.miou == pytest.approx(fixed.miou, abs=1e-12)
    assert final.miou_per_exit == {"final": final.miou}
    assert evaluation.common_processed() == set(range(NUM_FRAMES))
    for example in evaluation.examples:
        assert set(example.masks) == {"final", "confidence", "fixed"}
        np.testing.assert_array_equal(example.masks["confidence"], example.masks["fixed"])


def test_realtime_mode_drops_frames_that_arrive_while_busy(
    tmp_path: Path, samples: list[Sample], base_config: SegmentationConfig
) -> None:
    """At 100 kHz every frame lands while the first is processed: only first and last run."""
    burst = tmp_path / "burst.mcap"
    write_bag(burst, samples, BagWriteOptions(rate_hz=100_000.0))
    options = OfflineOptions(progress=False, realtime=True)
    evaluation = evaluate_offline(burst, build_runs(base_config), options)
    (run,) = evaluation.runs
    assert evaluation.mode == "offline-realtime"
    assert [r.index for r in run.records if r.processed] == [0, NUM_FRAMES - 1]
    dropped = [r for r in run.records if not r.processed]
    assert len(dropped) == NUM_FRAMES - 2
    assert all("replaced by a newer frame" in r.reason for r in dropped)
    first, last = run.records[0], run.records[-1]
    assert first.latency_ms == pytest.approx(first.measured_ms, rel=0.5, abs=1.0)
    # The last frame waited in the slot until the first was done: its latency includes that.
    assert last.latency_ms is not None and first.latency_ms is not None
    assert last.measured_ms is not None
    waited_ms = first.latency_ms - last.arrival_ms
    assert last.latency_ms >= waited_ms + last.measured_ms - 1e-6
    assert run.summary().drop_rate == pytest.approx((NUM_FRAMES - 2) / NUM_FRAMES)


def test_realtime_mode_at_a_slow_rate_drops_nothing(
    small_bag: Path, base_config: SegmentationConfig
) -> None:
    options = OfflineOptions(progress=False, realtime=True)
    (run,) = evaluate_offline(small_bag, build_runs(base_config, ["final@1000"]), options).runs
    summary = run.summary()
    assert summary.dropped == 0
    assert summary.deadline_misses == 0 and summary.deadline_miss_rate == 0.0
    assert [r.arrival_ms for r in run.records] == pytest.approx([50.0 * i for i in range(8)])


def test_recorded_load_reaches_the_engine(
    tmp_path: Path, samples: list[Sample], base_config: SegmentationConfig
) -> None:
    records = []
    for i, sample in enumerate(samples[:4]):
        stamp = START_NS + i * PERIOD_NS
        records.append(Record("/load/system_load", stamp - 1, load_bytes(0.1 * (i + 1))))
        records.append(Record("/camera/image", stamp, image_bytes(sample.image, stamp)))
        records.append(Record("/camera/gt", stamp, mask_bytes(sample.mask, stamp)))
    types = {"/camera/image": IMAGE_TYPE, "/camera/gt": IMAGE_TYPE, "/load/system_load": LOAD_TYPE}
    bag = write_raw_bag(tmp_path / "load.db3", types, records)
    for realtime in (False, True):
        options = OfflineOptions(progress=False, realtime=realtime)
        evaluation = evaluate_offline(bag, build_runs(base_config), options)
        loads = [r.load for r in evaluation.runs[0].records]
        assert loads == pytest.approx([0.1, 0.2, 0.3, 0.4])
        assert evaluation.topics["load"] == "/load/system_load"


def test_max_frames_and_frames_without_ground_truth(
    tmp_path: Path, samples: list[Sample], base_config: SegmentationConfig
) -> None:
    bag = tmp_path / "nogt.mcap"
    write_bag(bag, samples, BagWriteOptions(gt_topic=""))
    options = OfflineOptions(progress=False, max_frames=3)
    evaluation = evaluate_offline(bag, build_runs(base_config), options)
    summary = evaluation.runs[0].summary()
    assert (summary.frames, summary.processed, summary.scored) == (3, 3, 0)
    assert summary.miou is None
    assert evaluation.read["without_gt"] == 3


def test_evaluator_reuses_prepared_engines_on_frames_in_memory(
    small_bag: Path, base_config: SegmentationConfig
) -> None:
    """The API a benchmark uses: the same engines, timed bare and inside the evaluator."""
    frames, _, topics = load_frames(small_bag)
    engines = build_engines(build_runs(base_config, ["final", "hybrid@50"]))
    assert engines[0][1].checkpoint is engines[1][1].checkpoint  # loaded once
    runs, examples = OfflineEvaluator(engines, QUIET).evaluate(frames, topics.frame_count)
    assert [r.name for r in runs] == ["final", "hybrid@50"]
    assert all(len(r.records) == NUM_FRAMES for r in runs)
    assert all(0 < r.engine_s <= r.wall_s for r in runs)
    assert len(examples.collected()) == 6
    with pytest.raises(EvalError, match="unique"):
        OfflineEvaluator([engines[0], engines[0]])
    with pytest.raises(EvalError, match="at least one"):
        OfflineEvaluator([])


def test_bag_whose_frames_are_all_unusable_is_an_error(
    tmp_path: Path, base_config: SegmentationConfig
) -> None:
    records = [Record("/image", START_NS + i, b"\x00\x01\x00\x00broken") for i in range(3)]
    bag = write_raw_bag(tmp_path / "broken.mcap", {"/image": IMAGE_TYPE}, records)
    with pytest.raises(EvalError, match=r"broken\.mcap has no usable frame.*3 skipped"):
        evaluate_offline(bag, build_runs(base_config), QUIET)
