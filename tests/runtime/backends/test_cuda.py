"""The backends on an NVIDIA GPU (skipped without one; ``make gpu-check`` runs them).

Tolerances as in test_backends.py for fp32. In fp16 the logits carry about
1e-3 relative error, so more pixels near class boundaries flip: at least
99.5 % equal to the fp16 torch backend's, and the same exit on 97 % of the
frames.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.data.datasets import DatasetSpec, build_dataset
from mess_ros.package_files import package_data_file
from mess_ros.runtime.backends import ONNXRUNTIME, TENSORRT, TORCH, runtime_available
from mess_ros.runtime.engine import SegmentationEngine, resolve_model_path

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

BOUNDS = {"fp32": (0.999, 0.99), "fp16": (0.995, 0.97)}


@pytest.fixture(scope="module")
def rover(tmp_path_factory: pytest.TempPathFactory) -> SegmentationConfig:
    folder = tmp_path_factory.mktemp("rover")
    params = parameter_file.read(package_data_file("config/robots/cpu_rover.yaml"))
    source = resolve_model_path(params.engine.model_path)
    shutil.copyfile(source, folder / source.name)
    params.engine.model_path = str(folder / source.name)
    params.engine.latency_table = ""
    params.engine.device = "cuda"
    params.engine.require_cuda = True
    params.engine.profile_repeats = 2
    return params


def compare(rover: SegmentationConfig, backend: str, precision: str) -> None:
    dataset = build_dataset(
        DatasetSpec(kind="synthetic", split="test", num_images=60, height=240, width=320)
    )
    engines = {}
    for name in (TORCH, backend):
        params = {"engine.backend": name, "engine.precision": precision}
        engines[name] = SegmentationEngine(SegmentationConfig.from_parameters(params, rover))
        assert engines[name].backend == name and engines[name].device.type == "cuda"
    pixels, decisions = [], 0
    for index in range(len(dataset)):
        image = dataset[index].image
        reference, other = (engines[n].infer(image) for n in (TORCH, backend))
        pixels.append(np.mean(reference.mask == other.mask))
        decisions += reference.exit_id == other.exit_id
    min_pixels, min_decisions = BOUNDS[precision]
    assert np.mean(pixels) >= min_pixels
    assert decisions >= min_decisions * len(dataset)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_segments_as_torch_does(rover: SegmentationConfig, precision: str) -> None:
    if not runtime_available("tensorrt"):
        pytest.skip("tensorrt is not installed (pip install tensorrt-cu13==11.4.0.106)")
    compare(rover, TENSORRT, precision)


def test_onnxruntime_on_cuda_segments_as_torch_does(rover: SegmentationConfig) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDA provider (pip install onnxruntime-gpu==1.31.1)")
    compare(rover, ONNXRUNTIME, "fp32")


def test_torch_on_cuda_segments_as_on_the_cpu(rover: SegmentationConfig) -> None:
    dataset = build_dataset(
        DatasetSpec(kind="synthetic", split="test", num_images=20, height=240, width=320)
    )
    cpu = SegmentationConfig.from_parameters({"engine.device": "cpu"}, rover)
    engines = [SegmentationEngine(rover), SegmentationEngine(cpu)]
    pixels = [
        np.mean(engines[0].infer(dataset[i].image).mask == engines[1].infer(dataset[i].image).mask)
        for i in range(len(dataset))
    ]
    assert np.mean(pixels) >= BOUNDS["fp32"][0]


def test_export_cache_holds_fp16_apart(rover: SegmentationConfig) -> None:
    if not runtime_available("tensorrt"):
        pytest.skip("tensorrt is not installed")
    for precision in ("fp32", "fp16"):
        params = {"engine.backend": TENSORRT, "engine.precision": precision}
        SegmentationEngine(SegmentationConfig.from_parameters(params, rover))
    stages = Path(rover.engine.model_path + ".stages")
    folders = {p.name.split("-")[1] for p in stages.iterdir() if p.is_dir()}
    assert folders == {"fp32", "fp16"}
