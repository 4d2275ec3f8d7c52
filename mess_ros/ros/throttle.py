"""Warnings throttled per cause, with a count of what was suppressed.

A camera that sends a malformed frame usually sends thirty a second; one
line per frame would bury every other log line. rclpy's own throttling is
keyed by call site, so different problems reported from the same place
would hide each other: here each cause has its own clock, and the next
message says how many were suppressed since the last one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class WarningThrottle:
    """Lets one message per ``period_s`` through for each cause."""

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._period_s = period_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_s: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def filter(self, cause: str, message: str) -> str | None:
        """The text to log now, or ``None`` when this cause was reported too recently."""
        with self._lock:
            now_s = self._clock()
            last_s = self._last_s.get(cause)
            if last_s is not None and now_s - last_s < self._period_s:
                self._suppressed[cause] = self._suppressed.get(cause, 0) + 1
                return None
            self._last_s[cause] = now_s
            suppressed = self._suppressed.pop(cause, 0)
        if suppressed:
            return f"{message} ({suppressed} more of this kind since the last report)"
        return message
