"""Tiny multi-exit networks shared by the model tests (base width 8, a few classes)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mess_ros.model import BackboneSpec, ExitSpec, HeadSpec, MESSNet, ModelSpec
from mess_ros.model.heads import LinearHead

NUM_CLASSES = 5
ODD_HW = (33, 65)


def tiny_spec(backbone: str = "resnet18", output_stride: int = 16) -> ModelSpec:
    """A linear exit at every candidate point plus two richer heads, out of depth order."""
    model = MESSNet(
        ModelSpec(BackboneSpec(backbone, 8, output_stride), NUM_CLASSES, HeadSpec("linear"))
    )
    exits = [ExitSpec(point, HeadSpec("linear")) for point in reversed(model.points)]
    exits.insert(0, ExitSpec("layer3_0", HeadSpec("aspp_lite", channels=8)))
    exits.insert(1, ExitSpec("layer2_1", HeadSpec("fcn", channels=8, depth=2, dilation=2)))
    return ModelSpec(
        BackboneSpec(backbone, 8, output_stride),
        NUM_CLASSES,
        HeadSpec("deeplabv3", channels=16),
        tuple(exits),
    )


def trained_like(model: MESSNet, hw: tuple[int, int] = ODD_HW) -> MESSNet:
    """Move batch-norm statistics away from their initial values, as training would."""
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, *hw))
    return model.eval()


@pytest.fixture
def spec() -> ModelSpec:
    return tiny_spec()


@pytest.fixture
def model(spec: ModelSpec) -> MESSNet:
    torch.manual_seed(0)
    return trained_like(MESSNet(spec))


@pytest.fixture
def image() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, *ODD_HW, generator=generator)


def linear_classifier(model: MESSNet, exit_id: str) -> nn.Conv2d:
    """The 1x1 convolution of a linear exit head, to inspect or nudge its weights."""
    head = model.exit_heads[exit_id]
    assert isinstance(head, LinearHead)
    return head.classifier
