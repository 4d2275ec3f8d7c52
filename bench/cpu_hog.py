"""A CPU hog that reports the load it puts on the machine, as a robot's load monitor would.

It starts ``--workers`` processes (default: one per core) that keep a core
busy, and writes its state to stdout as one JSON object per line:

    {"state": "running", "load": 1.0, "source": "nominal", "workers": 2, "cores": 2, ...}
    {"state": "running", "load": 0.93, "source": "measured", ...}   every --period-ms
    {"state": "stopped", "load": 0.0, "source": "stopped", ...}     on SIGTERM / SIGINT

``load`` is the share of the machine's cores the hog occupies (0..1): first
the share it asks for (workers / cores) as soon as the workers run, then the
share it measured over the last period (CPU seconds its workers got divided
by wall seconds times cores). Reports are repeated every period, so a
reader that ages readings (the engine ignores a load older than its
timeout) keeps seeing a fresh one while the hog runs.

The hog also stops when nobody reads its reports any more (its stdout pipe
breaks), so a benchmark that dies without cleaning up cannot leave it
spinning; its workers stop when the hog itself is gone.

``--kind spin`` (the default) loops in pure Python; ``--kind matmul``
multiplies matrices with numpy on one BLAS thread per worker, like a
planner or another network sharing the machine: it also competes for the
caches and memory bandwidth, not only for the cores. The hog itself imports
only the standard library (a matmul worker imports numpy after it started),
so it starts in a fraction of a second, like the processes it stands for.

    python bench/cpu_hog.py [--workers N] [--kind spin|matmul] [--period-ms 100]
        [--duration-s 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.synchronize import Event
from types import FrameType
from typing import Any

_SPIN_ITERATIONS = 100_000
"""Loop iterations between two updates of a worker's CPU time (a few milliseconds)."""


KINDS = ("spin", "matmul")
_MATRIX_SIDE = 256
_PRODUCTS_PER_UPDATE = 20


def _spin(slot: int, cpu_seconds: Any, parent_pid: int, stop: Event, kind: str) -> None:
    """Burn one core until told to stop, or until the hog that started this worker is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the hog decides when its workers stop
    if kind == "matmul":
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[variable] = "1"  # one core per worker, read when numpy loads
        import numpy as np

        matrix = np.random.default_rng(slot).random((_MATRIX_SIDE, _MATRIX_SIDE))
        while not stop.is_set() and os.getppid() == parent_pid:
            for _ in range(_PRODUCTS_PER_UPDATE):
                product = matrix @ matrix
                matrix = product / float(np.abs(product).max())
            cpu_seconds[slot] = time.process_time()
        return
    counter = 0
    while not stop.is_set() and os.getppid() == parent_pid:
        for _ in range(_SPIN_ITERATIONS):
            counter += 1
        cpu_seconds[slot] = time.process_time()


def _context() -> ForkContext | SpawnContext:
    """Fork where the platform has it: workers start in milliseconds (the hog runs no threads)."""
    if "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _emit(state: str, load: float, source: str, workers: int, cores: int) -> bool:
    """Write one report line; False when nobody reads them any more."""
    line = {
        "state": state,
        "load": round(min(max(load, 0.0), 1.0), 4),
        "source": source,
        "workers": workers,
        "cores": cores,
        "pid": os.getpid(),
        "monotonic_ns": time.monotonic_ns(),
    }
    try:
        print(json.dumps(line), flush=True)
    except BrokenPipeError:
        return False
    return True


def run(workers: int, period_s: float, duration_s: float, kind: str = "spin") -> int:
    cores = os.cpu_count() or 1
    context = _context()
    cpu_seconds = context.Array("d", workers, lock=False)
    stop = context.Event()
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    processes = [
        context.Process(target=_spin, args=(i, cpu_seconds, os.getpid(), stop, kind), daemon=True)
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    reading = _emit("running", workers / cores, "nominal", workers, cores)
    started = last_wall = time.monotonic()
    last_cpu = 0.0
    try:
        while reading and not stopping:
            time.sleep(period_s)
            now = time.monotonic()
            if duration_s > 0 and now - started >= duration_s:
                break
            cpu = float(sum(cpu_seconds))
            share = (cpu - last_cpu) / max((now - last_wall) * cores, 1e-9)
            last_cpu, last_wall = cpu, now
            if not stopping:
                reading = _emit("running", share, "measured", workers, cores)
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=2.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2.0)
    if reading:
        _emit("stopped", 0.0, "stopped", workers, cores)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench/cpu_hog.py",
        description="Occupy CPU cores with busy processes and report the load on stdout.",
    )
    parser.add_argument("--workers", type=int, default=0, help="busy processes (0 = one per core)")
    parser.add_argument("--kind", choices=KINDS, default="spin", help="what each worker does")
    parser.add_argument(
        "--period-ms", type=float, default=100.0, help="time between two load reports"
    )
    parser.add_argument(
        "--duration-s", type=float, default=0.0, help="stop by itself after this (0 = never)"
    )
    args = parser.parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    if workers < 1 or args.period_ms <= 0 or args.duration_s < 0:
        parser.error("--workers must be >= 0, --period-ms > 0 and --duration-s >= 0")
    return run(workers, args.period_ms / 1000.0, args.duration_s, args.kind)


if __name__ == "__main__":
    sys.exit(main())
