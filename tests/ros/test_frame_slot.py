"""The latest-frame-wins mailboxes, one per camera, between callbacks and the inference thread."""

from __future__ import annotations

import threading
import time

from mess_ros.ros.frame_slot import LatestFrames


def test_new_item_replaces_the_waiting_one_of_its_stream() -> None:
    slots: LatestFrames[int] = LatestFrames(2)
    assert slots.put(0, 1) is None
    assert slots.put(0, 2) == 1
    assert slots.put(1, 10) is None
    assert slots.put(0, 3) == 2
    assert slots.wait(0) == {0: 3, 1: 10}


def test_only_the_chosen_item_is_taken() -> None:
    slots: LatestFrames[int] = LatestFrames(3)
    slots.put(0, 1)
    slots.put(2, 5)
    waiting = slots.wait(0)
    assert slots.take(2, waiting[2])
    assert slots.wait(0) == {0: 1}
    # Replaced between the look and the take: the newer frame stays for the next choice.
    waiting = slots.wait(0)
    slots.put(0, 4)
    assert not slots.take(0, waiting[0])
    assert slots.wait(0) == {0: 4}


def test_wait_times_out_when_every_stream_is_empty() -> None:
    slots: LatestFrames[int] = LatestFrames(2)
    start = time.monotonic()
    assert slots.wait(0.05) == {}
    assert time.monotonic() - start >= 0.04


def test_put_on_any_stream_wakes_a_waiting_taker() -> None:
    slots: LatestFrames[str] = LatestFrames(3)
    got: list[dict[int, str]] = []
    taker = threading.Thread(target=lambda: got.append(slots.wait(5.0)))
    taker.start()
    time.sleep(0.05)
    slots.put(2, "frame")
    taker.join(2.0)
    assert got == [{2: "frame"}]


def test_close_wakes_waiters_and_refuses_items() -> None:
    slots: LatestFrames[int] = LatestFrames(2)
    slots.put(0, 7)
    slots.put(1, 8)
    assert sorted(slots.close()) == [7, 8]
    assert slots.closed
    got: list[dict[int, int]] = []
    taker = threading.Thread(target=lambda: got.append(slots.wait(5.0)))
    taker.start()
    taker.join(2.0)
    assert not taker.is_alive()
    assert got == [{}]
    assert slots.put(1, 9) == 9
