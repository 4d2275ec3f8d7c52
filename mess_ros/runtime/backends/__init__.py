"""Execution backends: who runs the network's stages (``engine.backend``).

``torch`` runs the checkpoint eagerly; ``onnxruntime`` and ``tensorrt`` run
its per-stage ONNX export (:mod:`.export`, read back by :mod:`.stages`),
exported on first use and cached beside the checkpoint. Every backend offers
the same per-stage interface (:class:`StageExecutor`), so the engine's exit
decisions, its latency model and the profiler do not depend on which one
runs. :func:`create_executor` and :func:`resolve_backend` (:mod:`.factory`)
import torch, so this facade loads them on first use: the ONNX Runtime
executor (:mod:`.ort_executor`) and the export's reader import without it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mess_ros.runtime.backends.base import (
    AUTO,
    BACKEND_CHOICES,
    BACKENDS,
    ONNXRUNTIME,
    TENSORRT,
    TORCH,
    StageExecutor,
    runtime_available,
)
from mess_ros.runtime.backends.errors import BackendError, RuntimeMissingError

if TYPE_CHECKING:
    from mess_ros.runtime.backends.factory import create_executor, resolve_backend

__all__ = [
    "AUTO",
    "BACKENDS",
    "BACKEND_CHOICES",
    "ONNXRUNTIME",
    "TENSORRT",
    "TORCH",
    "BackendError",
    "RuntimeMissingError",
    "StageExecutor",
    "create_executor",
    "resolve_backend",
    "runtime_available",
]

_LAZY = {"create_executor", "resolve_backend"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("mess_ros.runtime.backends.factory"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
