"""Profiling a checkpoint on this machine: the latency table the search prices configurations with.

The measurement itself is the runtime's (:func:`mess_ros.runtime.profiling.profile_model`,
through the engine's own executor), so the table prices exactly the work the
engine does. This module adds what a deployment needs around it: loading
the checkpoint the robot will run, recording which file and thread count were
profiled, and a readable summary.
"""

from __future__ import annotations

import re

import torch

from mess_ros.common.latency_table import LatencyTable
from mess_ros.deploy.errors import DeployError
from mess_ros.model import load_checkpoint
from mess_ros.runtime.engine import resolve_model_path
from mess_ros.runtime.profiling import profile_model

_HW = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_hw(text: str) -> tuple[int, int]:
    """``"128x256"`` -> ``(128, 256)`` (height x width in pixels)."""
    match = _HW.match(text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise DeployError(f"input size {text!r} is not HEIGHTxWIDTH in pixels, e.g. 256x512")
    return int(match.group(1)), int(match.group(2))


def profile_checkpoint(
    model_path: str,
    input_hw: tuple[int, int],
    device: str = "cpu",
    *,
    warmup: int = 5,
    repeats: int = 50,
    quantile: float = 0.9,
    precision: str = "fp32",
    channels_last: bool = False,
    threads: int = 0,
    progress: bool = False,
    backend: str = "torch",
) -> LatencyTable:
    """Latency table of the checkpoint at ``model_path`` ("" = the bundled model).

    ``threads`` > 0 fixes the CPU thread count first: latency on a robot
    depends on it, so it is recorded in the table's notes. ``backend`` is
    the runtime that executes the stages (``auto``: the engine's choice on
    this machine), recorded in the table.
    """
    path = resolve_model_path(model_path)
    checkpoint = load_checkpoint(path)
    if threads > 0:
        torch.set_num_threads(threads)
    table = profile_model(
        checkpoint.model,
        input_hw,
        device,
        warmup=warmup,
        repeats=repeats,
        progress=progress,
        precision=precision,
        channels_last=channels_last,
        quantile=quantile,
        model_fingerprint_hex=checkpoint.fingerprint,
        backend=backend,
        checkpoint_path=path,
    )
    table.notes["model_path"] = str(path)
    table.notes["cpu_threads"] = torch.get_num_threads()
    return table


def format_table(table: LatencyTable) -> str:
    """Per-stage mean and quantile in ms, blocks then heads and outputs, with the totals."""
    q = f"p{round(100 * table.quantile)}"
    lines = [
        f"{table.device_name} ({table.device}, {table.precision}, {table.backend}), input "
        f"{table.input_hw[0]}x{table.input_hw[1]}, model {table.model_fingerprint}",
        f"{'stage':<44} {'mean ms':>9} {q + ' ms':>9}",
    ]
    for section, stats in (
        ("segment", table.segments),
        ("head", table.heads),
        ("output", table.outputs),
    ):
        for name, stat in stats.items():
            lines.append(f"{section + ' ' + name:<44} {stat.mean_ms:>9.3f} {stat.p90_ms:>9.3f}")
    backbone = sum(s.mean_ms for s in table.segments.values())
    final = table.path_ms([], "final")
    lines.append(f"backbone total {backbone:.2f} ms; final exit only {final:.2f} ms (mean)")
    return "\n".join(lines)
