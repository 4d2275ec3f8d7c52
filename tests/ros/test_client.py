"""The client's camera trigger: a fixed grid, no bursts after falling behind."""

from __future__ import annotations

import time

import pytest

from mess_ros.ros.client import TickGrid
from mess_ros.ros.errors import RosError

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
