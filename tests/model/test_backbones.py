"""ResNet backbones: every preset runs forward and backward, strides and names are right."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mess_ros.model import BACKBONES, BackboneSpec, ModelError, build_backbone
from mess_ros.model.backbones import Bottleneck

EXPECTED_LAYERS = {
    "resnet10": (1, 1, 1, 1),
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
    "resnet101": (3, 4, 23, 3),
}


def test_registry_holds_the_resnet_family() -> None:
    assert BACKBONES.names() == sorted(EXPECTED_LAYERS)


@pytest.mark.parametrize("name", sorted(EXPECTED_LAYERS))
def test_forward_backward_and_block_names(name: str) -> None:
    torch.manual_seed(0)
    backbone = build_backbone(BackboneSpec(name, base_width=8, output_stride=16))
    expected_names = [
        f"layer{stage}_{block}"
        for stage, count in enumerate(EXPECTED_LAYERS[name], start=1)
        for block in range(count)
    ]
    assert [p.name for p in backbone.points] == expected_names
    expansion = 4 if name in ("resnet50", "resnet101") else 1
    assert backbone.points[-1].channels == 8 * 8 * expansion

    image = torch.randn(2, 3, 33, 65, requires_grad=True)
    features = backbone(image)
    # stem and layer2/layer3 round odd sizes up at each stride-2 step; layer4 is dilated.
    assert features.shape == (2, 8 * 8 * expansion, 3, 5)
    features.square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    for param in backbone.parameters():
        assert param.grad is not None, "every parameter takes part in the forward pass"


@pytest.mark.parametrize(
    ("output_stride", "final_hw", "layer4_dilation"),
    [(8, (8, 8), 4), (16, (4, 4), 2), (32, (2, 2), 1)],
)
def test_output_stride_uses_dilation(
    output_stride: int, final_hw: tuple[int, int], layer4_dilation: int
) -> None:
    backbone = build_backbone(BackboneSpec("resnet18", 8, output_stride))
    strides = {p.name: p.stride for p in backbone.points}
    assert strides["layer1_1"] == 4
    assert strides["layer2_0"] == 8
    assert strides["layer3_0"] == min(16, output_stride)
    assert strides["layer4_1"] == output_stride
    assert tuple(backbone(torch.zeros(1, 3, 64, 64)).shape[-2:]) == final_hw
    layer4 = backbone.blocks["layer4_1"]
    assert isinstance(layer4.conv2, nn.Conv2d)
    assert layer4.conv2.dilation == (layer4_dilation, layer4_dilation)
    # The first dilated block keeps the previous dilation in its first conv (no gridding).
    first = backbone.blocks["layer4_0"]
    assert isinstance(first.conv1, nn.Conv2d)
    assert first.conv1.dilation[0] == max(1, layer4_dilation // 2)


def test_feature_sizes_follow_nominal_strides_on_odd_inputs() -> None:
    backbone = build_backbone(BackboneSpec("resnet50", 8, 8))
    x = backbone.stem(torch.zeros(1, 3, 37, 51))
    for index, point in enumerate(backbone.points):
        x = backbone.run(x, index, index)
        assert x.shape[1] == point.channels
        size = (37, 51)
        for _ in range(int(math.log2(point.stride))):
            size = ((size[0] + 1) // 2, (size[1] + 1) // 2)
        assert tuple(x.shape[-2:]) == size
    assert isinstance(backbone.blocks["layer3_0"], Bottleneck)


def test_base_width_scales_channels() -> None:
    narrow = build_backbone(BackboneSpec("resnet10", 4, 32))
    wide = build_backbone(BackboneSpec("resnet10", 16, 32))
    assert [p.channels for p in narrow.points] == [4, 8, 16, 32]
    assert [p.channels for p in wide.points] == [16, 32, 64, 128]


def test_spec_round_trip_and_defaults() -> None:
    spec = BackboneSpec("resnet50", 16, 8)
    assert BackboneSpec.from_dict(spec.to_dict()) == spec
    assert BackboneSpec.from_dict({"name": "resnet18"}) == BackboneSpec()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet19"}, "valid names: resnet10, resnet101, resnet18, resnet34, resnet50"),
        ({"output_stride": 12}, "output_stride must be one of 8, 16, 32"),
        ({"base_width": 0}, "base_width must be >= 1"),
        ({"base_width": 8.0}, "base_width must be an integer"),
    ],
)
def test_bad_specs_explain_what_is_allowed(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        BackboneSpec(**kwargs)  # type: ignore[arg-type]


def test_from_dict_rejects_unknown_and_missing_keys() -> None:
    with pytest.raises(ModelError, match="unknown keys widht"):
        BackboneSpec.from_dict({"name": "resnet18", "widht": 8})
    with pytest.raises(ModelError, match="missing name"):
        BackboneSpec.from_dict({"base_width": 8})
