"""Device handling and the per-stage operations shared by the engine and profiling.

Profiling must time exactly what the engine runs, or the latency table would
price a different computation than the one the deadline policies bet on. Both
therefore go through :class:`ModelExecutor`: the same device placement,
memory format, autocast, confidence computation and output step.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from mess_ros.config import PRECISIONS
from mess_ros.devices import cuda_problem, parse_device
from mess_ros.model import MESSNet, class_confidence_histogram, confident_share, logits_to_mask
from mess_ros.runtime.errors import EngineError

LOGGER = logging.getLogger("mess_ros.runtime")

_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DeviceChoice:
    """The device the engine really uses and why it differs from the request, if it does."""

    device: torch.device
    precision: str
    warnings: tuple[str, ...] = ()


def resolve_device(name: str, require_cuda: bool = False, precision: str = "fp32") -> DeviceChoice:
    """Turn ``cpu``/``cuda``/``cuda:N`` into a usable device.

    A missing GPU is a deployment fact, not a programming error: by default the
    engine warns and runs on the CPU so the robot still gets masks; with
    ``require_cuda`` it fails at start, where the mistake is cheapest to see.
    """
    parsed = parse_device(name)
    if parsed is None:
        raise EngineError(f"device {name!r} is not valid; expected cpu, cuda or cuda:N")
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r} is not valid; expected one of {PRECISIONS}")
    warnings: list[str] = []
    if parsed.kind == "cuda":
        index = parsed.index or 0
        problem = cuda_problem(name, index)
        if not problem:
            if precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise EngineError(f"precision 'bf16' is not supported by CUDA device {index}")
            return DeviceChoice(torch.device("cuda", index), precision)
        if require_cuda:
            raise EngineError(f"{problem}; engine.require_cuda is set, so not falling back to CPU")
        warnings.append(f"{problem}; running on the CPU instead")
    if precision != "fp32":
        warnings.append(f"precision {precision!r} applies to CUDA only; the CPU runs fp32")
    for text in warnings:
        LOGGER.warning(text)
    return DeviceChoice(torch.device("cpu"), "fp32", tuple(warnings))


def device_name(device: torch.device) -> str:
    """Human name of the hardware (GPU model or CPU model), for latency tables."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError), Path("/proc/cpuinfo").open(encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return f"{line.partition(':')[2].strip()} ({os.cpu_count()} cores)"
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def software_versions() -> dict[str, str]:
    """Versions that change kernel timings; recorded in latency tables."""
    versions = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "torch_threads": str(torch.get_num_threads()),
    }
    if torch.version.cuda:
        versions["cuda"] = str(torch.version.cuda)
    if torch.cuda.is_available():
        versions["cuda_device_count"] = str(torch.cuda.device_count())
    versions["implementation"] = sys.implementation.name
    return versions


class ModelExecutor:
    """Runs one model on one device, stage by stage.

    Call the stage methods inside :meth:`context` (inference mode plus
    autocast). ``clock_ms`` waits for the device before reading the host
    clock, so per-stage times are real on CUDA, where kernels run
    asynchronously. This is the ``torch`` backend of
    :class:`mess_ros.runtime.backends.StageExecutor`.
    """

    backend = "torch"
    fuses_segments = False  # eager blocks cost the same run one by one or in a range

    def __init__(
        self,
        model: MESSNet,
        device: torch.device,
        precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        self.model = model.eval().to(device)
        self.device = device
        self.precision = precision if device.type == "cuda" else "fp32"
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            # nn.Module.to accepts memory_format at run time; torch's stubs omit it.
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._pinned: Tensor | None = None

    @property
    def blocks(self) -> list[str]:
        return [*self.model.points, self.model.final_point]

    @property
    def device_label(self) -> str:
        return str(self.device)

    @property
    def channels_last(self) -> bool:
        return self.memory_format == torch.channels_last

    def set_threads(self, count: int) -> None:
        """torch's intra-op threads (process-wide: set again if another engine changed them)."""
        if torch.get_num_threads() != count:
            torch.set_num_threads(count)

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with torch.inference_mode():
            dtype = _AUTOCAST_DTYPES.get(self.precision)
            if dtype is None:
                yield
            else:
                with torch.autocast(device_type=self.device.type, dtype=dtype):
                    yield

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def clock_ms(self) -> float:
        """Host time in ms once the queued device work is done."""
        self.synchronize()
        return time.perf_counter_ns() / 1e6

    def to_device(self, chw: npt.NDArray[np.float32]) -> Tensor:
        """(1, 3, H, W) input on the device from a float32 CHW array.

        On CUDA the data goes through a reused page-locked buffer, so the copy
        to the GPU is a non-blocking DMA instead of a staged pageable copy.
        """
        host = torch.from_numpy(np.ascontiguousarray(chw)).unsqueeze(0)
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.shape != host.shape:
                self._pinned = torch.empty(host.shape, dtype=host.dtype).pin_memory()
            else:
                # The previous frame's copy must be done before the buffer is overwritten.
                self.synchronize()
            self._pinned.copy_(host)
            tensor = self._pinned.to(self.device, non_blocking=True)
        else:
            tensor = host
        return tensor.contiguous(memory_format=self.memory_format)

    def prepare_segments(self, bounds: Sequence[tuple[str | None, str]]) -> None:
        """Nothing to prepare: ``forward_backbone`` runs any range of blocks."""

    def prepare(self, tensor: Tensor) -> Tensor:
        return tensor.to(self.device).contiguous(memory_format=self.memory_format)

    def spatial_hw(self, tensor: Tensor) -> tuple[int, int]:
        return int(tensor.shape[-2]), int(tensor.shape[-1])

    def segment(self, features: Tensor, start: str | None, end: str) -> Tensor:
        return self.model.forward_backbone(features, start, end)

    def head(self, exit_id: str, features: Tensor) -> Tensor:
        return self.model.forward_head(exit_id, features)

    def thresholds(self, values: Sequence[float]) -> Tensor:
        return torch.tensor(list(values), dtype=torch.float32, device=self.device)

    def confidence(
        self, logits: Tensor, pixel_threshold: float, class_thresholds: Tensor | None = None
    ) -> float:
        """Share of confident pixels (the paper's criterion) at the exit's own resolution.

        With per-class thresholds a pixel is confident when its top-1
        probability reaches the threshold of its top-1 class; otherwise the
        single global threshold is used through the shared definition in
        :mod:`mess_ros.model.outputs`.
        """
        if class_thresholds is None:
            return float(confident_share(logits, pixel_threshold)[0].item())
        probability, label = torch.softmax(logits.float(), dim=1).max(dim=1)
        confident = probability >= class_thresholds.to(logits.device)[label]
        return float(confident.float().mean().item())

    def class_histogram(self, logits: Tensor) -> npt.NDArray[np.int64]:
        """(C, bins) pixels per top-1 class and probability bin: the learnt decision's input."""
        counts: npt.NDArray[np.int64] = class_confidence_histogram(logits)[0].cpu().numpy()
        return counts

    def output(self, logits: Tensor, size_hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
        """HxW uint8 mask at ``size_hw``: one bilinear upsample of these logits, argmax, copy."""
        mask = logits_to_mask(logits.float(), size_hw)[0].to(torch.uint8)
        result: npt.NDArray[np.uint8] = mask.cpu().numpy()
        return result
