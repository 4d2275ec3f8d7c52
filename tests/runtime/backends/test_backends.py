"""Each backend segments as the torch backend does; missing runtimes say what to install.

Tolerance: another runtime computes the same float32 network in another order
of operations (fused batch norm, other convolution algorithms), so logits
differ by about 1e-6 relative. A pixel whose two best classes are that close
may flip, and so may a frame whose confidence lies that close to its image
threshold. Required: at least 99.9 % of the pixels equal and the same exit on
at least 99 % of the frames (the deployment's --verify uses the same bounds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from mess_ros.common.exits import exit_point
from mess_ros.common.latency_table import LatencyTable
from mess_ros.config import ConfigError, SegmentationConfig, parameter_file
from mess_ros.data.datasets import DatasetSpec, build_dataset
from mess_ros.data.transforms import normalize_image
from mess_ros.deploy.verify import BACKEND_DECISION_SHARE
from mess_ros.model import (
    CLASS_CONFIDENCE_BINS,
    Checkpoint,
    class_confidence_histogram,
    confident_share,
)
from mess_ros.package_files import package_data_file
from mess_ros.runtime.backends import (
    ONNXRUNTIME,
    TENSORRT,
    BackendError,
    RuntimeMissingError,
    create_executor,
    numpy_ops,
    resolve_backend,
    runtime_available,
)
from mess_ros.runtime.backends.base import import_runtime
from mess_ros.runtime.backends.ort_executor import OnnxRuntimeExecutor
from mess_ros.runtime.engine import SegmentationEngine, resolve_package_file
from mess_ros.runtime.profiling import profile_model
from tests.runtime.conftest import ALL_EXITS, INPUT_HW, constructed_table

MIN_PIXELS = 0.999
MIN_DECISIONS = BACKEND_DECISION_SHARE


def config_for(backend: str, **policy: object) -> SegmentationConfig:
    config = SegmentationConfig()
    config.engine.backend = backend
    config.engine.input_height, config.engine.input_width = INPUT_HW
    config.engine.warmup_frames = 1
    config.engine.num_threads = 1
    for key, value in policy.items():
        setattr(config.policy, key, value)
    return config


@pytest.mark.parametrize("exit_id", ALL_EXITS)
def test_every_exit_of_onnxruntime_matches_torch(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8], exit_id: str
) -> None:
    table = constructed_table()
    masks = {}
    for backend in ("torch", ONNXRUNTIME):
        config = config_for(backend, name="fixed", fixed_exit=exit_id)
        engine = SegmentationEngine(config, checkpoint, latency_table=table)
        assert engine.backend == backend
        result = engine.infer(image)
        assert (result.exit_id, result.mask.shape) == (exit_id, image.shape[:2])
        bare = engine.forward_to_exit(engine.preprocess(image), exit_id, image.shape[:2])
        assert np.array_equal(bare, result.mask)
        masks[backend] = result.mask
    assert np.mean(masks["torch"] == masks[ONNXRUNTIME]) >= MIN_PIXELS


@pytest.fixture(scope="module")
def rover(tmp_path_factory: pytest.TempPathFactory) -> SegmentationConfig:
    """The bundled cpu_rover robot (a pruned checkpoint, its exits and thresholds), copied."""
    folder = tmp_path_factory.mktemp("rover")
    params = parameter_file.read(package_data_file("config/robots/cpu_rover.yaml"))
    for name in ("model_path", "latency_table"):
        source = resolve_package_file(getattr(params.engine, name), f"engine.{name}")
        shutil.copyfile(source, folder / source.name)
        setattr(params.engine, name, str(folder / source.name))
    params.engine.num_threads = 1
    params.engine.warmup_frames = 1
    return params


def test_onnxruntime_segments_the_test_images_as_torch_does(rover: SegmentationConfig) -> None:
    dataset = build_dataset(
        DatasetSpec(kind="synthetic", split="test", num_images=60, height=120, width=160)
    )
    engines = {}
    for backend in ("torch", ONNXRUNTIME):
        config = SegmentationConfig.from_parameters({"engine.backend": backend}, rover)
        engines[backend] = SegmentationEngine(config)
    assert any("measured with backend 'torch'" in w for w in engines[ONNXRUNTIME].warnings)
    equal_pixels, same_exit, exits = [], 0, set()
    for index in range(len(dataset)):
        image = dataset[index].image
        reference, other = (engines[b].infer(image) for b in ("torch", ONNXRUNTIME))
        equal_pixels.append(np.mean(reference.mask == other.mask))
        same_exit += reference.exit_id == other.exit_id
        exits.add(reference.exit_id)
    assert len(exits) >= 2  # the comparison covers early exits, not only the final one
    # the blocks between two active exits ran as one exported segment
    first, second = (exit_point(e) for e in rover.policy.active_exits[:2])
    fused = Path(rover.engine.model_path + ".stages").glob("*/fused-*.onnx")
    assert f"fused-{first}--{second}.onnx" in {p.name for p in fused}
    assert np.mean(equal_pixels) >= MIN_PIXELS
    assert same_exit >= MIN_DECISIONS * len(dataset)


def test_numpy_confidence_and_histogram_equal_the_torch_definitions() -> None:
    logits = torch.randn(1, 6, 24, 40, generator=torch.Generator().manual_seed(4)) * 3
    values = logits.numpy()
    for threshold in (0.3, 0.5, 0.9):
        expected = float(confident_share(logits, threshold)[0])
        assert numpy_ops.confident_share(values, threshold) == pytest.approx(expected, abs=1e-6)
    classes = numpy_ops.thresholds_array([0.0, 1.0, 0.5, 0.5, 1.0, 0.2])
    probability, label = torch.softmax(logits, dim=1).max(dim=1)
    expected = float((probability >= torch.from_numpy(classes)[label]).float().mean())
    assert numpy_ops.confident_share(values, 0.9, classes) == pytest.approx(expected, abs=1e-6)
    histogram = numpy_ops.class_confidence_histogram(values, CLASS_CONFIDENCE_BINS)
    reference = class_confidence_histogram(logits)[0].numpy()
    assert histogram.shape == reference.shape and histogram.sum() == 24 * 40
    assert np.abs(histogram - reference).sum() <= 2  # a pixel on a bin edge may move by one


def test_onnxruntime_follows_the_thread_governor(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8]
) -> None:
    share: list[float | None] = [0.0]
    config = config_for(ONNXRUNTIME, name="final")
    config.engine.num_threads = 2
    engine = SegmentationEngine(
        config, checkpoint, latency_table=constructed_table(), others_cpu_share=lambda: share[0]
    )
    assert engine.single_thread_slowdown > 0  # one thread measured at start, as on torch
    assert engine.infer(image).threads == 2
    share[0] = 0.6
    assert engine.infer(image).threads == 1
    assert engine.thread_changes == 1

    executor = create_executor(
        ONNXRUNTIME,
        checkpoint.model,
        torch.device("cpu"),
        INPUT_HW,
        checkpoint_path=checkpoint.path,
        threads=2,
    )
    assert isinstance(executor, OnnxRuntimeExecutor)
    for count in (2, 1, 2):
        executor.set_threads(count)
        with executor.context():
            executor.head(
                "final",
                executor.segment(
                    executor.to_device(np.zeros((3, *INPUT_HW), dtype=np.float32)), None, "layer4_0"
                ),
            )
        assert executor.threads == count
    sessions = executor._sessions  # one set per thread count, each made once
    assert sorted(sessions) == [1, 2]
    for count, made in sessions.items():
        assert {s.get_session_options().intra_op_num_threads for s in made.values()} == {count}


def test_profiles_record_their_backend(checkpoint: Checkpoint, tmp_path: Path) -> None:
    table = profile_model(
        checkpoint.model,
        INPUT_HW,
        warmup=1,
        repeats=2,
        backend=ONNXRUNTIME,
        checkpoint_path=checkpoint.path,
    )
    assert table.backend == ONNXRUNTIME and table.points == checkpoint.model.block_points
    assert list(table.heads) == list(ALL_EXITS)
    path = tmp_path / "table.json"
    table.save(path)
    assert LatencyTable.load(path).backend == ONNXRUNTIME
    data = table.to_dict()
    del data["backend"]  # a table written before backends existed was measured on torch
    assert LatencyTable.from_dict(data).backend == "torch"


def test_a_missing_runtime_says_what_to_install(
    checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(RuntimeMissingError, match=r"pip install onnxruntime==1\.31\.1"):
        SegmentationEngine(config_for(ONNXRUNTIME), checkpoint, latency_table=constructed_table())
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    monkeypatch.delitem(sys.modules, "onnxruntime")
    assert resolve_backend("auto", torch.device("cpu")) == ONNXRUNTIME


def test_tensorrt_needs_cuda_and_says_what_to_install(checkpoint: Checkpoint) -> None:
    config = config_for(TENSORRT)
    with pytest.raises(ConfigError, match=r"engine\.backend = 'tensorrt'.*cuda"):
        config.validate()
    config.engine.precision = "bf16"
    config.engine.device = "cuda"
    with pytest.raises(ConfigError, match=r"engine\.precision = 'bf16'.*fp32 or fp16"):
        config.validate()
    with pytest.raises(BackendError, match="CUDA only"):
        create_executor(TENSORRT, checkpoint.model, torch.device("cpu"), INPUT_HW)
    if not runtime_available("tensorrt"):
        with pytest.raises(RuntimeMissingError, match=r"pip install tensorrt-cu13==11\.4"):
            import_runtime("tensorrt", TENSORRT)


TORCH_FREE_RUN = """
import json, sys
sys.modules["torch"] = None  # any import of torch now fails
from pathlib import Path
import numpy as np
from mess_ros.runtime.backends.ort_executor import OnnxRuntimeExecutor
from mess_ros.runtime.backends.stages import load_export
executor = OnnxRuntimeExecutor(load_export(Path(sys.argv[1])), threads=1)
image = np.load(sys.argv[2])
with executor.context():
    logits = executor.head("final", executor.segment(executor.to_device(image), None, "layer4_0"))
    mask = executor.output(logits, (40, 50))
    histogram = executor.class_histogram(logits)
loaded = sorted(m for m, v in sys.modules.items() if m.split(".")[0] == "torch" and v)
print(json.dumps({"mask": mask.tolist(), "bins": histogram.shape[1], "torch": loaded}))
"""


def test_the_onnxruntime_executor_runs_without_torch(
    checkpoint: Checkpoint, image: npt.NDArray[np.uint8], tmp_path: Path
) -> None:
    executor = create_executor(
        ONNXRUNTIME,
        checkpoint.model,
        torch.device("cpu"),
        INPUT_HW,
        checkpoint_path=checkpoint.path,
    )
    assert isinstance(executor, OnnxRuntimeExecutor)
    chw = normalize_image(image, INPUT_HW)
    np.save(tmp_path / "image.npy", chw)
    with executor.context():
        features = executor.segment(executor.to_device(chw), None, "layer4_0")
        expected = executor.output(executor.head("final", features), (40, 50))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            TORCH_FREE_RUN,
            str(executor.export.directory),
            str(tmp_path / "image.npy"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["torch"] == [] and result["bins"] == CLASS_CONFIDENCE_BINS
    assert np.array_equal(np.asarray(result["mask"], dtype=np.uint8), expected)
