"""A tiny training run (checkpoint, calibration cache, latency table) shared by the deploy tests.

The network is untrained but its classifiers are scaled up so that exits are
confident on some images and not on others, like a trained one: that is what
gives the confidence policy real decisions to make.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from mess_ros.common.latency_table import LatencyTable
from mess_ros.data.datasets import DatasetSpec, build_dataset
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.model import (
    BackboneSpec,
    Checkpoint,
    ExitSpec,
    HeadSpec,
    MESSNet,
    ModelSpec,
    load_checkpoint,
    save_checkpoint,
)
from mess_ros.runtime.profiling import profile_model
from mess_ros.train.calibration import CalibrationCache, build_calibration_cache

INPUT_HW = (32, 64)
CALIBRATION = DatasetSpec(kind="synthetic", num_images=12, height=32, width=64, seed=1)


@dataclass(frozen=True)
class TinyRun:
    root: Path
    checkpoint_path: Path
    cache_path: Path
    table_path: Path
    checkpoint: Checkpoint
    cache: CalibrationCache
    table: LatencyTable


def tiny_model(seed: int) -> MESSNet:
    torch.manual_seed(seed)
    classes = SYNTHETIC_LABELS.num_classes
    backbone = BackboneSpec("resnet10", 8, 16)
    points = MESSNet(ModelSpec(backbone, classes, HeadSpec("linear"))).points
    exits = [
        ExitSpec(point, head)
        for point in points
        for head in (HeadSpec("linear"), HeadSpec("fcn", channels=8))
    ]
    model = MESSNet(ModelSpec(backbone, classes, HeadSpec("deeplabv3", channels=16), tuple(exits)))
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, *INPUT_HW))  # batch-norm statistics away from their defaults
        classifiers = [
            m
            for m in model.modules()
            if isinstance(m, torch.nn.Conv2d) and m.out_channels == classes
        ]
        for index, conv in enumerate(classifiers):
            conv.weight.mul_(6.0 + 5.0 * (index % 4))
    return model.eval()


def write_run(root: Path, seed: int) -> TinyRun:
    model = tiny_model(seed)
    checkpoint_path = root / "checkpoint.pt"
    save_checkpoint(
        checkpoint_path, model, SYNTHETIC_LABELS.to_dict(), {"input_hw": list(INPUT_HW)}
    )
    checkpoint = load_checkpoint(checkpoint_path)
    dataset = build_dataset(CALIBRATION)
    cache = build_calibration_cache(
        checkpoint, dataset, INPUT_HW, "cpu", progress=False, dataset_info=CALIBRATION.to_dict()
    )
    cache_path = root / "calibration.npz"
    cache.save(cache_path)
    table = profile_model(checkpoint.model, INPUT_HW, "cpu", warmup=1, repeats=3)
    table_path = root / "table.json"
    table.save(table_path)
    return TinyRun(root, checkpoint_path, cache_path, table_path, checkpoint, cache, table)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyRun:
    return write_run(tmp_path_factory.mktemp("run"), seed=0)
