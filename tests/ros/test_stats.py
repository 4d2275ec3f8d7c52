"""Counters and windowed figures behind /diagnostics."""

from __future__ import annotations

import math

import pytest

from mess_ros.ros.stats import DROP_STALE, NodeStatistics
from tests.clock import ManualClock


def test_rates_drops_and_exits() -> None:
    clock = ManualClock()
    stats = NodeStatistics(window=10, clock=clock, bad_input_causes=frozenset({"zero_size"}))
    for _ in range(20):
        stats.frame_received()
    stats.frame_dropped(DROP_STALE)
    stats.frame_dropped("zero_size")
    stats.frame_dropped("zero_size")
    for i in range(10):
        stats.frame_published("layer1_0:linear" if i < 4 else "final", 10.0 + i, 12.0 + i, i != 0)
    clock.now_s += 2.0
    snap = stats.snapshot()
    assert snap.input_rate_hz == pytest.approx(10.0)
    assert snap.output_rate_hz == pytest.approx(5.0)
    assert snap.dropped == {"stale": 1, "zero_size": 2}
    assert snap.dropped_total == 3
    assert snap.bad_input_in_period == 2
    assert snap.exit_histogram == {"layer1_0:linear": 4, "final": 6}
    assert snap.deadline_miss_rate == pytest.approx(0.1)
    assert snap.latency_mean_ms == pytest.approx(14.5)
    assert snap.latency_p95_ms == pytest.approx(18.55)
    assert snap.end_to_end_mean_ms == pytest.approx(16.5)
    keys = dict(snap.key_values())
    assert keys["dropped.zero_size"] == "2"
    assert keys["exit.final"] == "6"
    assert keys["load"] == "none"

    # The next period starts from zero; totals and windows carry on.
    clock.now_s += 1.0
    snap = stats.snapshot()
    assert snap.input_rate_hz == 0.0
    assert snap.dropped_in_period == 0
    assert snap.frames_received == 20


def test_window_forgets_old_frames_and_empty_is_nan() -> None:
    stats = NodeStatistics(window=3, clock=ManualClock())
    snap = stats.snapshot()
    assert math.isnan(snap.latency_mean_ms)
    assert snap.deadline_miss_rate == 0.0
    for ms in (100.0, 1.0, 1.0, 1.0):
        stats.frame_published("final", ms, ms, None)
    snap = stats.snapshot()
    assert snap.latency_mean_ms == pytest.approx(1.0)
    assert snap.window_frames == 3
    assert snap.deadline_miss_rate == 0.0


def test_loads() -> None:
    stats = NodeStatistics()
    stats.load_accepted(0.25)
    stats.load_rejected()
    snap = stats.snapshot()
    assert snap.load == 0.25
    assert snap.loads_rejected == 1
    assert dict(snap.key_values())["load"] == "0.250"


def test_misses_split_into_infeasible_and_avoidable() -> None:
    stats = NodeStatistics(window=20, clock=ManualClock())
    stats.frame_published("final", 10.0, 12.0, True)
    stats.frame_published("final", 10.0, 12.0, False)  # the policy chose too deep: avoidable
    stats.frame_published("layer1_0:linear", 10.0, 40.0, False, infeasible=True)
    stats.frame_published("layer1_0:linear", 10.0, 12.0, True, infeasible=True)  # made it anyway
    stats.frame_dropped("late", infeasible=True)
    snap = stats.snapshot()
    assert snap.deadline_miss_rate == pytest.approx(3 / 5)
    assert snap.deadline_infeasible_rate == pytest.approx(2 / 5)
    assert snap.deadline_avoidable_miss_rate == pytest.approx(1 / 5)
    assert (snap.deadline_misses_total, snap.deadline_infeasible_total) == (3, 2)
    assert snap.window_frames == 4  # the dropped frame has no latency to average
    keys = dict(snap.key_values())
    assert keys["deadline_infeasible_rate"] == "0.4000"
    assert keys["deadline_avoidable_miss_rate"] == "0.2000"


def test_a_camera_counts_for_itself_and_for_the_node() -> None:
    clock = ManualClock()
    node = NodeStatistics(clock=clock)
    front = NodeStatistics(clock=clock, parent=node)
    rear = NodeStatistics(clock=clock, parent=node)
    for camera in (front, front, rear):
        camera.frame_received()
    front.frame_published("final", 10.0, 12.0, True)
    front.frame_dropped("late", infeasible=True)
    rear.frame_published("layer1_0:linear", 5.0, 30.0, False)
    clock.now_s += 1.0
    mine, whole = front.snapshot(), node.snapshot()
    assert (mine.frames_received, mine.frames_published, mine.dropped) == (2, 1, {"late": 1})
    assert mine.exit_histogram == {"final": 1}
    assert (mine.deadline_misses_total, mine.deadline_infeasible_total) == (1, 1)
    assert (whole.frames_received, whole.frames_published) == (3, 2)
    assert whole.exit_histogram == {"final": 1, "layer1_0:linear": 1}
    # The node's misses: the infeasible drop of front and the avoidable miss of rear.
    assert (whole.deadline_misses_total, whole.deadline_infeasible_total) == (2, 1)
    assert whole.deadline_avoidable_miss_rate == pytest.approx(1 / 3)
    assert rear.snapshot().deadline_avoidable_miss_rate == pytest.approx(1.0)
