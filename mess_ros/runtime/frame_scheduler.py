"""Which camera's frame runs next on the one accelerator, and how long its exits may take.

A node serving several cameras has one inference thread and the newest frame
of each camera waiting for it. Two decisions are made before each frame:

* **which frame**: frames that can still make their deadline before frames
  that cannot (serving a lost frame first would make the next one late as
  well: the domino effect of plain earliest-deadline-first under overload),
  then the higher camera priority, then the earliest deadline;
* **how deep**: the exit policy plans against a *planning deadline*, which
  is the frame's own deadline moved earlier so that the frames waiting behind
  it still fit before theirs. Each frame behind is reserved the typical time
  a frame has recently taken (so depth is shared), or, when that leaves the
  running frame less than its earliest exit, only its earliest exit's time
  (so every frame that can still be saved is). Frames behind that could not
  be saved even then, and frames of lower priority, reserve nothing.

Frames about to arrive count as well: each camera's rhythm is followed
(:class:`ArrivalClock`), and a camera whose next frame is due before the
running frame's deadline is reserved its time as if its frame were waiting.
Cameras triggered together deliver their frames a few milliseconds apart;
without this, the first to arrive would plan for its whole deadline and
leave the others late. A camera that falls silent stops being expected
after half a period.

Whether the frame met its deadline is still judged against its own deadline;
the planning deadline only shapes the exit decisions. With one camera, the
planning deadline is the frame's own deadline and a multi-camera node
behaves exactly as a single-camera one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mess_ros.runtime.errors import EngineError

SERVICE_ALPHA: Final = 0.2
"""Weight of each new frame in the typical service time (an exponential average)."""


@dataclass(frozen=True)
class WaitingFrame:
    """What the scheduler needs to know of one camera's waiting frame.

    ``earliest_ms`` is the least time the frame needs from the start of its
    inference to its published mask (its earliest exit, delivery included).
    """

    stream: int
    deadline_ns: int | None  # None: this camera has no deadline
    priority: int
    earliest_ms: float
    received_ns: int


@dataclass(frozen=True)
class ScheduleChoice:
    """The frame to run now and the deadline its exit decisions plan for."""

    frame: WaitingFrame
    plan_deadline_ns: int | None
    waiting: int  # frames of other cameras waiting when it was chosen
    reserved_for: int  # of which its planning deadline leaves time to

    def planned_ms(self, now_ns: int) -> float | None:
        """Budget the exit decisions plan with, from ``now_ns``."""
        return None if self.plan_deadline_ns is None else (self.plan_deadline_ns - now_ns) / 1e6


class FrameScheduler:
    """Earliest deadline first across cameras, with exit depth planned for the queue.

    Used from the inference thread only: :meth:`choose` before each frame,
    :meth:`served` after it.
    """

    def __init__(self, alpha: float = SERVICE_ALPHA) -> None:
        if not 0.0 < alpha <= 1.0:
            raise EngineError(f"service-time weight {alpha!r} must lie in (0, 1]")
        self._alpha = alpha
        self._service_ms: float | None = None

    @property
    def typical_service_ms(self) -> float | None:
        """Recent time from a frame's start to its published mask (None: no frame yet)."""
        return self._service_ms

    def served(self, service_ms: float) -> None:
        """Learn how long a frame took, from the start of its inference to its published mask."""
        if not math.isfinite(service_ms) or service_ms < 0:
            return
        if self._service_ms is None:
            self._service_ms = service_ms
        else:
            self._service_ms += self._alpha * (service_ms - self._service_ms)

    def choose(
        self,
        waiting: Sequence[WaitingFrame],
        now_ns: int,
        expected: Sequence[WaitingFrame] = (),
    ) -> ScheduleChoice:
        """The frame to run next among ``waiting`` (at least one) and its planning deadline.

        ``expected`` are frames due from cameras with none waiting (``received_ns``: when
        due): never chosen, planned for like waiting ones when due before the chosen
        frame's deadline.
        """
        if not waiting:
            raise EngineError("the scheduler was asked to choose among no frames")
        order = sorted(waiting, key=lambda f: _order_key(f, now_ns))
        chosen, behind = order[0], order[1:]
        if chosen.deadline_ns is None or not _feasible(chosen, now_ns):
            # Nothing to plan for: no deadline, or one it cannot make whatever follows.
            return ScheduleChoice(chosen, chosen.deadline_ns, len(behind), 0)
        due = [f for f in expected if f.received_ns < chosen.deadline_ns]
        # Only frames that will run after this one at the same priority, and that can still be
        # served on time, hold this frame's exits back.
        protected = [
            (f.deadline_ns, f.earliest_ms)
            for f in [*behind, *due]
            if f.deadline_ns is not None and f.priority == chosen.priority and _feasible(f, now_ns)
        ]
        earliest_end_ns = now_ns + _ns(chosen.earliest_ms)
        plan_ns, counted = chosen.deadline_ns, 0
        if self._service_ms is not None:
            plan_ns, counted = _plan(chosen.deadline_ns, protected, self._service_ms)
        if plan_ns < earliest_end_ns:
            # Typical service for every frame behind does not fit: reserve their earliest exits,
            # leaving out frames that could not be saved even so.
            plan_ns, counted = _plan(chosen.deadline_ns, protected, 0.0, earliest_end_ns)
        return ScheduleChoice(chosen, plan_ns, len(behind), counted)


class ArrivalClock:
    """When a camera's next frame is due: the last frame's origin plus the camera's period.

    Fed by the thread that receives the frames, read by the scheduler's: the
    state is one tuple, replaced whole. A gap of more than three periods (a
    pause, a restart) starts the estimate again rather than bending it.
    """

    def __init__(self, alpha: float = SERVICE_ALPHA) -> None:
        self._alpha = alpha
        self._state: tuple[int, float | None] | None = None  # (last origin, period) in ns

    def frame(self, origin_ns: int) -> None:
        """A frame whose time budget starts at ``origin_ns`` (its stamp) was received."""
        state = self._state
        if state is None:
            self._state = (origin_ns, None)
            return
        last_ns, period_ns = state
        gap_ns = origin_ns - last_ns
        if gap_ns <= 0:
            return  # out of order, or the same frame again
        if period_ns is not None and gap_ns > 3 * period_ns:
            self._state = (origin_ns, None)
            return
        period_ns = gap_ns if period_ns is None else period_ns + self._alpha * (gap_ns - period_ns)
        self._state = (origin_ns, period_ns)

    def next_origin_ns(self, now_ns: int) -> int | None:
        """When the next frame's budget starts; None before a period is known or once overdue.

        Overdue means more than half a period late: a camera that stopped is
        no longer waited for.
        """
        state = self._state
        if state is None:
            return None
        last_ns, period_ns = state
        if period_ns is None:
            return None
        due_ns = last_ns + round(period_ns)
        return None if due_ns < now_ns - period_ns / 2 else due_ns


def _ns(ms: float) -> int:
    return round(ms * 1e6)


def _feasible(frame: WaitingFrame, now_ns: int) -> bool:
    """Whether the frame could still meet its deadline if it ran now (no deadline: always)."""
    return frame.deadline_ns is None or now_ns + _ns(frame.earliest_ms) <= frame.deadline_ns


def _order_key(frame: WaitingFrame, now_ns: int) -> tuple[bool, int, float, int]:
    deadline = math.inf if frame.deadline_ns is None else float(frame.deadline_ns)
    return (not _feasible(frame, now_ns), -frame.priority, deadline, frame.received_ns)


def _plan(
    own_deadline_ns: int,
    behind: Sequence[tuple[int, float]],
    service_ms: float,
    floor_ns: int | None = None,
) -> tuple[int, int]:
    """Latest end of the running frame that leaves every frame behind its reserve in time.

    ``behind`` holds ``(deadline_ns, earliest_ms)`` of the frames that run
    after it, in deadline order, each reserved ``max(service_ms, earliest_ms)``.
    With ``floor_ns`` (the running frame's earliest end), a frame whose
    reserve cannot fit even after that is left out, along with its reserve.
    Returns the planning deadline and how many frames it counts.
    """
    plan_ns = own_deadline_ns
    queued_ns = 0
    counted = 0
    for deadline_ns, earliest_ms in sorted(behind):
        reserve_ns = _ns(max(service_ms, earliest_ms))
        latest_ns = deadline_ns - queued_ns - reserve_ns
        if floor_ns is not None and latest_ns < floor_ns:
            continue
        queued_ns += reserve_ns
        counted += 1
        plan_ns = min(plan_ns, latest_ns)
    return plan_ns, counted
