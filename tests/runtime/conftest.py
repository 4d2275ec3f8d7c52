"""Tiny models, checkpoints and constructed latency tables for the runtime tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch

from mess_ros.common.latency_table import LatencyStat, LatencyTable
from mess_ros.data.labels import LabelSet
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

NUM_CLASSES = 4
INPUT_HW = (32, 64)
LABELS = LabelSet(
    "tiny",
    ("floor", "wall", "person", "box"),
    ((0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)),
)
# Intermediate exits of the tiny model, in depth order; "final" sits after layer4_0.
EXITS = ("layer1_0:linear", "layer2_0:linear", "layer3_0:fcn_c8_k1_d1")
ALL_EXITS = (*EXITS, "final")


def tiny_model() -> MESSNet:
    torch.manual_seed(0)
    spec = ModelSpec(
        BackboneSpec("resnet10", 8, 16),
        NUM_CLASSES,
        HeadSpec("linear"),
        (
            ExitSpec("layer3_0", HeadSpec("fcn", channels=8, depth=1)),
            ExitSpec("layer1_0", HeadSpec("linear")),
            ExitSpec("layer2_0", HeadSpec("linear")),
        ),
    )
    model = MESSNet(spec)
    model.train()
    with torch.no_grad():  # batch-norm statistics away from their initial values
        model(torch.randn(2, 3, *INPUT_HW))
    return model.eval()


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, tiny_model(), LABELS.to_dict(), {"preset": "tiny"})
    return path


@pytest.fixture
def checkpoint(checkpoint_path: Path) -> Checkpoint:
    return load_checkpoint(checkpoint_path)


@pytest.fixture
def image() -> npt.NDArray[np.uint8]:
    """A frame of another size than the network input, to exercise both resizes."""
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)


def constructed_table(
    segment_ms: float = 10.0, head_ms: float = 2.0, output_ms: float = 1.0, spread: float = 0.0
) -> LatencyTable:
    """Latency table of the tiny model with round numbers (p90 = mean * (1 + spread))."""

    def stat(ms: float) -> LatencyStat:
        return LatencyStat(ms, ms * (1 + spread), 0.0, 10)

    return LatencyTable(
        model_fingerprint="0123456789abcdef",
        input_hw=INPUT_HW,
        device="cpu",
        device_name="constructed",
        versions={"torch": torch.__version__},
        quantile=0.9,
        segments={p: stat(segment_ms) for p in ("layer1_0", "layer2_0", "layer3_0", "layer4_0")},
        heads={e: stat(head_ms) for e in ALL_EXITS},
        outputs={e: stat(output_ms) for e in ALL_EXITS},
    )
