"""Exit heads: every architecture on odd sizes, canonical names, and the default pool."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mess_ros.model import EXIT_HEADS, HeadSpec, ModelError, build_head, default_head_pool
from mess_ros.model.heads import TORCHVISION_ASPP_RATES, scaled_rates

ONE_OF_EACH = [
    HeadSpec("linear"),
    HeadSpec("fcn", channels=8, depth=1, dilation=1),
    HeadSpec("fcn", channels=6, depth=3, dilation=2),
    HeadSpec("aspp_lite", channels=8),
    HeadSpec("deeplabv3", channels=12),
    HeadSpec("deeplabv3_tv", channels=12),
]
# Heads of our own layout, whose image pooling has no batch norm.
OWN_LAYOUT = [spec for spec in ONE_OF_EACH if spec.arch != "deeplabv3_tv"]


def test_every_registered_head_is_covered() -> None:
    assert EXIT_HEADS.names() == sorted({spec.arch for spec in ONE_OF_EACH})


@pytest.mark.parametrize("spec", ONE_OF_EACH, ids=lambda s: s.name)
@pytest.mark.parametrize("hw", [(7, 13), (1, 1), (4, 9)])
@pytest.mark.parametrize("stride", [4, 16])
def test_forward_backward_keeps_resolution(
    spec: HeadSpec, hw: tuple[int, int], stride: int
) -> None:
    torch.manual_seed(0)
    head = build_head(spec, in_channels=10, num_classes=5, stride=stride)
    features = torch.randn(2, 10, *hw, requires_grad=True)
    logits = head(features)
    assert logits.shape == (2, 5, *hw)
    logits.square().mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    assert all(p.grad is not None for p in head.parameters())


@pytest.mark.parametrize("spec", OWN_LAYOUT, ids=lambda s: s.name)
def test_batch_of_one_trains(spec: HeadSpec) -> None:
    """Image pooling has no batch norm, so a single image still trains."""
    head = build_head(spec, in_channels=4, num_classes=3, stride=8).train()
    assert head(torch.randn(1, 4, 5, 7)).shape == (1, 3, 5, 7)


def test_torchvision_layout_head() -> None:
    """torchvision's DeepLabHead: fixed rates at every stride, batch norm in image pooling.

    That batch norm needs a batch of two to train on a 1x1 map (as in
    torchvision); frozen or in eval mode a single image is fine.
    """
    head = build_head(HeadSpec("deeplabv3_tv", channels=4), 8, 3, stride=16)
    dilations = sorted(
        m.dilation[0] for m in head.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1
    )
    assert tuple(dilations) == TORCHVISION_ASPP_RATES
    assert head.eval()(torch.randn(1, 8, 5, 7)).shape == (1, 3, 5, 7)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        head.train()(torch.randn(1, 8, 5, 7))


def test_pooling_branch_is_global() -> None:
    """Changing one far-away pixel changes every output pixel of an ASPP head, not of FCN."""
    torch.manual_seed(0)
    x = torch.randn(1, 4, 9, 31)
    y = x.clone()
    y[0, :, 0, 0] += 5.0
    aspp = build_head(HeadSpec("aspp_lite", channels=4), 4, 3, stride=32).eval()
    fcn = build_head(HeadSpec("fcn", channels=4, depth=1, dilation=1), 4, 3, stride=32).eval()
    with torch.no_grad():
        assert (aspp(x) - aspp(y))[0, :, -1, -1].abs().max() > 0
        assert torch.equal(fcn(x)[0, :, -1, -1], fcn(y)[0, :, -1, -1])


def test_aspp_rates_scale_with_stride() -> None:
    assert scaled_rates((96, 192, 288), 16) == (6, 12, 18)
    assert scaled_rates((96, 192, 288), 8) == (12, 24, 36)
    assert scaled_rates((48, 96), 32) == (2, 3)
    assert scaled_rates((8,), 32) == (1,)
    head = build_head(HeadSpec("deeplabv3", channels=4), 8, 3, stride=8)
    dilations = sorted(
        m.dilation[0] for m in head.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1
    )
    assert dilations == [12, 24, 36]


def test_linear_head_is_a_single_1x1_convolution() -> None:
    head = build_head(HeadSpec("linear"), 7, 3, stride=4)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (1, 1)
    assert sum(p.numel() for p in head.parameters()) == 7 * 3 + 3


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("linear", HeadSpec("linear")),
        ("fcn_c64_k2_d1", HeadSpec("fcn", 64, 2, 1)),
        ("fcn_c8_k1_d4", HeadSpec("fcn", 8, 1, 4)),
        ("aspplite_c64", HeadSpec("aspp_lite", 64)),
        ("deeplabv3_c128", HeadSpec("deeplabv3", 128)),
        ("deeplabv3tv_c256", HeadSpec("deeplabv3_tv", 256)),
    ],
)
def test_name_and_parse_are_inverse(name: str, spec: HeadSpec) -> None:
    assert spec.name == name
    assert HeadSpec.parse(name) == spec
    assert HeadSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize(
    "name",
    [
        "",
        "fcn",
        "fcn_c64",
        "fcn_c64_k2_d1_x",
        "fcn_k2_c64_d1",
        "fcn_c0_k1_d1",
        "fcn_c064_k1_d1",
        "fcn_c-1_k1_d1",
        "aspp_lite_c64",
        "linear_c8",
        "deeplabv3",
        "bogus_c3",
    ],
)
def test_bad_names_list_the_accepted_forms(name: str) -> None:
    with pytest.raises(ModelError) as info:
        HeadSpec.parse(name)
    message = str(info.value)
    assert repr(name) in message
    for form in ("linear", "fcn_c<channels>_k<depth>_d<dilation>", "aspplite_c<channels>"):
        assert form in message


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"arch": "unet"}, "valid names: aspp_lite, deeplabv3, deeplabv3_tv, fcn, linear"),
        ({"arch": "linear", "channels": 8}, "linear head has no channels parameter"),
        ({"arch": "aspp_lite", "channels": 8, "depth": 2}, "aspp_lite head has no depth"),
        ({"arch": "fcn"}, "fcn head channels must be >= 1"),
        ({"arch": "fcn", "channels": 8, "dilation": 0}, "dilation must be >= 1"),
        ({"arch": "fcn", "channels": True}, "channels must be an integer"),
    ],
)
def test_bad_specs_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ModelError, match=message):
        HeadSpec(**kwargs)  # type: ignore[arg-type]


def test_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ModelError, match="unknown keys width"):
        HeadSpec.from_dict({"arch": "fcn", "width": 8})


def test_default_head_pool_spans_cost_and_context() -> None:
    pool = default_head_pool(32)
    assert [h.name for h in pool] == ["linear", "fcn_c32_k1_d1", "fcn_c32_k2_d2", "aspplite_c32"]
    with pytest.raises(ModelError):
        default_head_pool(0)
