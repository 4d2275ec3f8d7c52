"""What every execution backend offers the engine, and which backends exist.

The engine and the profiler run a network stage by stage: a backbone block,
an exit head, the output step of the exit taken. A backend executes those
stages; the exit decision between them stays in Python, the same for every
backend. :class:`StageExecutor` is that contract. ``torch`` runs the model
eagerly (:class:`~mess_ros.runtime.executor.ModelExecutor`); the others run
the per-stage ONNX export (:mod:`mess_ros.runtime.backends.export`).

Arrays are the backend's own (a torch tensor, an ONNX Runtime ``OrtValue``);
only masks, confidences and histograms leave a backend, as numpy arrays and
floats, so nothing above the executor depends on what it runs on.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from types import ModuleType
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from mess_ros.config import BACKEND_NAMES
from mess_ros.runtime.backends.errors import RuntimeMissingError

AUTO, TORCH, ONNXRUNTIME, TENSORRT = BACKEND_NAMES
BACKENDS: Final = (TORCH, ONNXRUNTIME, TENSORRT)
"""Backends that execute stages; ``engine.backend`` also takes :data:`AUTO`."""
BACKEND_CHOICES: Final = BACKEND_NAMES

# What to install for each runtime, pinned as in requirements.txt (TensorRT: requirements-gpu.txt).
RUNTIME_PACKAGES: Final = {
    "onnxruntime": "onnxruntime==1.31.1 (CPU) or onnxruntime-gpu==1.31.1 (CUDA, instead of it)",
    "onnx": "onnx==1.23.2",
    "tensorrt": "tensorrt-cu13==11.4.0.106 (CUDA 13 drivers; tensorrt-cu12 for CUDA 12)",
}


def runtime_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (cheap, no side effects)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: import blocked on purpose
    return importlib.util.find_spec(module) is not None


def import_runtime(module: str, backend: str) -> ModuleType:
    """Import a backend's runtime, or fail with what to install for it.

    A runtime that is installed but broken (a missing shared library, a CUDA
    mismatch) is reported with the import's own message beside the advice.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        package = RUNTIME_PACKAGES.get(module, module)
        msg = (
            f"engine.backend {backend!r} needs the Python package {module!r}, which cannot be "
            f"imported ({err}); install it with: pip install {package}, or choose another "
            "backend (engine.backend: torch always works)"
        )
        raise RuntimeMissingError(msg) from err


class StageExecutor(Protocol):
    """Runs one model's stages on one device (see the module docstring).

    ``blocks`` are the backbone blocks in depth order (the candidate exit
    points, then the final point). Stage methods are called inside
    :meth:`context`. ``clock_ms`` waits for queued device work first, so a
    stage's time is its execution and not its launch.
    """

    backend: str
    precision: str
    fuses_segments: bool
    """Whether :meth:`segment` runs several blocks faster in one call than block by block
    (the engine then runs the blocks between two active exits at once, see
    :meth:`prepare_segments`)."""

    @property
    def device_label(self) -> str:
        """``cpu`` or ``cuda:N``, as latency tables record the device."""

    @property
    def blocks(self) -> list[str]: ...

    @property
    def channels_last(self) -> bool: ...

    def context(self) -> AbstractContextManager[None]: ...

    def synchronize(self) -> None: ...

    def clock_ms(self) -> float: ...

    def set_threads(self, count: int) -> None:
        """Run the next stages on ``count`` CPU threads (cheap when it is already so)."""

    def prepare_segments(self, bounds: Sequence[tuple[str | None, str]]) -> None:
        """Get ready to run each ``(after, up to)`` block range in one :meth:`segment` call."""

    def to_device(self, chw: npt.NDArray[np.float32]) -> Any:
        """The (1, 3, H, W) network input from a float32 CHW array."""

    def prepare(self, tensor: Any) -> Any:
        """An input made elsewhere (``preprocess``, a caller's tensor) as this backend runs it."""

    def spatial_hw(self, tensor: Any) -> tuple[int, int]: ...

    def segment(self, features: Any, start: str | None, end: str) -> Any: ...

    def head(self, exit_id: str, features: Any) -> Any: ...

    def thresholds(self, values: Sequence[float]) -> Any:
        """Per-class pixel thresholds in the form :meth:`confidence` takes them."""

    def confidence(
        self, logits: Any, pixel_threshold: float, class_thresholds: Any | None = None
    ) -> float: ...

    def class_histogram(self, logits: Any) -> npt.NDArray[np.int64]: ...

    def output(self, logits: Any, size_hw: tuple[int, int]) -> npt.NDArray[np.uint8]: ...
