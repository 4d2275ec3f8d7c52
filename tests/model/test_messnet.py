"""MESSNet: exits, stage-wise execution equal to forward, editing the exit set, specs."""

from __future__ import annotations

import json
import random

import pytest
import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model import BackboneSpec, ExitSpec, HeadSpec, MESSNet, ModelError, ModelSpec
from tests.model.conftest import (
    NUM_CLASSES,
    ODD_HW,
    linear_classifier,
    tiny_spec,
    trained_like,
)

RESNET18_POINTS = [
    "layer1_0",
    "layer1_1",
    "layer2_0",
    "layer2_1",
    "layer3_0",
    "layer3_1",
    "layer4_0",
]


def test_points_and_exit_order(model: MESSNet) -> None:
    assert model.points == RESNET18_POINTS
    assert model.final_point == "layer4_1"
    assert model.block_points == [*RESNET18_POINTS, "layer4_1"]
    assert model.exit_ids == [
        "layer1_0:linear",
        "layer1_1:linear",
        "layer2_0:linear",
        "layer2_1:fcn_c8_k2_d2",
        "layer2_1:linear",
        "layer3_0:aspplite_c8",
        "layer3_0:linear",
        "layer3_1:linear",
        "layer4_0:linear",
        FINAL_EXIT,
    ]
    # The spec mirrors the network, in the same canonical order.
    assert [*model.spec.exit_ids, FINAL_EXIT] == model.exit_ids
    assert model.exit_point("layer2_1:fcn_c8_k2_d2") == "layer2_1"
    assert model.exit_point(FINAL_EXIT) == "layer4_1"
    strides = [model.exit_stride(e) for e in model.exit_ids]
    assert strides == [4, 4, 8, 8, 8, 16, 16, 16, 16, 16]


def test_forward_returns_every_exit_at_exit_resolution(model: MESSNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        logits = model(image)
    assert list(logits) == model.exit_ids
    expected_hw = {4: (9, 17), 8: (5, 9), 16: (3, 5)}
    for exit_id, value in logits.items():
        assert value.shape == (2, NUM_CLASSES, *expected_hw[model.exit_stride(exit_id)])


def test_forward_backward_reaches_every_parameter(spec: ModelSpec) -> None:
    model = MESSNet(spec).train()
    logits = model(torch.randn(2, 3, *ODD_HW))
    loss = torch.stack([value.square().mean() for value in logits.values()]).sum()
    torch.autograd.backward(loss)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("seed", range(4))
def test_stagewise_execution_equals_forward(model: MESSNet, image: torch.Tensor, seed: int) -> None:
    """Chain forward_backbone across random split points and run each head where it sits."""
    rng = random.Random(seed)
    blocks = model.block_points
    splits = sorted(rng.sample(range(len(blocks)), k=rng.randint(1, len(blocks))))
    if splits[-1] != len(blocks) - 1:
        splits.append(len(blocks) - 1)
    with torch.no_grad():
        expected = model(image)
        features: dict[str, torch.Tensor] = {}
        start: str | None = None
        x = image
        for index in splits:
            x = model.forward_backbone(x, start, blocks[index])
            features[blocks[index]] = x
            start = blocks[index]
        # Points skipped by the chain are reached from the nearest earlier split.
        for exit_id in model.exit_ids:
            point = model.exit_point(exit_id)
            if point not in features:
                earlier = [blocks[i] for i in splits if i < blocks.index(point)]
                source = features[earlier[-1]] if earlier else image
                features[point] = model.forward_backbone(
                    source, earlier[-1] if earlier else None, point
                )
            got = model.forward_head(exit_id, features[point])
            torch.testing.assert_close(got, expected[exit_id], rtol=0, atol=0)


def test_forward_backbone_edge_cases(model: MESSNet, image: torch.Tensor) -> None:
    with torch.no_grad():
        features = model.forward_backbone(image, None, "layer2_0")
        assert model.forward_backbone(features, "layer2_0", "layer2_0") is features
        with pytest.raises(ModelError, match="comes before"):
            model.forward_backbone(features, "layer2_0", "layer1_1")
    with pytest.raises(ModelError, match="unknown point 'layer5_0'; valid points: layer1_0"):
        model.forward_backbone(image, None, "layer5_0")
    with pytest.raises(ModelError, match=r"valid exits: layer1_0:linear, .*final"):
        model.forward_head("layer1_0:fcn_c8_k1_d1", features)
    with pytest.raises(ModelError, match="unknown exit"):
        model.exit_point("nope")


def test_add_exits_keeps_existing_heads_and_updates_spec(model: MESSNet) -> None:
    old_weight = linear_classifier(model, "layer1_0:linear").weight.detach().clone()
    model.add_exits(
        [
            ExitSpec("layer1_0", HeadSpec("linear")),  # already there: kept as trained
            ExitSpec("layer1_0", HeadSpec("fcn", 4, 1, 1)),
            ExitSpec("layer4_0", HeadSpec("aspp_lite", 4)),
        ]
    )
    assert torch.equal(linear_classifier(model, "layer1_0:linear").weight, old_weight)
    assert model.exit_ids[:3] == ["layer1_0:fcn_c4_k1_d1", "layer1_0:linear", "layer1_1:linear"]
    assert model.exit_ids[-2:] == ["layer4_0:linear", FINAL_EXIT]
    assert "layer4_0:aspplite_c4" in model.spec.exit_ids
    assert not model.exit_heads["layer4_0:aspplite_c4"].training, "follows eval mode"
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 32, 32))
    assert logits["layer1_0:fcn_c4_k1_d1"].shape == (1, NUM_CLASSES, 8, 8)


def test_add_exits_follows_dtype_and_rejects_bad_points(model: MESSNet) -> None:
    model.double()
    model.add_exits([ExitSpec("layer2_0", HeadSpec("fcn", 4, 1, 1))])
    assert all(p.dtype == torch.float64 for p in model.exit_parameters("layer2_0:fcn_c4_k1_d1"))
    before = list(model.exit_ids)
    with pytest.raises(ModelError, match="carries the final head"):
        model.add_exits(
            [
                ExitSpec("layer1_1", HeadSpec("fcn", 4, 1, 1)),
                ExitSpec("layer4_1", HeadSpec("linear")),
            ]
        )
    with pytest.raises(ModelError, match=r"not a block of this backbone\); candidate points"):
        model.add_exits([ExitSpec("layer9_0", HeadSpec("linear"))])
    assert model.exit_ids == before, "nothing is added when one exit is invalid"


def test_keep_exits_prunes_a_copy(model: MESSNet, image: torch.Tensor) -> None:
    kept = ["layer3_0:aspplite_c8", "layer1_1:linear", FINAL_EXIT]
    pruned = model.keep_exits(kept)
    assert pruned.exit_ids == ["layer1_1:linear", "layer3_0:aspplite_c8", FINAL_EXIT]
    assert pruned.spec.exit_ids == ["layer1_1:linear", "layer3_0:aspplite_c8"]
    assert sorted(pruned.exit_heads.keys()) == ["layer1_1:linear", "layer3_0:aspplite_c8"]
    assert len(model.exit_ids) == 10, "the original keeps all its exits"
    with torch.no_grad():
        full, small = model(image), pruned(image)
    for exit_id in pruned.exit_ids:
        assert torch.equal(full[exit_id], small[exit_id])
    assert list(model.keep_exits([]).exit_ids) == [FINAL_EXIT]
    with pytest.raises(ModelError, match="cannot keep unknown exits layer2_0:fcn"):
        model.keep_exits(["layer2_0:fcn_c8_k1_d1"])


def test_parameter_groups_partition_the_model(model: MESSNet) -> None:
    groups = [list(model.backbone_parameters()), list(model.final_parameters())]
    groups += [list(model.exit_parameters(e)) for e in model.exit_ids if e != FINAL_EXIT]
    ids = [id(p) for group in groups for p in group]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    assert [id(p) for p in model.exit_parameters(FINAL_EXIT)] == [id(p) for p in groups[1]]


@pytest.mark.parametrize("output_stride", [8, 32])
def test_other_backbones_and_strides(output_stride: int) -> None:
    model = trained_like(MESSNet(tiny_spec("resnet50", output_stride)))
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 31, 47))
    assert logits[FINAL_EXIT].shape[-2:] == ((4, 6) if output_stride == 8 else (1, 2))
    assert model.exit_stride(FINAL_EXIT) == output_stride
    assert len(model.points) == 15


def test_exit_spec_id_round_trip() -> None:
    exit_spec = ExitSpec("layer2_1", HeadSpec("fcn", 64, 2, 1))
    assert exit_spec.id == "layer2_1:fcn_c64_k2_d1"
    assert ExitSpec.parse(exit_spec.id) == exit_spec
    assert ExitSpec.from_dict(exit_spec.to_dict()) == exit_spec


@pytest.mark.parametrize(
    ("exit_id", "message"),
    [
        ("layer1_0", "expected '<point>:<head>'"),
        (FINAL_EXIT, "is the final exit"),
        (":linear", "exit point must be a non-empty string"),
        ("layer 1:linear", "bad exit point"),
        ("layer1_0:bogus", "bad exit head name 'bogus'"),
    ],
)
def test_bad_exit_ids(exit_id: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        ExitSpec.parse(exit_id)


def test_model_spec_round_trips_through_json(spec: ModelSpec) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    assert ModelSpec.from_dict(data) == spec
    assert ModelSpec.from_dict({k: v for k, v in data.items() if k != "exits"}).exits == ()
    by_name = {**data, "final_head": "deeplabv3_c16", "exits": [e.id for e in spec.exits]}
    assert ModelSpec.from_dict(by_name) == spec


def test_model_spec_validation() -> None:
    backbone, head = BackboneSpec("resnet10", 8), HeadSpec("linear")
    exit_spec = ExitSpec("layer1_0", head)
    with pytest.raises(ModelError, match="appears twice"):
        ModelSpec(backbone, 3, head, (exit_spec, exit_spec))
    with pytest.raises(ModelError, match="num_classes must be >= 2"):
        ModelSpec(backbone, 1, head)
    with pytest.raises(ModelError, match="missing final_head"):
        ModelSpec.from_dict({"backbone": backbone.to_dict(), "num_classes": 3})
    with pytest.raises(ModelError, match="carries the final head"):
        MESSNet(ModelSpec(backbone, 3, head, (ExitSpec("layer4_0", head),)))
    listed = ModelSpec(backbone, 3, head, [exit_spec])  # type: ignore[arg-type]
    assert listed.exits == (exit_spec,)
