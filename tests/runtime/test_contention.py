"""CPU contention: the monitor of other processes' CPU share and the thread governor."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mess_ros.runtime.contention import (
    PROBE_BACKOFF_S,
    RESTORE_AFTER_S,
    CpuShareMonitor,
    CpuShareWindow,
    ThreadGovernor,
)
from tests.clock import ManualClock

REPO = Path(__file__).resolve().parents[2]


def test_governor_takes_fewer_threads_at_once_and_restores_after_free_cores() -> None:
    clock = ManualClock()
    governor = ThreadGovernor(max_threads=2, cores=2, clock_s=clock)
    assert governor.update(0.02, None, 1.0) is None  # idle: keep both threads
    change = governor.update(0.5, None, None)  # another process takes one core
    assert change is not None and change.threads == 1
    assert "1.0 of 2 cores" in change.reason
    clock.now_s += 5.0
    assert governor.update(0.5, None, 1.0) is None  # still busy: stays on one thread
    assert governor.update(0.03, None, 1.0) is None  # free, but not for long enough yet
    clock.now_s += RESTORE_AFTER_S / 2
    assert governor.update(0.03, None, 1.0) is None
    clock.now_s += RESTORE_AFTER_S
    change = governor.update(0.03, None, 1.0)
    assert change is not None and change.threads == 2


def test_a_reported_load_counts_like_a_measured_one() -> None:
    governor = ThreadGovernor(max_threads=2, cores=2, clock_s=ManualClock())
    change = governor.update(None, 0.9, None)
    assert change is not None and change.threads == 1
    assert governor.free_cores(0.1, 0.6) == pytest.approx(0.8)  # the larger share wins


def test_slow_frames_reduce_threads_and_probes_back_off() -> None:
    """Without a visible cause, all threads are tried again later, less often after each failure."""
    clock = ManualClock()
    governor = ThreadGovernor(max_threads=2, cores=2, clock_s=clock)
    change = governor.update(None, None, 3.5)
    assert change is not None and change.threads == 1 and "3.5x slower" in change.reason
    clock.now_s += PROBE_BACKOFF_S[0] - 0.1
    assert governor.update(None, None, 1.0) is None
    clock.now_s += 0.2
    probe = governor.update(None, None, 1.0)
    assert probe is not None and probe.threads == 2
    again = governor.update(None, None, 4.0)  # the probe frame was slow: back to one thread
    assert again is not None and again.threads == 1
    clock.now_s += PROBE_BACKOFF_S[0] + 0.1
    assert governor.update(None, None, 1.0) is None  # the back-off has doubled
    clock.now_s += PROBE_BACKOFF_S[0]
    probe = governor.update(None, None, 1.0)
    assert probe is not None and probe.threads == 2
    assert governor.update(None, None, 1.1) is None  # a good probe keeps all threads


def test_single_thread_has_nothing_to_govern() -> None:
    governor = ThreadGovernor(max_threads=1, cores=2, clock_s=ManualClock())
    assert governor.update(1.0, 1.0, 10.0) is None


def test_monitor_sees_a_busy_process() -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) > 0:
        pytest.skip("a hog started from this niced process is niced too, and niced work yields")
    monitor = CpuShareMonitor(window_s=0.2)
    assert monitor.others_share() is None  # no window yet
    hog = subprocess.Popen([sys.executable, str(REPO / "bench" / "cpu_hog.py"), "--workers", "1"])
    try:
        time.sleep(0.5)
        monitor.others_share()
        time.sleep(0.4)
        share = monitor.others_share()
    finally:
        hog.terminate()
        hog.wait(10)
    assert share is not None
    # one busy process on this machine's cores: at least most of one core's share
    assert share >= 0.8 / monitor.cores - 0.05


def test_share_window_covers_a_whole_window_and_forgets_older_samples() -> None:
    window = CpuShareWindow(window_s=1.0, cores=2)
    assert window.update(0.0, 0.0) is None
    assert window.update(0.5, 0.5) is None  # half a window: no figure yet
    assert window.update(1.0, 1.0) == pytest.approx(0.5)  # 1 CPU second of 2 cores over 1 s
    # Idle from here on: once the busy second has left the window, the share falls to 0.
    assert window.update(1.5, 1.0) == pytest.approx(0.5 / 2)  # (1.0 - 0.5) over 1.0 s, 2 cores
    assert window.update(3.0, 1.0) == pytest.approx(0.0)
    assert window.update(3.5, 5.0) == 1.0  # more than the cores could do: capped
