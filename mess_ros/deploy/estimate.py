"""Estimated latency tables for a device nobody can measure on yet.

The search needs a latency table of the robot. When the robot (or its
accelerator) is not at hand, a table can still be estimated from what is
known before running anything: the work each stage does and three figures of
the device. Per stage (backbone block, exit head with its confidence, exit
output) a roofline model gives

    mean = max(MACs / throughput, bytes moved / memory bandwidth)
           + kernels x per-kernel overhead
    high quantile = mean x jitter

MACs come from :func:`mess_ros.model.model_complexity` (the model's own
complexity table). Kernels and bytes are counted on a CPU probe pass that runs
the engine's own per-stage operations (:class:`ModelExecutor`): every operator
that does work counts as one kernel launch and every tensor it reads or
writes counts as memory traffic, while views and no-op conversions count for
nothing. The per-kernel overhead matters more than one would think: the
feature maps of a segmentation network at robot resolution are small, and in
eager PyTorch each launch costs tens of microseconds on embedded GPUs, often
more than the arithmetic.

An estimate only ranks configurations as well as its figures are right, so
an estimated table says so everywhere it travels: ``notes["estimated"]``
holds how it was made (``mess_configure`` copies it into the parameter
file's header as an ESTIMATED line), the device name carries the figures,
and the per-stage work is kept in ``notes["work"]`` so the table can be
re-estimated with better figures. On the robot, the engine's online latency
model corrects it from the first frames; a table measured with
``mess_profile`` there replaces it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Final, ParamSpec, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch._ops import OpOverload
from torch.utils._python_dispatch import TorchDispatchMode

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.common.latency_table import LatencyStat, LatencyTable
from mess_ros.config import DEVICE_PATTERN, PRECISIONS
from mess_ros.deploy.errors import DeployError
from mess_ros.model import Checkpoint, MESSNet, model_complexity
from mess_ros.runtime.executor import ModelExecutor

ESTIMATOR: Final = "mess_ros roofline estimate v1"
DEFAULT_MEMORY_GB_PER_S: Final = 100.0
DEFAULT_KERNEL_OVERHEAD_US: Final = 20.0
DEFAULT_JITTER: Final = 1.15

_T = TypeVar("_T")
_P = ParamSpec("_P")

# The pixel threshold does not change the cost of the confidence (as in profiling).
_PROBE_PIXEL_THRESHOLD: Final = 0.9


@dataclass(frozen=True)
class DeviceFigures:
    """What the estimate assumes about the target device.

    ``gmacs_per_s`` is the sustained (not peak) multiply-accumulate rate of
    convolutions at the chosen precision, in 10^9 MAC/s; ``memory_gb_per_s``
    the DRAM bandwidth in 10^9 bytes/s; ``kernel_overhead_us`` the fixed cost
    of one operator launch (framework dispatch + kernel launch + scheduling);
    ``jitter`` the ratio of the high quantile to the mean. ``device`` and
    ``precision`` are what the robot's engine will run with.
    """

    name: str
    gmacs_per_s: float
    memory_gb_per_s: float = DEFAULT_MEMORY_GB_PER_S
    kernel_overhead_us: float = DEFAULT_KERNEL_OVERHEAD_US
    jitter: float = DEFAULT_JITTER
    device: str = "cuda"
    precision: str = "fp32"

    def validate(self) -> None:
        """DeployError naming the first figure that cannot describe a device."""
        if not self.name.strip():
            raise DeployError("an estimated device needs a name, e.g. 'NVIDIA Jetson Orin-class'")
        for label, value, low in (
            ("throughput (GMAC/s)", self.gmacs_per_s, 0.0),
            ("memory bandwidth (GB/s)", self.memory_gb_per_s, 0.0),
        ):
            if not (math.isfinite(value) and value > low):
                raise DeployError(f"{label} must be a finite number > 0, got {value!r}")
        if not (math.isfinite(self.kernel_overhead_us) and self.kernel_overhead_us >= 0):
            raise DeployError(
                f"kernel overhead must be a finite number of microseconds >= 0, "
                f"got {self.kernel_overhead_us!r}"
            )
        if not (math.isfinite(self.jitter) and self.jitter >= 1.0):
            raise DeployError(
                f"jitter is the high quantile over the mean and must be >= 1, got {self.jitter!r}"
            )
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise DeployError(f"device {self.device!r} is not valid; expected cpu, cuda or cuda:N")
        if self.precision not in PRECISIONS:
            raise DeployError(
                f"precision {self.precision!r} is not valid; "
                f"expected one of {', '.join(PRECISIONS)}"
            )
        if self.device == "cpu" and self.precision != "fp32":
            raise DeployError(
                f"precision {self.precision!r} applies to CUDA devices only; the engine runs the "
                "CPU in fp32"
            )

    @property
    def half(self) -> bool:
        """16-bit autocast on the device (fp16 and bf16 move the same bytes)."""
        return self.precision != "fp32"

    def label(self) -> str:
        """Device name of the table: the name and the figures it was estimated with."""
        return (
            f"{self.name} (estimated: {self.gmacs_per_s:g} GMAC/s, "
            f"{self.memory_gb_per_s:g} GB/s, {self.kernel_overhead_us:g} us/kernel)"
        )


@dataclass(frozen=True)
class StageWork:
    """What one stage asks of the device: arithmetic, memory traffic and operator launches."""

    macs: int
    bytes_moved: int
    kernels: int

    def __add__(self, other: StageWork) -> StageWork:
        return StageWork(
            self.macs + other.macs,
            self.bytes_moved + other.bytes_moved,
            self.kernels + other.kernels,
        )


@dataclass(frozen=True)
class ModelWork:
    """Work of every stage the latency table prices, keyed as in :class:`LatencyTable`."""

    segments: dict[str, StageWork]
    heads: dict[str, StageWork]
    outputs: dict[str, StageWork]

    def to_dict(self) -> dict[str, dict[str, dict[str, int]]]:
        return {
            section: {name: asdict(work) for name, work in stages.items()}
            for section, stages in (
                ("segments", self.segments),
                ("heads", self.heads),
                ("outputs", self.outputs),
            )
        }


def stage_ms(work: StageWork, figures: DeviceFigures) -> float:
    """Mean time of a stage on the device: roofline of compute and memory, plus launches.

    Non-decreasing in every component of ``work`` and non-increasing in the
    device's throughput and bandwidth: more work never comes out faster, so
    the search cannot be steered towards a configuration by the model alone.
    """
    compute_ms = work.macs / (figures.gmacs_per_s * 1e9) * 1e3
    memory_ms = work.bytes_moved / (figures.memory_gb_per_s * 1e9) * 1e3
    return max(compute_ms, memory_ms) + work.kernels * figures.kernel_overhead_us * 1e-3


# --------------------------------------------------------------------------------------------
# Counting kernels and memory traffic
# --------------------------------------------------------------------------------------------


def _tensors(value: object) -> Iterator[Tensor]:
    """Tensors in an operator's arguments or results (lists for ``cat``, dicts for kwargs)."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


def _storage(tensor: Tensor) -> int:
    return int(tensor.untyped_storage().data_ptr())


# torch leaves TorchDispatchMode's constructor hooks unannotated, hence the two ignores.
class _KernelCounter(TorchDispatchMode):  # type: ignore[no-untyped-call]
    """Counts the operators that do work and the bytes they read and write.

    Seen at the dispatcher, after the Python layers: an ``nn.Conv2d`` is one
    operator, an ``F.relu(inplace=True)`` one, a residual ``+`` one, a
    ``.to()`` to the same dtype or a dropout in eval mode none (they return
    their input), views none. An operator that mutates its input (in-place
    ReLU) reads and writes it; one that returns no tensor (``.item()``)
    still costs a launch and a synchronisation.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.work = StageWork(0, 0, 0)

    def __torch_dispatch__(
        self,
        func: OpOverload,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        inputs = list(_tensors((args, kwargs)))
        outputs = list(_tensors(result))
        mutates = bool(func._schema.is_mutable)
        read = {_storage(t) for t in inputs}
        fresh = [t for t in outputs if _storage(t) not in read]
        if outputs and not fresh and not mutates:
            return result  # a view or a no-op: no kernel, no traffic
        written = outputs if mutates else fresh
        traffic = sum(t.nbytes for t in inputs) + sum(t.nbytes for t in written)
        self.work = self.work + StageWork(0, int(traffic), 1)
        return result


def _counted(stage: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> tuple[_T, StageWork]:
    """Run ``stage`` and return its result with the work it did."""
    counter = _KernelCounter()
    with counter:
        result = stage(*args, **kwargs)
    return result, counter.work


def measure_work(
    model: MESSNet,
    input_hw: tuple[int, int],
    *,
    half_precision: bool = False,
    host_copy: bool = True,
) -> ModelWork:
    """MACs, memory traffic and kernel launches of every stage at ``input_hw``.

    One image goes through the engine's own stage operations on the CPU in
    inference mode. ``half_precision`` runs it under 16-bit autocast (bfloat16
    on the CPU; fp16 moves the same bytes), so the casts and the smaller
    tensors of a half-precision engine are counted.
    ``host_copy`` adds the copy of the mask from the accelerator to the host
    that ends every output step on a GPU (on the CPU the engine has none).
    """
    height, width = int(input_hw[0]), int(input_hw[1])
    complexity = model_complexity(model, (height, width))
    macs = {(row.kind, row.name): row.macs for row in complexity}
    executor = ModelExecutor(model, torch.device("cpu"))
    image = np.zeros((3, height, width), dtype=np.float32)
    segments: dict[str, StageWork] = {}
    heads: dict[str, StageWork] = {}
    outputs: dict[str, StageWork] = {}
    exits_at: dict[str, list[str]] = {}
    for exit_id in model.exit_ids:
        exits_at.setdefault(model.exit_point(exit_id), []).append(exit_id)
    copy = StageWork(0, height * width, 1) if host_copy else StageWork(0, 0, 0)

    def head_with_confidence(exit_id: str, features: Tensor) -> Tensor:
        logits = executor.head(exit_id, features)
        executor.confidence(logits, _PROBE_PIXEL_THRESHOLD)
        return logits

    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=half_precision):
        features = executor.to_device(image)
        previous: str | None = None
        for point in executor.blocks:
            features, work = _counted(executor.segment, features, previous, point)
            segments[point] = StageWork(macs[("segment", point)], 0, 0) + work
            previous = point
            for exit_id in exits_at.get(point, ()):
                logits, work = _counted(head_with_confidence, exit_id, features)
                heads[exit_id] = StageWork(macs[("head", exit_id)], 0, 0) + work
                _, work = _counted(executor.output, logits, (height, width))
                outputs[exit_id] = work + copy
    return ModelWork(segments, heads, outputs)


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------


def describe_estimate(figures: DeviceFigures, quantile: float) -> str:
    """One line on how the table was made: what the parameter file's ESTIMATED line says."""
    q = f"p{round(100 * quantile)}"
    return (
        f"roofline model for {figures.name} ({figures.device}, {figures.precision}), per stage "
        f"max(MACs / {figures.gmacs_per_s:g} GMAC/s, bytes / {figures.memory_gb_per_s:g} GB/s) "
        f"+ kernels x {figures.kernel_overhead_us:g} us, {q} = {figures.jitter:g} x mean; "
        "measure on the robot with mess_profile to replace it"
    )


def estimate_latency_table(
    checkpoint: Checkpoint,
    input_hw: tuple[int, int],
    figures: DeviceFigures,
    *,
    quantile: float = 0.9,
) -> LatencyTable:
    """A latency table of ``checkpoint`` at ``input_hw`` on the device ``figures`` describe.

    It has the structure and fingerprint of a measured one, so
    ``mess_configure`` searches with it unchanged; see the module doc for
    the model and how the table is marked as estimated.
    """
    figures.validate()
    if not 0.0 < quantile < 1.0:
        raise DeployError(f"quantile must be in (0, 1), got {quantile!r}")
    if min(input_hw) < 1:
        raise DeployError(f"input size must be positive, got {input_hw[0]}x{input_hw[1]}")
    work = measure_work(
        checkpoint.model,
        input_hw,
        half_precision=figures.half,
        host_copy=figures.device != "cpu",
    )

    def stats(stages: dict[str, StageWork]) -> dict[str, LatencyStat]:
        result = {}
        for name, stage in stages.items():
            mean_ms = stage_ms(stage, figures)
            result[name] = LatencyStat(mean_ms, mean_ms * figures.jitter)
        return result

    heads = stats(work.heads)
    if FINAL_EXIT not in heads:
        raise DeployError(f"checkpoint {checkpoint.path} has no {FINAL_EXIT!r} exit to estimate")
    notes: dict[str, Any] = {
        "estimated": describe_estimate(figures, quantile),
        "estimate": asdict(figures),
        "work": work.to_dict(),
        "channels_last": False,
        "created_unix_s": int(time.time()),
    }
    if checkpoint.path is not None:
        notes["model_path"] = str(checkpoint.path)
    return LatencyTable(
        model_fingerprint=checkpoint.fingerprint,
        input_hw=(int(input_hw[0]), int(input_hw[1])),
        device=figures.device,
        device_name=figures.label(),
        versions={"estimator": ESTIMATOR, "torch": torch.__version__},
        quantile=quantile,
        segments=stats(work.segments),
        heads=heads,
        outputs=stats(work.outputs),
        precision=figures.precision,
        notes=notes,
    )
