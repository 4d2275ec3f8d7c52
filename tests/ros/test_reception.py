"""The node's own reception threads count as competition for inference."""

from __future__ import annotations

import threading
import time

from mess_ros.ros.reception import ReceptionAwareShare

TICK_S = 0.03  # /proc counts CPU time in clock ticks of 10 ms; a little more for the reads


def spin(seconds: float) -> float:
    """Keep the calling thread busy; the CPU time it got (however busy the machine is)."""
    start_cpu, end = time.thread_time(), time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return time.thread_time() - start_cpu


def test_the_main_thread_counts_and_other_threads_do_not() -> None:
    share = ReceptionAwareShare(window_s=0.1)
    before = share.reception_cpu_s()
    used = spin(0.3)  # the main thread: where rclpy spins and images are converted
    assert abs(share.reception_cpu_s() - before - used) <= TICK_S
    # Another thread of the process (an inference thread, say) is not reception.
    got: list[float] = []
    before = share.reception_cpu_s()
    worker = threading.Thread(target=lambda: got.append(spin(0.3)))
    worker.start()
    worker.join()
    assert got[0] > TICK_S
    assert share.reception_cpu_s() - before <= TICK_S
    # Added to what other processes use, never more than the whole machine.
    share()
    time.sleep(0.15)
    value = share()
    assert value is not None and 0.0 <= value <= 1.0
    assert share.reception_share() >= 0.0
