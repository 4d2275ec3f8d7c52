"""The client's camera trigger: a fixed grid, no bursts after falling behind."""

from __future__ import annotations

import time

import pytest
from sensor_msgs.msg import Image

from mess_ros.ros.client import FrameTrace, NodeClient, TickGrid
from mess_ros.ros.errors import RosError
from tests.ros.conftest import next_domain_id

PERIOD_S = 0.02  # 50 Hz


def test_ticks_lie_a_period_apart_and_a_stall_is_not_made_up_in_a_burst() -> None:
    grid = TickGrid(1 / PERIOD_S)
    grid.wait()
    first = time.monotonic()
    grid.wait()
    assert time.monotonic() - first >= PERIOD_S * 0.95
    time.sleep(3 * PERIOD_S)  # the caller falls behind by several ticks
    grid.wait()  # restarts the grid from now
    restarted = time.monotonic()
    grid.wait()
    assert time.monotonic() - restarted >= PERIOD_S * 0.95  # the missed ticks are skipped


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(RosError, match="above 0 Hz"):
        TickGrid(0.0)


def test_an_unknown_camera_is_named_in_the_error() -> None:
    with NodeClient(next_domain_id(), name="mess_camera_check", cameras=["front"]) as client:
        with pytest.raises(RosError, match=r"camera 'rear'.*'front'"):
            client.publish_image(Image(), camera="rear")
        with pytest.raises(RosError, match=r"camera ''"):
            _ = client.image_pub  # a client of several cameras has no plain topic
        assert client.publish_image(Image(), camera="front").camera == "front"


def test_a_frame_is_judged_by_its_mask_at_this_subscriber() -> None:
    trace = FrameTrace(stamp_ns=5_000_000_000, mask_system_ns=5_030_000_000)
    assert trace.end_to_end_ms == pytest.approx(30.0)
    assert trace.lateness_ms(25.0) == pytest.approx(5.0)
    assert trace.met(30.0) and not trace.met(29.9)
    lost = FrameTrace(stamp_ns=5_000_000_000)
    assert lost.end_to_end_ms is None and lost.lateness_ms(25.0) is None
    assert not lost.met(1e9)  # a mask that never came misses
