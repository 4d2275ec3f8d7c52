"""A GPU hog that reports the share of the GPU it takes, as a robot's load monitor would.

It keeps the GPU busy with matrix products (``--side`` square, ``--dtype``)
for ``--duty`` of every period and writes its state to stdout as one JSON
object per line, like ``cpu_hog.py``:

    {"state": "running", "load": 0.97, "source": "measured", "busy_ms": 97.1, ...}  every period
    {"state": "stopped", "load": 0.0, "source": "stopped"}                          on SIGTERM

``load`` is the time its kernels ran on the GPU during the last period
(CUDA events around each batch of products) over the period's wall time: the
share of the accelerator another process now competes with. It stops on
SIGTERM or SIGINT, when its stdout pipe breaks (nobody reads it any more) and
when the process that started it is gone.

    python bench/gpu_hog.py [--device cuda] [--duty 1.0] [--period-ms 100] [--side 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import torch

_BATCH_MS = 5.0
"""Target length of one batch of products: short, so the engine's kernels interleave."""


def _report(state: dict[str, Any]) -> bool:
    try:
        print(json.dumps(state), flush=True)
    except BrokenPipeError:
        return False
    return True


def run(device: torch.device, duty: float, period_ms: float, side: int, dtype: torch.dtype) -> int:
    stop = False

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()
    a = torch.randn(side, side, device=device, dtype=dtype)
    b = torch.randn(side, side, device=device, dtype=dtype)
    # torch.cuda.Event and Stream are untyped in torch's stubs.
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]

    def batch(products: int) -> float:
        start.record()
        for _ in range(products):
            torch.mm(a, b)
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    batch(3)  # kernels chosen and loaded
    products = max(1, round(_BATCH_MS / max(batch(10) / 10, 1e-3)))
    if not _report({"state": "running", "load": duty, "source": "nominal", "device": str(device)}):
        return 0
    while not stop and os.getppid() == parent:
        period_start = time.perf_counter()
        busy_ms = 0.0
        while busy_ms < duty * period_ms and not stop:
            busy_ms += batch(products)
        idle_s = period_ms / 1e3 - (time.perf_counter() - period_start)
        if idle_s > 0:
            time.sleep(idle_s)
        wall_ms = (time.perf_counter() - period_start) * 1e3
        load = min(busy_ms / wall_ms, 1.0)
        state = {"state": "running", "load": round(load, 4), "source": "measured"}
        if not _report({**state, "busy_ms": round(busy_ms, 2), "wall_ms": round(wall_ms, 2)}):
            return 0
    _report({"state": "stopped", "load": 0.0, "source": "stopped"})
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/gpu_hog.py", description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--duty", type=float, default=1.0, help="busy share of every period")
    parser.add_argument("--period-ms", type=float, default=100.0)
    parser.add_argument("--side", type=int, default=4096, help="side of the square matrices")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench/gpu_hog.py: error: no CUDA device", file=sys.stderr)
        return 1
    if not 0.0 < args.duty <= 1.0:
        print(
            f"bench/gpu_hog.py: error: --duty must be in (0, 1], got {args.duty}", file=sys.stderr
        )
        return 1
    dtype = getattr(torch, args.dtype)
    return run(torch.device(args.device), args.duty, args.period_ms, args.side, dtype)


if __name__ == "__main__":
    raise SystemExit(main())
