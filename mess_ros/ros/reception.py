"""The node's own reception of frames, counted as competition for the inference threads.

The engine's thread governor (:mod:`mess_ros.runtime.contention`) runs the
network on fewer threads while other processes take cores, and measures
that as the machine's CPU time minus this process's. A node serving several
cameras also receives all their frames itself: its executor (the main
thread, which spins rclpy and converts the images) and the DDS threads
(``dds.*``) copy some thirty VGA frames a second on the same cores. The
governor took that for free cores, returned to two threads every second or
so, and the frames then ran twice as slow as usual (measured with three
cameras on two cores: ``python -m bench.multicamera``), making the camera last in
line miss its deadline. :class:`ReceptionAwareShare` adds the share of those
threads to what other processes use, so the governor sees the cores as they
are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Final

import psutil

from mess_ros.runtime.contention import MONITOR_WINDOW_S, CpuShareMonitor, CpuShareWindow

DDS_THREAD_PREFIX: Final = "dds."
"""Fast DDS names its threads (``dds.udp.7400``, ``dds.shm.7401``, ``dds.ev.0`` ...)."""


class ReceptionAwareShare:
    """Share (0..1) of all cores used by other processes and by this node's reception threads."""

    def __init__(self, window_s: float = MONITOR_WINDOW_S) -> None:
        self._others = CpuShareMonitor(window_s)
        self._process = psutil.Process()
        self._names: dict[int, str] = {}
        self._window = CpuShareWindow(window_s, self._others.cores)

    def __call__(self) -> float | None:
        others = self._others.others_share()
        if others is None:
            return None
        return min(others + self.reception_share(), 1.0)

    def reception_share(self) -> float:
        """Share of all cores this process's main and DDS threads used over the last window."""
        share = self._window.update(time.monotonic(), self.reception_cpu_s())
        return 0.0 if share is None else share

    def reception_cpu_s(self) -> float:
        """CPU seconds this process's main thread and DDS threads have used so far."""
        pid = os.getpid()
        total = 0.0
        for thread in self._process.threads():
            if thread.id == pid or self._name(thread.id).startswith(DDS_THREAD_PREFIX):
                total += thread.user_time + thread.system_time
        return total

    def _name(self, tid: int) -> str:
        name = self._names.get(tid)
        if name is None:
            try:
                name = Path(f"/proc/self/task/{tid}/comm").read_text(encoding="utf-8").strip()
            except OSError:
                name = ""  # the thread ended meanwhile
            self._names[tid] = name
        return name
