"""Per-cause warning throttling."""

from __future__ import annotations

from mess_ros.ros.throttle import WarningThrottle
from tests.clock import ManualClock


def test_one_message_per_period_per_cause() -> None:
    clock = ManualClock(0.0)
    throttle = WarningThrottle(period_s=5.0, clock=clock)
    assert throttle.filter("zero_size", "a") == "a"
    assert throttle.filter("zero_size", "b") is None
    assert throttle.filter("zero_size", "c") is None
    # Another cause has its own clock.
    assert throttle.filter("bad_step", "d") == "d"
    clock.now_s = 5.0
    assert throttle.filter("zero_size", "e") == "e (2 more of this kind since the last report)"
    assert throttle.filter("zero_size", "f") is None
    clock.now_s = 10.0
    assert throttle.filter("bad_step", "g") == "g"
