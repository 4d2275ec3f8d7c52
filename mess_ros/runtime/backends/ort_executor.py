"""The ``onnxruntime`` backend: the per-stage export run by ONNX Runtime.

Each exported stage gets an inference session; features pass from one to
the next as ``OrtValue``\\ s bound to the session's inputs and outputs, so
on CUDA they never leave the device between stages. Logits come back as
numpy arrays for the exit decision (:mod:`~mess_ros.runtime.backends.numpy_ops`),
and the exit taken is turned into its mask by the exported output graph. This
module imports numpy and onnxruntime only.

Threads. ONNX Runtime fixes a session's intra-op thread count when the session
is made, so the executor keeps one set of sessions per thread count: the
engine's thread governor (``engine.adaptive_threads``) switches sets between
frames, as it calls ``torch.set_num_threads`` for the torch backend. The
first switch to a count makes every session the current set has (the engine
does it at start, when it measures one thread against all), so no frame
waits for a session later. Spinning is off: every
stage's session owns a pool, and pools that spin after their stage keep the
cores from the next stage's pool (measured on the 2-core machine of the
README: 157 ms a pass with spinning pools, 14 ms without).

Providers: on the CPU the CPU execution provider. On CUDA, TensorRT's and
CUDA's execution providers where this ONNX Runtime build has them
(``onnxruntime-gpu``), with the CPU one behind them for anything they leave.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mess_ros.runtime.backends import numpy_ops
from mess_ros.runtime.backends.base import ONNXRUNTIME, import_runtime
from mess_ros.runtime.backends.errors import BackendError
from mess_ros.runtime.backends.stages import (
    INPUT_NAME,
    OUTPUT_LOGITS,
    OUTPUT_NAME,
    OUTPUT_SIZE,
    StageExport,
)

LOGGER = logging.getLogger("mess_ros.runtime")
CPU_PROVIDER: Final = "CPUExecutionProvider"
CUDA_PROVIDER: Final = "CUDAExecutionProvider"
TENSORRT_PROVIDER: Final = "TensorrtExecutionProvider"


def session_providers(
    ort: Any, device_type: str, device_index: int, cache_dir: Path
) -> list[tuple[str, dict[str, str]]]:
    """Execution providers for a device, best first, with their options."""
    if device_type != "cuda":
        return [(CPU_PROVIDER, {})]
    available = set(ort.get_available_providers())
    providers: list[tuple[str, dict[str, str]]] = []
    if TENSORRT_PROVIDER in available:
        options = {
            "device_id": str(device_index),
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir / "ort-tensorrt"),
        }
        providers.append((TENSORRT_PROVIDER, options))
    if CUDA_PROVIDER in available:
        providers.append((CUDA_PROVIDER, {"device_id": str(device_index)}))
    if not providers:
        msg = (
            f"engine.backend 'onnxruntime' on CUDA needs ONNX Runtime's CUDA execution provider, "
            f"but this onnxruntime {ort.__version__} has only {', '.join(sorted(available))}; "
            "install onnxruntime-gpu==1.31.1 in place of onnxruntime, or run on the CPU"
        )
        raise BackendError(msg)
    return [*providers, (CPU_PROVIDER, {})]


def session_options(ort: Any, threads: int) -> Any:
    """Options of every session: ``threads`` intra-op threads that sleep between stages.

    ``ort`` is the imported ``onnxruntime`` module (imported by the caller,
    which knows whether it is installed).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the CPU provider's fallbacks are expected
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxRuntimeExecutor:
    """Runs the exported stages with ONNX Runtime (see the module docstring)."""

    backend = ONNXRUNTIME
    channels_last = False
    fuses_segments = True

    def __init__(
        self,
        export: StageExport,
        device_type: str = "cpu",
        device_index: int = 0,
        threads: int = 1,
        fuse: Callable[[str | None, str], Path] | None = None,
        class_bins: int = 20,
    ) -> None:
        """``fuse`` exports the blocks of a range as one file (see :meth:`prepare_segments`);
        without it ranges run block by block. ``class_bins`` is the learnt decision's histogram
        width (``mess_ros.model.CLASS_CONFIDENCE_BINS``, passed in to keep torch out)."""
        self._ort = import_runtime("onnxruntime", ONNXRUNTIME)
        self.export = export
        self.precision = export.precision
        self._device = ("cuda", device_index) if device_type == "cuda" else ("cpu", 0)
        self._providers = session_providers(self._ort, device_type, device_index, export.directory)
        self._dtype = np.float16 if export.precision == "fp16" else np.float32
        self._sessions: dict[int, dict[str, Any]] = {}
        self._bindings: dict[int, Any] = {}  # by id of the session
        self._threads = max(1, threads)
        self._current = self._session_set(self._threads)
        self._fuse = fuse
        self._class_bins = class_bins
        self._fused: dict[tuple[str | None, str], Path] = {}
        self._paths: dict[str, Path] = {}  # every stage a session was made for

    # --- sessions ------------------------------------------------------------------------

    def _session_set(self, threads: int) -> dict[str, Any]:
        sessions = self._sessions.get(threads)
        if sessions is None:
            sessions = {}
            self._sessions[threads] = sessions
        return sessions

    def _session(self, key: str, path: Path) -> Any:
        session = self._current.get(key)
        if session is None:
            # TensorRT's provider would build an engine per frame size for the output step,
            # whose shapes follow the frames: CUDA's provider runs it as it comes.
            providers = [p for p in self._providers if key != "output" or p[0] != TENSORRT_PROVIDER]
            session = self._make_session(path, self._threads, providers)
            self._current[key] = session
            self._paths[key] = path
        return session

    def _make_session(
        self, path: Path, threads: int, providers: list[tuple[str, dict[str, str]]]
    ) -> Any:
        ort = self._ort
        try:
            return ort.InferenceSession(
                str(path),
                session_options(ort, threads),
                providers=[name for name, _ in providers],
                provider_options=[opts for _, opts in providers],
            )
        except Exception as err:  # onnxruntime raises its own unrelated types
            raise BackendError(f"ONNX Runtime cannot load {path}: {err}") from err

    @property
    def threads(self) -> int:
        """Intra-op threads of the sessions the next stages run on."""
        return self._threads

    def set_threads(self, count: int) -> None:
        count = max(1, count)
        if count == self._threads:
            return
        first = count not in self._sessions
        self._threads = count
        self._current = self._session_set(count)
        if first:
            for key, path in list(self._paths.items()):
                self._session(key, path)

    # --- the executor interface ----------------------------------------------------------

    @property
    def device_label(self) -> str:
        kind, index = self._device
        return f"cuda:{index}" if kind == "cuda" else "cpu"

    @property
    def blocks(self) -> list[str]:
        return list(self.export.blocks)

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        yield

    def synchronize(self) -> None:
        """Nothing to wait for: ``run_with_iobinding`` returns once the stage is done."""

    def clock_ms(self) -> float:
        return time.perf_counter_ns() / 1e6

    def to_device(self, chw: npt.NDArray[np.float32]) -> Any:
        return self._owned(np.ascontiguousarray(chw[np.newaxis], dtype=self._dtype), self._device)

    def _owned(self, array: npt.NDArray[Any], device: tuple[str, int]) -> Any:
        """An OrtValue holding its own copy of ``array``.

        ``OrtValue.ortvalue_from_numpy`` on the CPU wraps the array's memory
        without keeping the array alive: a value that outlives the array
        would read freed memory.
        """
        value = self._ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, *device)
        value.update_inplace(array)
        return value

    def prepare(self, tensor: Any) -> Any:
        if isinstance(tensor, self._ort.OrtValue):
            return tensor
        if hasattr(tensor, "detach"):  # a torch tensor made elsewhere
            tensor = tensor.detach().cpu().numpy()
        return self.to_device(np.asarray(tensor)[0])

    def spatial_hw(self, tensor: Any) -> tuple[int, int]:
        shape = tensor.shape()
        return int(shape[-2]), int(shape[-1])

    def _run(self, key: str, path: Path, inputs: dict[str, Any]) -> Any:
        session = self._session(key, path)
        binding = self._bindings.get(id(session))
        if binding is None:  # reused: making one per call costs more than the smallest stages
            binding = session.io_binding()
            self._bindings[id(session)] = binding
        for name, value in inputs.items():
            binding.bind_ortvalue_input(name, value)
        # Bound anew each call: a new output buffer, never the one the last call returned.
        binding.bind_output(OUTPUT_NAME, *self._device)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0]

    def prepare_segments(self, bounds: Sequence[tuple[str | None, str]]) -> None:
        """Export (once, cached beside the stages) each range of several blocks as one file."""
        blocks = self.export.blocks
        for start, end in bounds:
            first = 0 if start is None else blocks.index(start) + 1
            if self._fuse is None or blocks.index(end) <= first or (start, end) in self._fused:
                continue
            try:
                path = self._fuse(start, end)
                self._session(f"fused:{start}:{end}", path)
            except BackendError as err:  # block by block is slower, never wrong
                LOGGER.warning(f"running {start or 'input'}..{end} block by block: {err}")
                continue
            self._fused[(start, end)] = path

    def segment(self, features: Any, start: str | None, end: str) -> Any:
        fused = self._fused.get((start, end))
        if fused is not None:
            return self._run(f"fused:{start}:{end}", fused, {INPUT_NAME: features})
        blocks = self.export.blocks
        first = 0 if start is None else blocks.index(start) + 1
        for point in blocks[first : blocks.index(end) + 1]:
            stage = self.export.segment(point)
            features = self._run(f"segment:{point}", stage.path, {INPUT_NAME: features})
        return features

    def head(self, exit_id: str, features: Any) -> Any:
        stage = self.export.head(exit_id)
        return self._run(f"head:{exit_id}", stage.path, {INPUT_NAME: features})

    def thresholds(self, values: Sequence[float]) -> npt.NDArray[np.float32]:
        return numpy_ops.thresholds_array(values)

    def confidence(
        self, logits: Any, pixel_threshold: float, class_thresholds: Any | None = None
    ) -> float:
        return numpy_ops.confident_share(logits.numpy(), pixel_threshold, class_thresholds)

    def class_histogram(self, logits: Any) -> npt.NDArray[np.int64]:
        return numpy_ops.class_confidence_histogram(logits.numpy(), self._class_bins)

    def output(self, logits: Any, size_hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
        # The size is a shape input: ONNX Runtime reads it on the host whatever the device.
        size = np.asarray([int(size_hw[0]), int(size_hw[1])], dtype=np.int64)
        inputs = {OUTPUT_LOGITS: logits, OUTPUT_SIZE: self._owned(size, ("cpu", 0))}
        mask: npt.NDArray[np.uint8] = self._run("output", self.export.output, inputs).numpy()[0]
        return mask
