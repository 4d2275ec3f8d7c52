"""The latest-frame-wins mailbox between callbacks and the inference thread."""

from __future__ import annotations

import threading
import time

from mess_ros.ros.frame_slot import LatestSlot


def test_new_item_replaces_waiting_one() -> None:
    slot: LatestSlot[int] = LatestSlot()
    assert slot.put(1) is None
    assert slot.put(2) == 1
    assert slot.put(3) == 2
    assert slot.take(0) == 3
    assert slot.take(0) is None


def test_take_times_out_when_empty() -> None:
    slot: LatestSlot[int] = LatestSlot()
    start = time.monotonic()
    assert slot.take(0.05) is None
    assert time.monotonic() - start >= 0.04


def test_put_wakes_a_waiting_taker() -> None:
    slot: LatestSlot[str] = LatestSlot()
    got: list[str | None] = []
    taker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    taker.start()
    time.sleep(0.05)
    slot.put("frame")
    taker.join(2.0)
    assert got == ["frame"]


def test_close_wakes_waiters_and_refuses_items() -> None:
    slot: LatestSlot[int] = LatestSlot()
    slot.put(7)
    assert slot.close() == 7
    assert slot.closed
    got: list[int | None] = []
    taker = threading.Thread(target=lambda: got.append(slot.take(5.0)))
    taker.start()
    taker.join(2.0)
    assert not taker.is_alive()
    assert got == [None]
    assert slot.put(8) == 8
