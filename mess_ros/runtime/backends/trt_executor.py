"""The ``tensorrt`` backend: one native TensorRT engine per exported stage, on CUDA.

Engines are built from the per-stage ONNX export on first use and cached
beside it, per TensorRT version and GPU model (an engine runs only where it
was built). Precision is in the graph (TensorRT 11 builds strongly typed
networks only): ``engine.precision`` fp16 exports the stages in fp16 and
builds fp16 engines from them; fp32 builds fp32 engines (TF32 allowed, as
torch allows it for convolutions by default).

Tensors stay torch CUDA tensors: each engine reads and writes torch-allocated
device memory on torch's current stream, so the confidence, histogram and
output step are the torch backend's own (:class:`ModelExecutor`) and queue
behind the engines without a synchronisation.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor
from tqdm import tqdm

from mess_ros.model import MESSNet
from mess_ros.runtime.backends.base import TENSORRT, import_runtime
from mess_ros.runtime.backends.errors import BackendError
from mess_ros.runtime.backends.stages import StageExport
from mess_ros.runtime.executor import LOGGER, ModelExecutor

WORKSPACE_BYTES: Final = 1 << 30
TIMING_CACHE: Final = "timing.cache"


def engine_directory(export: StageExport, trt_version: str, device: torch.device) -> Path:
    """Where engines of this export live for this TensorRT version and GPU model."""
    major, minor = torch.cuda.get_device_capability(device)
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-")
    return export.directory / f"tensorrt-{trt_version}-{gpu}-sm{major}{minor}"


class _Stage:
    """One deserialised engine with its execution context and I/O description."""

    def __init__(self, trt: Any, runtime: Any, data: bytes, source: Path) -> None:
        self.engine = runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise BackendError(f"TensorRT cannot deserialise the engine {source}; delete it")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendError(f"engine {source} has inputs {inputs} and outputs {outputs}")
        self.input, self.output = inputs[0], outputs[0]
        dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        self.input_dtype = dtypes[self.engine.get_tensor_dtype(self.input)]
        self.output_dtype = dtypes[self.engine.get_tensor_dtype(self.output)]
        self.output_shape = tuple(int(v) for v in self.engine.get_tensor_shape(self.output))
        self.source = source

    def __call__(self, x: Tensor) -> Tensor:
        x = x.to(self.input_dtype).contiguous()
        out = torch.empty(self.output_shape, dtype=self.output_dtype, device=x.device)
        self.context.set_tensor_address(self.input, x.data_ptr())
        self.context.set_tensor_address(self.output, out.data_ptr())
        stream = torch.cuda.current_stream(x.device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT failed to run {self.source}")
        return out


def build_engine(trt: Any, onnx_path: Path, engine_path: Path, logger: Any) -> None:
    """Build and save one engine; a timing cache beside it speeds up the later builds."""
    builder = trt.Builder(logger)
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # required on TensorRT 10, the only mode of 11
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {problems}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    cache_path = engine_path.parent / TIMING_CACHE
    cache = None
    with contextlib.suppress(AttributeError, TypeError):  # an optimisation only
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT could not build an engine from {onnx_path} (see its log)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_path.with_name(engine_path.name + ".partial")
    partial.write_bytes(bytes(memoryview(serialized)))
    partial.replace(engine_path)
    if cache is not None:
        with contextlib.suppress(AttributeError, TypeError, OSError):
            cache_path.write_bytes(bytes(memoryview(cache.serialize())))


class TensorRTExecutor(ModelExecutor):
    """Stages as TensorRT engines; everything after the logits as the torch backend does it."""

    backend = TENSORRT

    def __init__(
        self,
        model: MESSNet,
        export: StageExport,
        device: torch.device,
        progress: bool | None = None,
    ) -> None:
        trt = import_runtime("tensorrt", TENSORRT)
        super().__init__(model, device, "fp32")
        self.precision = export.precision
        self.export = export
        logger = trt.Logger(trt.Logger.WARNING)
        directory = engine_directory(export, str(trt.__version__), device)
        keys = [*(f"segment-{p}" for p in export.blocks), *(f"head-{e}" for e in export.heads)]
        sources = {
            **{f"segment-{p}": export.segment(p).path for p in export.blocks},
            **{f"head-{e}": export.head(e).path for e in export.heads},
        }
        missing = [k for k in keys if not (directory / _engine_name(k)).is_file()]
        if missing:
            started = time.perf_counter()
            LOGGER.info(f"building {len(missing)} TensorRT engine(s) in {directory}")
            disable = None if progress is None else not progress
            for key in tqdm(missing, desc="building engines", unit="engine", disable=disable):
                with torch.cuda.device(device):
                    build_engine(trt, sources[key], directory / _engine_name(key), logger)
            LOGGER.info(f"built the engines in {time.perf_counter() - started:.1f} s")
        runtime = trt.Runtime(logger)
        with torch.cuda.device(device):
            self._stages = {
                key: _Stage(
                    trt, runtime, (directory / _engine_name(key)).read_bytes(), sources[key]
                )
                for key in keys
            }

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        with torch.inference_mode():  # precision is in the engines: no autocast
            yield

    def segment(self, features: Tensor, start: str | None, end: str) -> Tensor:
        blocks = self.export.blocks
        first = 0 if start is None else blocks.index(start) + 1
        for point in blocks[first : blocks.index(end) + 1]:
            features = self._stages[f"segment-{point}"](features)
        return features

    def head(self, exit_id: str, features: Tensor) -> Tensor:
        stage = self._stages.get(f"head-{exit_id}")
        if stage is None:
            raise BackendError(f"no TensorRT engine for exit {exit_id!r}")
        return stage(features)


def _engine_name(key: str) -> str:
    return key.replace(":", "--") + ".engine"
