"""Which camera's frame runs next, and the deadline its exits plan for."""

from __future__ import annotations

import pytest

from mess_ros.runtime.errors import EngineError
from mess_ros.runtime.frame_scheduler import ArrivalClock, FrameScheduler, WaitingFrame

MS = 1_000_000
NOW = 1_000 * MS


def frame(
    stream: int,
    deadline_ms: float | None,
    *,
    earliest_ms: float = 10.0,
    priority: int = 0,
    received_ms: float = 0.0,
) -> WaitingFrame:
    """A frame whose deadline lies ``deadline_ms`` after NOW (None: no deadline)."""
    return WaitingFrame(
        stream=stream,
        deadline_ns=None if deadline_ms is None else NOW + round(deadline_ms * MS),
        priority=priority,
        earliest_ms=earliest_ms,
        received_ns=NOW - round(received_ms * MS),
    )


def plan_ms(scheduler: FrameScheduler, *frames: WaitingFrame) -> tuple[int, float | None]:
    choice = scheduler.choose(frames, NOW)
    return choice.frame.stream, choice.planned_ms(NOW)


def test_a_frame_alone_plans_for_its_own_deadline() -> None:
    scheduler = FrameScheduler()
    assert plan_ms(scheduler, frame(0, 80.0)) == (0, 80.0)
    scheduler.served(30.0)
    assert plan_ms(scheduler, frame(0, 80.0)) == (0, 80.0)
    assert plan_ms(scheduler, frame(0, None)) == (0, None)
    with pytest.raises(EngineError, match="no frames"):
        scheduler.choose([], NOW)


def test_earliest_deadline_first_then_the_older_frame() -> None:
    scheduler = FrameScheduler()
    stream, _ = plan_ms(scheduler, frame(0, 90.0), frame(1, 60.0), frame(2, 75.0))
    assert stream == 1
    # Equal deadlines: the frame that waited longer.
    stream, _ = plan_ms(scheduler, frame(0, 60.0, received_ms=1), frame(1, 60.0, received_ms=5))
    assert stream == 1
    # A frame without a deadline waits for those with one.
    assert plan_ms(scheduler, frame(0, None), frame(1, 500.0))[0] == 1


def test_frames_that_can_still_make_it_go_before_lost_ones() -> None:
    """Serving a lost frame first would make the next one late too."""
    scheduler = FrameScheduler()
    lost = frame(0, 5.0, earliest_ms=10.0)  # needs 10 ms, 5 left
    saveable = frame(1, 40.0, earliest_ms=10.0)
    choice = scheduler.choose([lost, saveable], NOW)
    assert choice.frame.stream == 1
    # ... and the lost frame reserves nothing: the saveable one plans for its own deadline.
    assert choice.planned_ms(NOW) == 40.0 and choice.reserved_for == 0 and choice.waiting == 1
    # Once nothing else waits, the lost frame runs (its late-frame action decides how).
    assert scheduler.choose([lost], NOW).frame.stream == 0


def test_depth_leaves_typical_time_to_the_frames_behind() -> None:
    scheduler = FrameScheduler()
    scheduler.served(20.0)
    # Three cameras triggered together, 100 ms each: the first plans for 100 - 2 x 20 ms.
    frames = [frame(i, 100.0, received_ms=3 - i) for i in range(3)]
    choice = scheduler.choose(frames, NOW)
    assert choice.frame.stream == 0
    assert choice.planned_ms(NOW) == pytest.approx(60.0)
    assert (choice.waiting, choice.reserved_for) == (2, 2)
    # The second plans for 100 - 20, the last for its own deadline.
    assert plan_ms(scheduler, *frames[1:]) == (1, pytest.approx(80.0))
    assert plan_ms(scheduler, frames[2]) == (2, 100.0)
    # A frame behind reserves at least its earliest exit.
    slow = frame(1, 100.0, earliest_ms=45.0, received_ms=0)
    assert plan_ms(scheduler, frames[0], slow) == (0, pytest.approx(55.0))


def test_earliest_exits_are_reserved_when_typical_times_do_not_fit() -> None:
    scheduler = FrameScheduler()
    scheduler.served(40.0)
    frames = [frame(i, 60.0, earliest_ms=10.0, received_ms=3 - i) for i in range(3)]
    # 60 - 2 x 40 leaves the first frame less than its earliest exit: reserve 2 x 10 ms instead.
    assert plan_ms(scheduler, *frames) == (0, pytest.approx(40.0))
    # A frame behind that cannot be saved even so reserves nothing.
    hopeless = frame(2, 25.0, earliest_ms=20.0)
    choice = scheduler.choose([frame(0, 60.0, earliest_ms=10.0), hopeless], NOW)
    assert choice.frame.stream == 2  # the earliest deadline, and it can still make it alone
    choice = scheduler.choose([frame(0, 18.0, earliest_ms=10.0), hopeless], NOW)
    assert choice.frame.stream == 0
    assert choice.planned_ms(NOW) == 18.0 and choice.reserved_for == 0
    # One that can be saved is: 30 - 15 ms leaves the first frame more than its earliest exit.
    crowded = [frame(0, 30.0, earliest_ms=10.0), frame(1, 30.0, earliest_ms=15.0, received_ms=-1)]
    assert plan_ms(scheduler, *crowded) == (0, pytest.approx(15.0))


def test_higher_priority_runs_first_and_keeps_its_depth() -> None:
    scheduler = FrameScheduler()
    scheduler.served(20.0)
    front = frame(0, 100.0, priority=1)
    side = frame(1, 50.0)
    choice = scheduler.choose([side, front], NOW)
    assert choice.frame.stream == 0 and choice.planned_ms(NOW) == 100.0
    # Among equal priorities the deadline decides and depth is shared.
    other_front = frame(2, 120.0, priority=1)
    assert plan_ms(scheduler, side, front, other_front) == (0, pytest.approx(100.0))
    close_front = frame(2, 110.0, priority=1)
    assert plan_ms(scheduler, side, front, close_front) == (0, pytest.approx(90.0))


def test_a_frame_due_from_another_camera_is_planned_for() -> None:
    """Cameras triggered together: the first frame in must not take the others' time."""
    scheduler = FrameScheduler()
    scheduler.served(20.0)
    first = frame(0, 100.0)
    due = [
        WaitingFrame(stream=i, deadline_ns=NOW + 100 * MS, priority=0, earliest_ms=10.0,
                     received_ns=NOW + MS)
        for i in (1, 2)
    ]  # fmt: skip
    choice = scheduler.choose([first], NOW, expected=due)
    assert choice.frame.stream == 0 and choice.planned_ms(NOW) == pytest.approx(60.0)
    assert (choice.waiting, choice.reserved_for) == (0, 2)
    # A frame due after this one's deadline cannot be held up by it.
    late = WaitingFrame(1, NOW + 300 * MS, 0, 10.0, received_ns=NOW + 150 * MS)
    assert scheduler.choose([first], NOW, expected=[late]).planned_ms(NOW) == 100.0


def test_arrival_clock_follows_a_cameras_rhythm() -> None:
    clock = ArrivalClock(alpha=0.5)
    assert clock.next_origin_ns(NOW) is None
    clock.frame(NOW)
    assert clock.next_origin_ns(NOW) is None  # one frame says nothing of the period
    clock.frame(NOW + 100 * MS)
    assert clock.next_origin_ns(NOW + 100 * MS) == NOW + 200 * MS
    clock.frame(NOW + 220 * MS)  # a late frame moves the period half-way
    assert clock.next_origin_ns(NOW + 220 * MS) == NOW + 330 * MS
    clock.frame(NOW + 220 * MS)  # the same frame again changes nothing
    assert clock.next_origin_ns(NOW + 220 * MS) == NOW + 330 * MS
    # Overdue by more than half a period: the camera is no longer waited for.
    assert clock.next_origin_ns(NOW + 380 * MS) == NOW + 330 * MS
    assert clock.next_origin_ns(NOW + 390 * MS) is None
    # After a long pause the period is measured again from scratch.
    clock.frame(NOW + 5_000 * MS)
    assert clock.next_origin_ns(NOW + 5_000 * MS) is None
    clock.frame(NOW + 5_050 * MS)
    assert clock.next_origin_ns(NOW + 5_050 * MS) == NOW + 5_100 * MS


def test_service_time_follows_recent_frames() -> None:
    scheduler = FrameScheduler(alpha=0.5)
    assert scheduler.typical_service_ms is None
    scheduler.served(10.0)
    scheduler.served(20.0)
    scheduler.served(float("nan"))
    assert scheduler.typical_service_ms == pytest.approx(15.0)
    with pytest.raises(EngineError, match="weight"):
        FrameScheduler(alpha=0.0)
