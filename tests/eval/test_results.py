"""Per-run figures from frame records, checked against values computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mess_ros.data.labels import LabelSet
from mess_ros.eval.results import (
    Evaluation,
    ExampleCollector,
    FrameRecord,
    RunResult,
    latency_stats,
    matched_miou,
)

LABELS = LabelSet("three", ("a", "b", "c"), ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
GT = np.array([[0, 0, 1, 1], [2, 2, 255, 255]], dtype=np.uint8)
PERFECT = np.array([[0, 0, 1, 1], [2, 2, 0, 0]], dtype=np.uint8)
# Hand count against GT: a: TP 1, FN 1 (a pixel predicted b); b: TP 2, FP 1; c: TP 2.
ONE_WRONG = np.array([[0, 1, 1, 1], [2, 2, 1, 1]], dtype=np.uint8)


def record(index: int, exit_id: str | None, latency_ms: float | None, **kw: object) -> FrameRecord:
    values: dict[str, object] = {
        "index": index,
        "stamp_ns": 1000 + index,
        "arrival_ms": 50.0 * index,
        "has_gt": True,
        "processed": exit_id is not None,
        "exit_id": exit_id,
        "exit_index": {"early": 0, "final": 1}.get(exit_id or ""),
        "latency_ms": latency_ms,
        "deadline_ms": 40.0,
    }
    values.update(kw)
    if values["processed"] and latency_ms is not None:
        values["met_deadline"] = latency_ms <= 40.0
    return FrameRecord(**values)  # type: ignore[arg-type]


def build_run() -> RunResult:
    run = RunResult("hybrid@40", {"policy.name": "hybrid"}, LABELS, wall_s=2.0)
    run.add(record(0, "final", 30.0), PERFECT, GT)
    run.add(record(1, "early", 10.0), ONE_WRONG, GT)
    run.add(record(2, "early", 50.0), PERFECT, GT)
    run.add(record(3, None, None), None, GT)  # dropped
    run.add(record(4, "final", 20.0, has_gt=False), PERFECT, None)  # no ground truth
    return run


def test_accuracy_figures_match_the_hand_count() -> None:
    summary = build_run().summary()
    assert (summary.frames, summary.processed, summary.dropped, summary.scored) == (5, 4, 1, 3)
    # Summed over frames 0-2: a TP 5 FN 1, b TP 6 FP 1, c TP 6 -> IoU 5/6, 6/7, 1.
    assert summary.iou_per_class == pytest.approx({"a": 5 / 6, "b": 6 / 7, "c": 1.0})
    assert summary.miou == pytest.approx((5 / 6 + 6 / 7 + 1.0) / 3)
    assert summary.pixel_accuracy == pytest.approx(17 / 18)
    assert summary.exit_usage == {"early": 2, "final": 2}
    assert list(summary.exit_usage) == ["early", "final"]  # shallow to deep
    # Exit "early" (frames 1, 2): a TP 3 FN 1, b TP 4 FP 1, c TP 4.
    assert summary.miou_per_exit["early"] == pytest.approx((3 / 4 + 4 / 5 + 1.0) / 3)
    assert summary.miou_per_exit["final"] == pytest.approx(1.0)


def test_timing_figures() -> None:
    summary = build_run().summary()
    assert summary.deadline_ms == 40.0
    assert summary.deadline_misses == 1
    assert summary.deadline_miss_rate == pytest.approx(1 / 4)
    assert summary.drop_rate == pytest.approx(1 / 5)
    assert summary.frames_per_s == pytest.approx(4 / 2.0)
    assert summary.latency_ms["p50"] == pytest.approx(25.0)
    assert summary.latency_ms["max"] == 50.0
    assert summary.latency_ms["mean"] == pytest.approx(27.5)


def test_latency_quantiles_interpolate_and_handle_no_data() -> None:
    stats = latency_stats([float(v) for v in range(1, 101)])
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p95"] == pytest.approx(95.05)
    assert stats["p99"] == pytest.approx(99.01)
    assert latency_stats([]) == {"mean": None, "p50": None, "p95": None, "p99": None, "max": None}


def test_ground_truth_of_another_label_set_is_counted_not_fatal() -> None:
    run = RunResult("x", {}, LABELS)
    foreign = GT.copy()
    foreign[0, 0] = 7
    run.add(record(0, "final", 5.0), PERFECT, foreign)
    assert run.invalid_gt == 1
    assert run.records[0].has_gt is False
    assert run.summary().miou is None


def test_subsets_and_matching_between_runs() -> None:
    first = build_run()
    second = RunResult("other", {}, LABELS)
    second.add(record(1, "final", 5.0), PERFECT, GT)
    second.add(record(2, "final", 5.0), PERFECT, GT)
    mine, theirs, count = matched_miou(first, second)
    assert count == 2
    assert mine == pytest.approx(first.miou([1, 2]))
    assert theirs == pytest.approx(1.0)
    evaluation = Evaluation("b.mcap", "offline", {}, LABELS, {}, [first, second])
    assert evaluation.common_processed() == {1, 2}
    assert evaluation.run("other") is second
    with pytest.raises(KeyError, match="runs: hybrid@40, other"):
        evaluation.run("missing")


def test_evaluation_json_is_strict_json() -> None:
    run = build_run()
    run.records[0].confidence = math.nan
    text = json.dumps(
        Evaluation("b.mcap", "offline", {}, LABELS, {}, [run]).to_dict(), allow_nan=False
    )
    data = json.loads(text)
    (entry,) = data["runs"]
    assert entry["summary"]["exit_usage"] == {"early": 2, "final": 2}
    assert entry["frames"][0]["confidence"] is None
    assert [f["index"] for f in entry["frames"]] == [0, 1, 2, 3, 4]


def test_examples_are_evenly_spaced_and_collect_every_run() -> None:
    collector = ExampleCollector(frame_count=10, count=4)
    assert collector.wanted == {0, 3, 6, 9}
    image = np.zeros((2, 4, 3), dtype=np.uint8)
    for index in range(10):
        collector.offer_frame(index, image, GT)
    collector.offer_mask("a", 3, PERFECT, "final")
    collector.offer_mask("a", 4, PERFECT, "final")  # not an example: ignored
    examples = collector.collected()
    assert [e.index for e in examples] == [0, 3, 6, 9]
    assert set(examples[1].masks) == {"a"} and examples[1].exits == {"a": "final"}
    assert ExampleCollector(frame_count=2, count=6).wanted == {0, 1}
    assert ExampleCollector(frame_count=5, count=0).wanted == set()
