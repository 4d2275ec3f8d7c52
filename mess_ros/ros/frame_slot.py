"""One-place mailboxes, one per camera, between the subscription callbacks and the inference thread.

Segmentation is slower than many cameras. A queue would make every mask
later than the one before; a single place per camera where a new frame
replaces the one still waiting keeps the latency bounded, and what was
replaced is handed back so the caller can count it as a stale drop. ``put``
never waits for inference, which is what keeps the ROS callbacks responsive.

The inference thread sees every camera's waiting frame at once
(:meth:`LatestFrames.wait`), lets the scheduler pick one and removes only
that one (:meth:`LatestFrames.take`); the others keep waiting and may still
be replaced by newer frames of their camera.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestFrames(Generic[T]):
    """At most one waiting item per stream (``0 .. streams - 1``); a new item replaces it."""

    def __init__(self, streams: int = 1) -> None:
        self._condition = threading.Condition()
        self._items: list[T | None] = [None] * streams
        self._closed = False

    def put(self, stream: int, item: T) -> T | None:
        """Offer ``item`` for ``stream``; returns the item it replaced (a stale frame), if any.

        After :meth:`close` the item is refused and handed back, so nothing is
        silently lost during shutdown.
        """
        with self._condition:
            if self._closed:
                return item
            replaced = self._items[stream]
            self._items[stream] = item
            self._condition.notify()
            return replaced

    def wait(self, timeout_s: float | None = None) -> dict[int, T]:
        """The waiting items by stream, once there is one; empty on timeout or once closed."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._closed or any(i is not None for i in self._items), timeout=timeout_s
            )
            if self._closed:
                return {}
            return {stream: item for stream, item in enumerate(self._items) if item is not None}

    def take(self, stream: int, item: T) -> bool:
        """Remove ``item`` from ``stream``; False when a newer item replaced it meanwhile."""
        with self._condition:
            if self._items[stream] is not item:
                return False
            self._items[stream] = None
            return True

    def close(self) -> list[T]:
        """Wake every waiter for good; returns the items that will now never be taken."""
        with self._condition:
            self._closed = True
            left = [item for item in self._items if item is not None]
            self._items = [None] * len(self._items)
            self._condition.notify_all()
            return left

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed
