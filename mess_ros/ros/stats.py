"""Running statistics behind the node's ``/diagnostics`` status.

The subscription callbacks and the inference thread update the counters
concurrently, and the diagnostics timer reads them, so every method takes
one lock; each update is a few dictionary operations, which keeps the
callbacks cheap. Rates are measured between two consecutive snapshots (the
diagnostics period); latency and deadline figures cover a sliding window of
the most recent frames so a long run does not hide a recent regression.

A node with several cameras keeps one instance per camera whose ``parent``
is the node's own, so every frame counts for its camera and for the node.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import numpy as np

# Causes the node itself produces (conversion errors add their own ``cause`` tags).
DROP_STALE: Final = "stale"
DROP_LATE: Final = "late"
DROP_ENGINE_ERROR: Final = "engine_error"
DROP_INACTIVE: Final = "inactive"

DEFAULT_WINDOW: Final = 300


@dataclass(frozen=True)
class StatisticsSnapshot:
    """What one ``/diagnostics`` message reports."""

    period_s: float
    input_rate_hz: float
    output_rate_hz: float
    frames_received: int
    frames_published: int
    dropped: dict[str, int]
    dropped_in_period: int
    bad_input_in_period: int
    loads_rejected: int
    deadline_miss_rate: float
    deadline_infeasible_rate: float
    exit_histogram: dict[str, int]
    latency_mean_ms: float
    latency_p95_ms: float
    end_to_end_mean_ms: float
    end_to_end_p95_ms: float
    load: float | None
    window_frames: int = field(default=0)
    deadline_misses_total: int = field(default=0)
    deadline_infeasible_total: int = field(default=0)

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    @property
    def deadline_avoidable_miss_rate(self) -> float:
        """Misses of frames that some exit could have brought in on time."""
        return max(self.deadline_miss_rate - self.deadline_infeasible_rate, 0.0)

    def key_values(self) -> list[tuple[str, str]]:
        """Flat ``(key, value)`` pairs in a stable order, as ``DiagnosticStatus.values``."""
        pairs = [
            ("input_rate_hz", f"{self.input_rate_hz:.2f}"),
            ("output_rate_hz", f"{self.output_rate_hz:.2f}"),
            ("frames_received", str(self.frames_received)),
            ("frames_published", str(self.frames_published)),
            ("dropped_total", str(self.dropped_total)),
        ]
        pairs += [(f"dropped.{cause}", str(n)) for cause, n in sorted(self.dropped.items())]
        pairs += [
            ("loads_rejected", str(self.loads_rejected)),
            ("deadline_miss_rate", _format_float(self.deadline_miss_rate, 4)),
            ("deadline_infeasible_rate", _format_float(self.deadline_infeasible_rate, 4)),
            ("deadline_avoidable_miss_rate", _format_float(self.deadline_avoidable_miss_rate, 4)),
            ("deadline_misses_total", str(self.deadline_misses_total)),
            ("deadline_infeasible_total", str(self.deadline_infeasible_total)),
            ("latency_mean_ms", _format_float(self.latency_mean_ms, 2)),
            ("latency_p95_ms", _format_float(self.latency_p95_ms, 2)),
            ("end_to_end_mean_ms", _format_float(self.end_to_end_mean_ms, 2)),
            ("end_to_end_p95_ms", _format_float(self.end_to_end_p95_ms, 2)),
            ("load", "none" if self.load is None else f"{self.load:.3f}"),
            ("window_frames", str(self.window_frames)),
        ]
        pairs += [(f"exit.{exit_id}", str(n)) for exit_id, n in sorted(self.exit_histogram.items())]
        return pairs


@dataclass(frozen=True)
class _FrameOutcome:
    measured_ms: float
    end_to_end_ms: float
    met_deadline: bool | None
    infeasible: bool

    @property
    def infeasible_miss(self) -> bool:
        return self.infeasible and self.met_deadline is False


class NodeStatistics:
    """Thread-safe counters of frames in, masks out, drops by cause, exits and latency."""

    def __init__(
        self,
        window: int = DEFAULT_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        bad_input_causes: frozenset[str] = frozenset(),
        parent: NodeStatistics | None = None,
    ) -> None:
        self._parent = parent
        self._lock = threading.Lock()
        self._clock = clock
        self._bad_input_causes = bad_input_causes
        self._received = 0
        self._published = 0
        self._dropped: Counter[str] = Counter()
        self._exits: Counter[str] = Counter()
        self._loads_rejected = 0
        self._misses = 0
        self._infeasible_misses = 0
        self._load: float | None = None
        self._recent: deque[_FrameOutcome] = deque(maxlen=window)
        self._last_snapshot_s = clock()
        self._received_at_snapshot = 0
        self._published_at_snapshot = 0
        self._dropped_at_snapshot: Counter[str] = Counter()

    def frame_received(self) -> None:
        with self._lock:
            self._received += 1
        if self._parent is not None:
            self._parent.frame_received()

    def frame_dropped(self, cause: str, *, infeasible: bool = False) -> None:
        """A frame without a mask; ``infeasible``: dropped for a deadline it could not meet."""
        with self._lock:
            self._dropped[cause] += 1
            if infeasible:
                self._record(_FrameOutcome(math.nan, math.nan, False, True))
        if self._parent is not None:
            self._parent.frame_dropped(cause, infeasible=infeasible)

    def frame_published(
        self,
        exit_id: str,
        measured_ms: float,
        end_to_end_ms: float,
        met_deadline: bool | None,
        infeasible: bool = False,
    ) -> None:
        """A published mask; ``infeasible``: no exit could have made its deadline."""
        with self._lock:
            self._published += 1
            self._exits[exit_id] += 1
            self._record(_FrameOutcome(measured_ms, end_to_end_ms, met_deadline, infeasible))
        if self._parent is not None:
            self._parent.frame_published(
                exit_id, measured_ms, end_to_end_ms, met_deadline, infeasible
            )

    def _record(self, outcome: _FrameOutcome) -> None:
        self._recent.append(outcome)
        if outcome.met_deadline is False:
            self._misses += 1
            self._infeasible_misses += outcome.infeasible_miss

    def load_accepted(self, load: float) -> None:
        with self._lock:
            self._load = load

    def load_rejected(self) -> None:
        with self._lock:
            self._loads_rejected += 1

    def dropped(self, cause: str) -> int:
        with self._lock:
            return self._dropped[cause]

    def snapshot(self) -> StatisticsSnapshot:
        """Current figures; rates and per-period drops count since the previous snapshot."""
        with self._lock:
            now_s = self._clock()
            period_s = max(now_s - self._last_snapshot_s, 1e-9)
            received = self._received - self._received_at_snapshot
            published = self._published - self._published_at_snapshot
            period_drops = self._dropped - self._dropped_at_snapshot
            self._last_snapshot_s = now_s
            self._received_at_snapshot = self._received
            self._published_at_snapshot = self._published
            self._dropped_at_snapshot = Counter(self._dropped)
            recent = list(self._recent)
            served = [f for f in recent if math.isfinite(f.measured_ms)]
            measured = np.array([f.measured_ms for f in served], dtype=np.float64)
            end_to_end = np.array([f.end_to_end_ms for f in served], dtype=np.float64)
            judged = [f for f in recent if f.met_deadline is not None]
            misses = sum(f.met_deadline is False for f in judged)
            infeasible = sum(f.infeasible_miss for f in judged)
            miss_rate = misses / len(judged) if judged else 0.0
            infeasible_rate = infeasible / len(judged) if judged else 0.0
            return StatisticsSnapshot(
                period_s=period_s,
                input_rate_hz=received / period_s,
                output_rate_hz=published / period_s,
                frames_received=self._received,
                frames_published=self._published,
                dropped=dict(self._dropped),
                dropped_in_period=sum(period_drops.values()),
                bad_input_in_period=sum(
                    n for cause, n in period_drops.items() if cause in self._bad_input_causes
                ),
                loads_rejected=self._loads_rejected,
                deadline_miss_rate=miss_rate,
                deadline_infeasible_rate=infeasible_rate,
                exit_histogram=dict(self._exits),
                latency_mean_ms=_mean(measured),
                latency_p95_ms=_p95(measured),
                end_to_end_mean_ms=_mean(end_to_end),
                end_to_end_p95_ms=_p95(end_to_end),
                load=self._load,
                window_frames=len(served),
                deadline_misses_total=self._misses,
                deadline_infeasible_total=self._infeasible_misses,
            )


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def _p95(values: np.ndarray) -> float:
    return float(np.percentile(values, 95)) if values.size else math.nan


def _format_float(value: float, digits: int) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"
