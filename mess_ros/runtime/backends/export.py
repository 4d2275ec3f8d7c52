"""Per-stage ONNX export of a checkpoint, cached beside it.

Accelerated runtimes run the network as the engine does, stage by stage:
one ONNX file per backbone block (the first one includes the stem), one per
exit head (the final head included) and one output graph (bilinear upsample
of the exit's logits to the frame size, argmax, uint8), so the exit
decision stays in Python between stages. Every block is its own file, not
only the segments between the exits in use: the latency table prices
blocks, the deployment search combines them into any exit configuration,
and ``policy.active_exits`` may change while the node runs, without an
export.

Shapes are static, at the deployment input size and batch 1: TensorRT and
ONNX Runtime both plan memory and kernels once for them. The files of one
checkpoint live in ``<checkpoint>.stages/<H>x<W>-<precision>-<fingerprint>/``
beside it, with ``manifest.json`` describing them; the fingerprint hashes the
weights and the model spec, so a replaced checkpoint or another input size
gets a new export, and exports of earlier weights are removed. Where the
checkpoint's folder is read-only (an installed share directory) the files go
to the user's cache (``$MESS_ROS_CACHE_DIR``, else ``$XDG_CACHE_HOME/mess_ros``,
else ``~/.cache/mess_ros``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import torch
from torch import Tensor, nn
from tqdm import tqdm

from mess_ros.model import MESSNet, model_fingerprint
from mess_ros.runtime.backends.base import import_runtime
from mess_ros.runtime.backends.errors import BackendError
from mess_ros.runtime.backends.stages import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    INPUT_NAME,
    MANIFEST,
    OUTPUT_LOGITS,
    OUTPUT_NAME,
    OUTPUT_SIZE,
    StageExport,
    load_export,
)
from mess_ros.runtime.executor import LOGGER

OPSET: Final = 17
"""ONNX opset of the export: supported by ONNX Runtime 1.16+, OpenVINO and TensorRT 8.6+."""
STAGES_SUFFIX: Final = ".stages"
CACHE_ENV: Final = "MESS_ROS_CACHE_DIR"
EXPORT_PRECISIONS: Final = {"fp32": torch.float32, "fp16": torch.float16}


class _Segment(nn.Module):
    """The blocks after ``start`` up to ``end`` as a module of their own (what is exported)."""

    def __init__(self, model: MESSNet, start: str | None, end: str) -> None:
        super().__init__()
        self.model, self.start, self.end = model, start, end

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_backbone(x, self.start, self.end)


class _Head(nn.Module):
    def __init__(self, model: MESSNet, exit_id: str) -> None:
        super().__init__()
        self.model, self.exit_id = model, exit_id

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_head(self.exit_id, x)


def cache_root() -> Path:
    """The user's cache directory for exports of checkpoints in read-only folders."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "mess_ros"


def export_directory(
    checkpoint_path: Path | None, fingerprint: str, input_hw: tuple[int, int], precision: str
) -> Path:
    """Where the export of these weights at this size and precision lives (see module doc)."""
    leaf = f"{input_hw[0]}x{input_hw[1]}-{precision}-{fingerprint}"
    if checkpoint_path is not None:
        beside = checkpoint_path.parent / f"{checkpoint_path.name}{STAGES_SUFFIX}"
        if _writable(beside):
            return beside / leaf
    name = checkpoint_path.name if checkpoint_path is not None else "model"
    return cache_root() / "stages" / f"{name}-{leaf}"


def _writable(folder: Path) -> bool:
    """Whether ``folder`` exists writable or can be made (its parent writable)."""
    if folder.is_dir():
        return os.access(folder, os.W_OK | os.X_OK)
    return folder.parent.is_dir() and os.access(folder.parent, os.W_OK | os.X_OK)


def export_stages(
    model: MESSNet,
    input_hw: tuple[int, int],
    checkpoint_path: Path | None = None,
    *,
    precision: str = "fp32",
    device: torch.device | None = None,
    fingerprint: str | None = None,
    progress: bool | None = None,
) -> StageExport:
    """The per-stage export of ``model`` at ``input_hw``: from the cache, or made now.

    ``checkpoint_path`` places the cache beside the checkpoint; ``device``
    is where the model is traced (fp16 needs CUDA: CPUs trace fp32 only);
    ``progress`` None shows a progress bar when stderr is a terminal.
    """
    if precision not in EXPORT_PRECISIONS:
        raise BackendError(
            f"precision {precision!r} cannot be exported; expected one of "
            f"{', '.join(EXPORT_PRECISIONS)} (bf16 runs with engine.backend torch only)"
        )
    device = device or torch.device("cpu")
    if precision == "fp16" and device.type != "cuda":
        raise BackendError("an fp16 export is traced on CUDA; the CPU runs fp32")
    fingerprint = fingerprint or model_fingerprint(model)
    height, width = int(input_hw[0]), int(input_hw[1])
    directory = export_directory(checkpoint_path, fingerprint, (height, width), precision)
    existing = load_export(directory)
    if existing is not None and existing.model_fingerprint == fingerprint:
        return existing
    onnx = import_runtime("onnx", "export")
    _remove_stale(directory.parent, fingerprint)
    directory.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    LOGGER.info(f"exporting the network's stages at {height}x{width} {precision} to {directory}")
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=directory.parent) as scratch:
        manifest = _export_into(
            Path(scratch), model, (height, width), precision, device, fingerprint, progress
        )
        onnx.save(_output_graph(onnx, precision), str(Path(scratch) / manifest["output"]))
        (Path(scratch) / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(directory)  # an incomplete or outdated export of the same name
        try:
            Path(scratch).rename(directory)
        except OSError as err:  # another process finished the same export first
            if load_export(directory) is None:
                raise BackendError(f"cannot place the export in {directory}: {err}") from err
    LOGGER.info(
        f"exported {len(manifest['segments']) + len(manifest['heads'])} stages in "
        f"{time.perf_counter() - started:.1f} s"
    )
    export = load_export(directory)
    if export is None:  # pragma: no cover - just written
        raise BackendError(f"the export in {directory} cannot be read back")
    return export


def _export_into(
    folder: Path,
    model: MESSNet,
    input_hw: tuple[int, int],
    precision: str,
    device: torch.device,
    fingerprint: str,
    progress: bool | None,
) -> dict[str, Any]:
    dtype = EXPORT_PRECISIONS[precision]
    traced = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    blocks = [*traced.points, traced.final_point]
    exits_at: dict[str, list[str]] = {}
    for exit_id in traced.exit_ids:
        exits_at.setdefault(traced.exit_point(exit_id), []).append(exit_id)
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "model_fingerprint": fingerprint,
        "model_spec": traced.spec.to_dict(),
        "input_hw": list(input_hw),
        "precision": precision,
        "opset": OPSET,
        "torch": torch.__version__,
        "created_unix_s": int(time.time()),
        "blocks": blocks,
        "segments": {},
        "heads": {},
        "output": "output.onnx",
    }
    total = len(blocks) + len(traced.exit_ids)
    bar = tqdm(total=total, desc="exporting stages", unit="stage", disable=_quiet(progress))
    features = torch.zeros(1, 3, *input_hw, device=device, dtype=dtype)
    previous: str | None = None
    with bar, torch.inference_mode(False), torch.no_grad(), quiet_exporter():
        for point in blocks:
            segment = _Segment(traced, previous, point)
            name = f"segment-{point}.onnx"
            output = export_module(segment, features, folder / name)
            manifest["segments"][point] = _entry(name, features, output)
            features, previous = output, point
            bar.update(1)
            for exit_id in exits_at.get(point, ()):
                name = f"head-{exit_id.replace(':', '--')}.onnx"
                logits = export_module(_Head(traced, exit_id), features, folder / name)
                manifest["heads"][exit_id] = _entry(name, features, logits)
                bar.update(1)
    return manifest


def export_fused_segment(
    model: MESSNet,
    export: StageExport,
    start: str | None,
    end: str,
    device: torch.device | None = None,
) -> Path:
    """One file for the blocks after ``start`` up to ``end``, beside ``export``'s (cached).

    The engine runs the blocks between two active exits back to back; one
    session for them saves a call and a memory-layout conversion per block
    (measured on the bundled model: 6.2 against 6.9 ms to the fourth exit
    point). The per-block files stay: profiles and other exit sets use them.
    """
    path = export.directory / f"fused-{start or 'input'}--{end}.onnx"
    if path.is_file():
        return path
    first = export.blocks[0 if start is None else export.blocks.index(start) + 1]
    dtype = EXPORT_PRECISIONS[export.precision]
    device = device or torch.device("cpu")
    traced = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    example = torch.zeros(export.segment(first).input_shape, device=device, dtype=dtype)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    with torch.inference_mode(False), torch.no_grad(), quiet_exporter():
        export_module(_Segment(traced, start, end), example, partial)
    partial.replace(path)
    return path


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None hides the bar unless stderr is a terminal."""
    return None if progress is None else not progress


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the tracer's warnings: the export is checked against torch in the tests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def export_module(
    module: nn.Module, example: Tensor, path: Path, *, dynamic_batch: bool = False
) -> Tensor:
    """Export ``module`` at ``example``'s shape (TorchScript tracing) and return its output.

    The wrapper is put in eval mode first: the exporter restores the mode it
    found, recursively, and a new module's is training, which would switch
    the shared network's batch norms to batch statistics for the next stage.
    ``dynamic_batch`` leaves the first dimension of the input and the output
    free, for runs of several frames at once.
    """
    module.eval()
    output: Tensor = module(example)
    batch_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    try:
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=batch_axes,
            do_constant_folding=True,
        )
    except Exception as err:  # the exporter raises many unrelated types
        raise BackendError(f"exporting {path.name} to ONNX failed: {err}") from err
    return output


def _entry(name: str, example: Tensor, output: Tensor) -> dict[str, Any]:
    return {"file": name, "input_shape": list(example.shape), "output_shape": list(output.shape)}


def _output_graph(onnx: Any, precision: str) -> Any:
    """Logits (1, C, h, w) + frame size -> (1, H, W) uint8 class ids, as the torch output step.

    Bilinear resize with half-pixel centres is what ``F.interpolate(...,
    align_corners=False)`` computes; ArgMax takes the first maximum on ties,
    as ``max(dim=1).indices`` does. Shapes are dynamic: frames of any size.
    """
    helper, proto = onnx.helper, onnx.TensorProto
    elem = proto.FLOAT16 if precision == "fp16" else proto.FLOAT
    nodes = [
        helper.make_node("Shape", [OUTPUT_LOGITS], ["shape"]),
        helper.make_node("Slice", ["shape", "zero", "two"], ["batch_classes"]),
        helper.make_node("Concat", ["batch_classes", OUTPUT_SIZE], ["sizes"], axis=0),
        helper.make_node(
            "Resize",
            [OUTPUT_LOGITS, "", "", "sizes"],
            ["resized"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        helper.make_node("ArgMax", ["resized"], ["label"], axis=1, keepdims=0),
        helper.make_node("Cast", ["label"], [OUTPUT_NAME], to=proto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "output_step",
        [
            helper.make_tensor_value_info(OUTPUT_LOGITS, elem, [1, "classes", "height", "width"]),
            helper.make_tensor_value_info(OUTPUT_SIZE, proto.INT64, [2]),
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, proto.UINT8, [1, "frame_h", "frame_w"])],
        initializer=[
            helper.make_tensor("zero", proto.INT64, [1], [0]),
            helper.make_tensor("two", proto.INT64, [1], [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every runtime that reads opset 17
    return model


def _remove_stale(stages: Path, fingerprint: str) -> None:
    """Remove exports of other weights beside a checkpoint (it was replaced).

    Only a checkpoint's own ``.stages`` folder is cleaned: in the shared
    cache, other checkpoints of the same file name may still be in use.
    """
    if stages.suffix != STAGES_SUFFIX or not stages.is_dir():
        return
    for entry in stages.iterdir():
        export = load_export(entry) if entry.is_dir() else None
        if export is not None and export.model_fingerprint != fingerprint:
            LOGGER.info(f"removing the export of earlier weights {entry}")
            shutil.rmtree(entry, ignore_errors=True)
