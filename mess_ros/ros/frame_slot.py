"""A one-place mailbox between the subscription callback and the inference thread.

Segmentation is slower than many cameras. A queue would make every mask
later than the one before; a single slot where a new frame replaces the one
still waiting keeps the latency bounded by one inference, and what was
replaced is handed back so the caller can count it as a stale drop. ``put``
never waits for inference, which is what keeps the ROS callbacks responsive.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """Holds at most one item; a new item replaces a waiting one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._item: T | None = None
        self._closed = False

    def put(self, item: T) -> T | None:
        """Offer ``item``; returns the waiting item it replaced (a stale frame), if any.

        After :meth:`close` the item is refused and handed back, so nothing is
        silently lost during shutdown.
        """
        with self._condition:
            if self._closed:
                return item
            replaced = self._item
            self._item = item
            self._condition.notify()
            return replaced

    def take(self, timeout_s: float | None = None) -> T | None:
        """Wait for an item and remove it; ``None`` on timeout or once closed and empty."""
        with self._condition:
            self._condition.wait_for(
                lambda: self._item is not None or self._closed, timeout=timeout_s
            )
            item = self._item
            self._item = None
            return item

    def close(self) -> T | None:
        """Wake every waiter for good; returns the item that will now never be taken."""
        with self._condition:
            self._closed = True
            item = self._item
            self._item = None
            self._condition.notify_all()
            return item

    @property
    def closed(self) -> bool:
        with self._condition:
            return self._closed
