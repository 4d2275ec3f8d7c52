"""Stage plans per mode, model surgery between stages, and what learns in each stage."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.train.config import TrainConfig
from mess_ros.train.stages import (
    build_model,
    plan_stages,
    prepare_model,
    set_train_mode,
    trainable_parameters,
)

POINTS = ["layer1_0", "layer2_0", "layer3_0"]


def test_two_stage_plan(tiny: TrainConfig) -> None:
    stage1, stage2 = plan_stages(tiny, POINTS)
    assert [e.id for e in stage1.exits] == [f"{p}:linear" for p in POINTS]
    low, high = tiny.exit_loss_weights
    assert stage1.ce_weights == {
        "layer1_0:linear": pytest.approx(low),
        "layer2_0:linear": pytest.approx((low + high) / 2),
        "layer3_0:linear": pytest.approx(high),
        FINAL_EXIT: 1.0,
    }
    assert max(stage1.ce_weights, key=stage1.ce_weights.__getitem__) == FINAL_EXIT
    assert not stage1.distill_weights and not stage1.frozen_backbone

    pool = {f"{p}:{h}" for p in POINTS for h in tiny.head_pool}
    assert stage2.frozen_backbone and stage2.steps == tiny.stage2_steps
    assert set(stage2.ce_weights) == pool  # the frozen final exit is the teacher, not a student
    assert set(stage2.distill_weights) == pool


def test_baseline_plans(tiny: TrainConfig) -> None:
    tiny.mode = "single_exit"
    (single,) = plan_stages(tiny, POINTS)
    assert single.exits == () and single.ce_weights == {FINAL_EXIT: 1.0}

    tiny.mode = "naive_joint"
    (joint,) = plan_stages(tiny, POINTS)
    assert len(joint.exits) == len(POINTS) * len(tiny.head_pool)
    assert set(joint.ce_weights.values()) == {1.0} and FINAL_EXIT in joint.ce_weights
    assert not joint.distill_weights and not joint.frozen_backbone
    assert joint.steps == tiny.stage1_steps  # the same backbone steps as the other modes


def test_no_distillation_when_its_weight_is_zero(tiny: TrainConfig) -> None:
    tiny.distill_weight = 0.0
    assert plan_stages(tiny, POINTS)[1].distill_weights == {}
    tiny.stage2_steps = 0
    assert [plan.name for plan in plan_stages(tiny, POINTS)] == ["stage1"]


def test_stage_surgery_keeps_shared_heads_and_drops_others(tiny: TrainConfig) -> None:
    tiny.head_pool = ["fcn_c8_k1_d1", "linear"]
    torch.manual_seed(0)
    model = build_model(tiny, num_classes=5)
    stage1, stage2 = plan_stages(tiny, model.points)
    model = prepare_model(model, stage1)
    assert model.exit_ids == [*(f"{p}:linear" for p in model.points), FINAL_EXIT]
    linear_weight = model.exit_heads["layer2_0:linear"].state_dict()
    model = prepare_model(model, stage2)
    assert len(model.exit_ids) == 2 * len(model.points) + 1
    kept = model.exit_heads["layer2_0:linear"].state_dict()
    assert all(torch.equal(kept[k], v) for k, v in linear_weight.items())

    tiny.head_pool = ["fcn_c8_k1_d1"]
    model = prepare_model(model, plan_stages(tiny, model.points)[1])
    assert all(":fcn_c8_k1_d1" in e for e in model.exit_ids[:-1])


def test_frozen_stage_trains_heads_only_with_frozen_batchnorm(tiny: TrainConfig) -> None:
    model = build_model(tiny, num_classes=5)
    stage1, stage2 = plan_stages(tiny, model.points)
    model = prepare_model(model, stage2)

    learning = trainable_parameters(model, stage2)
    head_params = {id(p) for e in model.exit_ids[:-1] for p in model.exit_parameters(e)}
    assert {id(p) for p in learning} == head_params
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert not any(p.requires_grad for p in model.final_parameters())

    set_train_mode(model, stage2)
    assert not model.backbone.training and not model.final_head.training
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert all(model.exit_heads[e].training for e in model.exit_ids[:-1])
    assert all(m.training for e in model.exit_ids[:-1] for m in model.exit_heads[e].modules())

    # Back to end-to-end training: everything learns again.
    assert len(trainable_parameters(model, stage1)) == len(list(model.parameters()))
    set_train_mode(model, stage1)
    assert all(m.training for m in model.modules())
