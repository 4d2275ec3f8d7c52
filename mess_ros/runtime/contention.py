"""CPU contention: how much of the machine other processes take, and how many threads to run.

On a CPU, torch splits every convolution over its intra-op threads and
waits at the end of each parallel region for the slowest of them. When
another process keeps one of the cores busy, the thread that lands on that
core is descheduled for whole time slices while the others spin at the
barrier: measured on the 2-core machine of the README, the bundled model's
full pass took 25 ms on 2 threads idle, 240 ms (median; p90 over 1 s) on 2
threads beside one busy process, and 44 ms on 1 thread beside the same
process. Running on fewer threads while the cores are taken is therefore
worth far more than any latency prediction can recover.

:class:`CpuShareMonitor` measures the share of the machine's CPU time used
by everything but this process (``/proc/stat`` minus this process's own
time, through psutil): the contention signal that needs no cooperation
from the other processes. :class:`ThreadGovernor` turns it, the reported
load and the slow-down of the frames themselves into a thread count,
applied between frames: fewer threads as soon as the free cores do not
cover them, all of them again once the cores have been free for a while.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import psutil

MONITOR_WINDOW_S: Final = 0.25
"""Span the CPU share is measured over: a few scheduler ticks of 10 ms, short enough to see a
process that started since the last frame."""

SLOWDOWN_TRIGGER: Final = 2.0
"""A frame this many times slower than predicted, on more than one thread, counts as contention
even when the CPU monitor saw none (a busy sibling container, another core's interrupts)."""

RESTORE_AFTER_S: Final = 1.0
"""Free cores must stay free this long before the threads come back (no flapping at a load
that comes and goes)."""

PROBE_BACKOFF_S: Final = (2.0, 60.0)
"""Without a CPU share to watch, more threads are tried again after the first delay, doubled
after every try that turned out slow, up to the second."""

FREE_CORE_MARGIN: Final = 0.35
"""Share of a core that other processes may use before it no longer counts as free."""


class CpuShareWindow:
    """Share (0..1) of ``cores`` that a cumulative CPU-time counter grew by over a sliding window.

    The window ends at the latest sample and starts at the oldest one still
    at least ``window_s`` before it, so the share always covers a whole
    window; until one has passed it keeps its last value (None at first).
    """

    def __init__(self, window_s: float, cores: int) -> None:
        self.window_s = window_s
        self.cores = cores
        self.share: float | None = None
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, now_s: float, cpu_s: float) -> float | None:
        """Add a reading of the counter (``cpu_s`` seconds so far) at ``now_s``; the share."""
        samples = self._samples
        samples.append((now_s, cpu_s))
        while len(samples) > 2 and now_s - samples[1][0] >= self.window_s:
            samples.popleft()
        start_s, start_cpu_s = samples[0]
        elapsed_s = now_s - start_s
        if elapsed_s >= self.window_s:
            used = (cpu_s - start_cpu_s) / (elapsed_s * self.cores)
            self.share = min(max(used, 0.0), 1.0)
        return self.share


class CpuShareMonitor:
    """Share (0..1) of all cores' time that processes other than ``process`` used recently.

    ``process`` is this one by default (the engine measuring its competition); a
    supervisor may watch another one (the demo reports what competes with the
    node). Time of processes at a positive niceness is not counted: it yields
    to normal-priority work.
    """

    def __init__(
        self, window_s: float = MONITOR_WINDOW_S, process: psutil.Process | None = None
    ) -> None:
        self.cores = psutil.cpu_count() or 1
        self._process = process or psutil.Process()
        self._window = CpuShareWindow(window_s, self.cores)

    def _sample(self) -> tuple[float, float, float]:
        times = psutil.cpu_times()
        # Niced work (batch jobs, builds at nice > 0) yields the core as soon as a normal-priority
        # thread wants it, so it does not compete; guest time is already part of user time.
        busy = (
            times.user
            + times.system
            + sum(getattr(times, name, 0.0) for name in ("irq", "softirq", "steal"))
        )
        mine = self._process.cpu_times()
        return time.monotonic(), busy, mine.user + mine.system

    def others_share(self) -> float | None:
        """The latest measurement; None until a whole window has passed since the first call."""
        now_s, busy_s, mine_s = self._sample()
        return self._window.update(now_s, busy_s - mine_s)


@dataclass(frozen=True)
class ThreadChange:
    """A decision of the governor, with the reason written for ``exit_info`` and the log."""

    threads: int
    reason: str


class ThreadGovernor:
    """Chooses the intra-op thread count of the next frame from the contention it sees.

    ``others_share`` is what the monitor measured (None: no measurement),
    ``load`` the load reported on the system load topic (None: unknown),
    ``slowdown`` how much slower the previous frame ran than the fastest
    frames of its thread count recently did. Fewer threads are taken at
    once. All threads come back after :data:`RESTORE_AFTER_S` of free cores;
    when the cores looked free but the frames were slow (nothing measured
    what slowed them), they come back as a probe whose back-off doubles
    each time the probe frame is slow again.
    """

    def __init__(
        self, max_threads: int, cores: int, clock_s: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_threads = max(1, max_threads)
        self.cores = max(1, cores)
        self.threads = self.max_threads
        self._clock_s = clock_s
        self._by_slowdown = False
        self._free_since_s: float | None = None
        self._probe_at_s = 0.0
        self._backoff_s = PROBE_BACKOFF_S[0]
        self._probing = False

    def free_cores(self, others_share: float | None, load: float | None) -> float | None:
        """Cores left to this process by the measured share and the reported load."""
        shares = [s for s in (others_share, load) if s is not None and math.isfinite(s)]
        if not shares:
            return None
        return self.cores * (1.0 - max(shares))

    def update(
        self, others_share: float | None, load: float | None, slowdown: float | None
    ) -> ThreadChange | None:
        """The new thread count and why, or None to keep the current one."""
        if self.max_threads == 1:
            return None
        now_s = self._clock_s()
        free = self.free_cores(others_share, load)
        busy = free is not None and free < self.max_threads - FREE_CORE_MARGIN
        if self.threads > 1:
            if free is not None and free < self.threads - FREE_CORE_MARGIN:
                self._probing = False
                self._by_slowdown = False
                self._free_since_s = None
                wanted = max(1, math.floor(free + FREE_CORE_MARGIN))
                return self._set(
                    wanted, f"other processes use {self.cores - free:.1f} of {self.cores} cores"
                )
            if slowdown is not None and slowdown >= SLOWDOWN_TRIGGER:
                if self._probing:
                    self._backoff_s = min(self._backoff_s * 2, PROBE_BACKOFF_S[1])
                self._probing = False
                self._by_slowdown = True
                self._probe_at_s = now_s + self._backoff_s
                return self._set(1, f"frame ran {slowdown:.1f}x slower than usual")
            if self._probing and slowdown is not None:  # the probe frame ran at its usual pace
                self._probing = False
                self._backoff_s = PROBE_BACKOFF_S[0]
        if self.threads == self.max_threads:
            return None
        if busy:
            self._by_slowdown = False  # what slows the frames is visible now: follow it
            self._free_since_s = None
            return None
        if self._by_slowdown or free is None:
            if now_s < self._probe_at_s:
                return None
            self._probing = True
            self._by_slowdown = False
            return self._set(self.max_threads, "trying all threads again")
        if self._free_since_s is None:
            self._free_since_s = now_s
        if now_s - self._free_since_s >= RESTORE_AFTER_S:
            self._free_since_s = None
            return self._set(self.max_threads, f"cores free again for {RESTORE_AFTER_S:g} s")
        return None

    def _set(self, threads: int, reason: str) -> ThreadChange:
        self.threads = threads
        return ThreadChange(threads, reason)
