"""Which backend runs, and its executor for a model: the one place that imports them.

Everything here needs torch (the model is traced for the export); the
runtimes themselves are imported only when chosen.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from mess_ros.model import CLASS_CONFIDENCE_BINS, MESSNet
from mess_ros.runtime.backends.base import (
    AUTO,
    BACKEND_CHOICES,
    BACKENDS,
    ONNXRUNTIME,
    TENSORRT,
    TORCH,
    StageExecutor,
    import_runtime,
    runtime_available,
)
from mess_ros.runtime.backends.errors import BackendError
from mess_ros.runtime.executor import LOGGER, ModelExecutor


def resolve_backend(name: str, device: torch.device) -> str:
    """The backend ``name`` means on ``device``: ``auto`` becomes the fastest one installed.

    On CUDA: TensorRT, else ONNX Runtime with its CUDA provider, else torch.
    On the CPU: ONNX Runtime, else torch (bench/backends.py: the bundled robot
    1.65x faster on 2 idle cores, several times faster beside other processes).
    """
    if name != AUTO:
        if name not in BACKENDS:
            raise BackendError(f"unknown backend {name!r}; expected one of {BACKEND_CHOICES}")
        return name
    exportable = runtime_available("onnx")
    if device.type == "cuda":
        if exportable and runtime_available("tensorrt"):
            return TENSORRT
        if exportable and runtime_available("onnxruntime"):
            ort = import_runtime("onnxruntime", ONNXRUNTIME)
            if "CUDAExecutionProvider" in ort.get_available_providers():
                return ONNXRUNTIME
        return TORCH
    if exportable and runtime_available("onnxruntime"):
        return ONNXRUNTIME
    LOGGER.info("engine.backend auto: onnxruntime is not installed, running on torch")
    return TORCH


def create_executor(
    backend: str,
    model: MESSNet,
    device: torch.device,
    input_hw: tuple[int, int],
    *,
    precision: str = "fp32",
    channels_last: bool = False,
    checkpoint_path: Path | None = None,
    threads: int = 1,
    fingerprint: str | None = None,
    progress: bool | None = None,
) -> StageExecutor:
    """The executor of ``backend`` (``auto`` resolved here) for ``model`` at ``input_hw``.

    ``checkpoint_path`` places the export cache beside the checkpoint;
    ``threads`` is the CPU thread count the first frames run on.
    """
    chosen = resolve_backend(backend, device)
    if chosen == TORCH:
        return ModelExecutor(model, device, precision, channels_last)
    if precision not in ("fp32", "fp16"):
        raise BackendError(
            f"engine.precision {precision!r} is not available with engine.backend {chosen!r} "
            "(fp32 or fp16); bf16 runs on the torch backend"
        )
    if chosen == TENSORRT and device.type != "cuda":
        raise BackendError(
            "engine.backend 'tensorrt' runs on CUDA only; set engine.device to cuda, or use "
            "onnxruntime on the CPU"
        )
    # Missing runtimes are reported before minutes of export and engine building, not after.
    import_runtime(chosen, chosen)
    import_runtime("onnx", chosen)
    from mess_ros.runtime.backends.export import export_stages

    trace_on = device if precision == "fp16" else torch.device("cpu")
    export = export_stages(
        model,
        input_hw,
        checkpoint_path,
        precision=precision,
        device=trace_on,
        fingerprint=fingerprint,
        progress=progress,
    )
    if chosen == ONNXRUNTIME:
        from mess_ros.runtime.backends.export import export_fused_segment
        from mess_ros.runtime.backends.ort_executor import OnnxRuntimeExecutor

        fuse = functools.partial(export_fused_segment, model, export, device=trace_on)
        return OnnxRuntimeExecutor(
            export, device.type, device.index or 0, threads, fuse, CLASS_CONFIDENCE_BINS
        )
    from mess_ros.runtime.backends.trt_executor import TensorRTExecutor

    return TensorRTExecutor(model, export, device, progress)
