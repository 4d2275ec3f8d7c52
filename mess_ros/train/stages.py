"""What each training stage trains, with which losses; and the model surgery between stages.

A mode (``two_stage``, ``single_exit``, ``naive_joint``) becomes a list of
:class:`StagePlan`. The training loop itself is the same for every stage and
mode: the plan alone says which exits must exist, which parameters learn,
which exits learn from labels (and how much) and which from the final exit.

* ``two_stage`` (the method): stage 1 trains backbone + final head + a light
  head at every candidate point end to end, the final exit weighted most,
  which makes early features linearly separable ("exit-aware" backbone).
  Stage 2 freezes backbone and final head and trains the whole head pool at
  every candidate point with cross-entropy plus positive-filtering
  distillation from the final exit. Freezing is what guarantees that adding
  exits never costs final-exit accuracy.
* ``single_exit`` (baseline): the plain segmentation network, final head only.
* ``naive_joint`` (baseline): the whole pool trained jointly with the backbone
  end to end, every exit weighted equally, no distillation.
* ``convert``: stage 2 alone, on the backbone and final head of an existing
  network (:mod:`mess_ros.train.convert`).

All three train the backbone for the same ``stage1_steps``: the comparison is
between ways of training one backbone, not between training budgets. Stage 2
adds head-only steps on the frozen backbone (no backward pass through it);
a naive joint step back-propagates through the backbone and the whole pool,
so the naive run still costs more compute than the two-stage one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from torch import nn

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.errors import MessError
from mess_ros.model.heads import HeadSpec
from mess_ros.model.importing import import_backbone
from mess_ros.model.messnet import ExitSpec, MESSNet, ModelSpec
from mess_ros.train.config import CONVERT_MODE, TrainConfig
from mess_ros.train.errors import TrainError


@dataclass(frozen=True)
class StagePlan:
    """One stage of training.

    ``exits`` are the intermediate exits the model must carry during the
    stage (heads missing from the model are added, others removed);
    ``ce_weights`` and ``distill_weights`` map exit ids to loss weights.
    """

    name: str
    steps: int
    lr: float
    exits: tuple[ExitSpec, ...]
    ce_weights: dict[str, float]
    distill_weights: dict[str, float] = field(default_factory=dict)
    frozen_backbone: bool = False


def build_model(config: TrainConfig, num_classes: int) -> MESSNet:
    """The network before any stage: backbone and final head, no intermediate exit yet.

    The backbone starts from ``config.backbone_weights`` when given, else
    from random weights.
    """
    spec = ModelSpec(
        backbone=config.backbone,
        num_classes=num_classes,
        final_head=HeadSpec.parse(config.final_head),
        exits=(),
    )
    model = MESSNet(spec)
    if config.backbone_weights:
        try:
            state = import_backbone(config.backbone_weights, config.backbone)
        except MessError as err:
            raise TrainError(f"backbone_weights: {err}") from err
        model.backbone.load_state_dict({k.removeprefix("backbone."): v for k, v in state.items()})
    return model


def plan_stages(config: TrainConfig, points: Sequence[str]) -> list[StagePlan]:
    """The stages of ``config.mode`` for a backbone whose candidate points are ``points``."""
    pool = [ExitSpec(point, HeadSpec.parse(name)) for point in points for name in config.head_pool]
    if config.mode == CONVERT_MODE:
        return [_stage2_plan(config, pool)]
    if config.mode == "single_exit":
        return [StagePlan("single_exit", config.stage1_steps, config.lr, (), {FINAL_EXIT: 1.0})]
    if config.mode == "naive_joint":
        weights = {exit_spec.id: 1.0 for exit_spec in pool} | {FINAL_EXIT: 1.0}
        return [StagePlan("naive_joint", config.stage1_steps, config.lr, tuple(pool), weights)]

    light = HeadSpec.parse(config.stage1_head)
    stage1_exits = tuple(ExitSpec(point, light) for point in points)
    first, last = config.exit_loss_weights
    depth_weights = _linear_ramp(first, last, len(points))
    ce1 = {exit_spec.id: w for exit_spec, w in zip(stage1_exits, depth_weights, strict=True)}
    plans = [
        StagePlan("stage1", config.stage1_steps, config.lr, stage1_exits, ce1 | {FINAL_EXIT: 1.0})
    ]
    if config.stage2_steps > 0:
        plans.append(_stage2_plan(config, pool))
    return plans


def _stage2_plan(config: TrainConfig, pool: Sequence[ExitSpec]) -> StagePlan:
    """The head pool on the frozen backbone, taught by labels and the final exit."""
    distill = (
        {exit_spec.id: config.distill_weight for exit_spec in pool}
        if config.distill_weight > 0
        else {}
    )
    return StagePlan(
        name="stage2",
        steps=config.stage2_steps,
        lr=config.stage2_lr,
        exits=tuple(pool),
        ce_weights={exit_spec.id: 1.0 for exit_spec in pool},
        distill_weights=distill,
        frozen_backbone=True,
    )


def _linear_ramp(first: float, last: float, count: int) -> list[float]:
    if count == 1:
        return [last]
    return [first + (last - first) * i / (count - 1) for i in range(count)]


def prepare_model(model: MESSNet, plan: StagePlan) -> MESSNet:
    """Give the model exactly the plan's intermediate exits, keeping trained heads it shares.

    A stage-1 head whose architecture is also in the pool carries its
    weights into stage 2 (a warm start); others are dropped so the final
    checkpoint holds only the candidate exits the search may choose from.
    """
    wanted = {exit_spec.id for exit_spec in plan.exits}
    present = set(model.exit_ids) - {FINAL_EXIT}
    if present - wanted:
        model = model.keep_exits(sorted(present & wanted))
    missing = [exit_spec for exit_spec in plan.exits if exit_spec.id not in present]
    if missing:
        model.add_exits(missing)
    return model


def trainable_parameters(model: MESSNet, plan: StagePlan) -> list[nn.Parameter]:
    """Switch ``requires_grad`` for the stage and return the parameters that learn.

    In a frozen-backbone stage only the intermediate heads learn; the
    backbone and final head get ``requires_grad=False`` so autograd builds no
    graph through them (stage 2 then costs one no-grad backbone pass).
    """
    for parameter in model.parameters():
        parameter.requires_grad_(not plan.frozen_backbone)
    if not plan.frozen_backbone:
        return list(model.parameters())
    learning: list[nn.Parameter] = []
    for exit_spec in plan.exits:
        for parameter in model.exit_parameters(exit_spec.id):
            parameter.requires_grad_(True)
            learning.append(parameter)
    return learning


def set_train_mode(model: MESSNet, plan: StagePlan) -> None:
    """Training mode for what learns, eval mode for what is frozen.

    Frozen batch-norm layers must stay in eval mode: in train mode they would
    keep updating their running statistics (and normalise with batch
    statistics), silently changing the "frozen" backbone and the teacher.
    """
    if not plan.frozen_backbone:
        model.train()
        return
    model.eval()
    for exit_spec in plan.exits:
        model.exit_heads[exit_spec.id].train()
