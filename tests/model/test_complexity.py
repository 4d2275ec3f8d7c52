"""MACs and parameters per segment and per head, checked against hand counts."""

from __future__ import annotations

import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model import MESSNet, format_complexity, model_complexity
from tests.model.conftest import NUM_CLASSES, ODD_HW


def test_rows_cover_every_block_and_exit(model: MESSNet) -> None:
    rows = model_complexity(model, ODD_HW)
    segments = [r for r in rows if r.kind == "segment"]
    heads = [r for r in rows if r.kind == "head"]
    assert [r.name for r in segments] == model.block_points
    assert [r.name for r in heads] == model.exit_ids
    assert all(r.macs > 0 and r.params > 0 for r in rows)
    backbone_params = sum(p.numel() for p in model.backbone_parameters())
    assert sum(r.params for r in segments) == backbone_params
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())


def test_hand_counted_macs(model: MESSNet) -> None:
    rows = {r.name: r for r in model_complexity(model, ODD_HW)}
    h, w = 9, 17  # 33x65 after the stride-4 stem, rounded up
    channels = 8
    assert rows["layer1_0:linear"].macs == h * w * channels * NUM_CLASSES
    assert rows["layer1_0:linear"].params == channels * NUM_CLASSES + NUM_CLASSES
    # A basic block without downsampling: two 3x3 convs and two batch norms.
    block = 2 * (h * w * channels * channels * 9) + 2 * (h * w * channels)
    assert rows["layer1_1"].macs == block
    stem = 17 * 33 * channels * 3 * 49 + 17 * 33 * channels  # 7x7 conv and its batch norm
    assert rows["layer1_0"].macs == stem + block
    assert rows["layer1_0"].params == rows["layer1_1"].params + 3 * 49 * channels + 2 * channels
    # The final head at stride 16 works on 3x5 features: its classifier alone is 15*16*C.
    assert rows[FINAL_EXIT].macs > 3 * 5 * 16 * NUM_CLASSES


def test_counting_leaves_the_model_untouched(model: MESSNet) -> None:
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model_complexity(model, (32, 32))
    assert model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "batch-norm stats unchanged"
    assert not any(m._forward_hooks for m in model.modules()), "hooks removed"


def test_format_lists_rows_and_totals(model: MESSNet) -> None:
    rows = model_complexity(model, ODD_HW)
    table = format_complexity(rows).splitlines()
    assert "GMACs" in table[0] and "M params" in table[0]
    assert len(table) == len(rows) + 5
    assert table[2].split()[:2] == ["segment", "layer1_0"]
    backbone_total = next(line for line in table if "backbone total" in line)
    params_m = sum(r.params for r in rows if r.kind == "segment") / 1e6
    assert float(backbone_total.split()[-1]) == round(params_m, 4)
