"""Device names (``cpu``, ``cuda``, ``cuda:N``): read one way, and the machine explained one way.

Training and the engine treat a missing GPU differently (training stops, the
engine falls back to the CPU unless ``engine.require_cuda`` says otherwise),
but both read the name and explain what this machine lacks the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from mess_ros.config import DEVICE_PATTERN


@dataclass(frozen=True)
class DeviceName:
    """A valid device name taken apart: ``kind`` is cpu or cuda, ``index`` the N of cuda:N."""

    kind: str
    index: int | None = None


def parse_device(name: str) -> DeviceName | None:
    """The parts of ``name`` (surrounding spaces ignored), or None when it is no device name."""
    text = name.strip()
    if not re.fullmatch(DEVICE_PATTERN, text):
        return None
    kind, _, index = text.partition(":")
    return DeviceName(kind, int(index) if index else None)


def cuda_problem(name: str, index: int) -> str:
    """Why CUDA device ``index`` (asked for as ``name``) cannot run here; empty when it can."""
    if not torch.cuda.is_available():
        return (
            f"device {name!r} requested but CUDA is not available "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'})"
        )
    count = torch.cuda.device_count()
    if index >= count:
        return f"device {name!r} requested but this machine has {count} CUDA device(s)"
    return ""
