"""End-to-end tiny training runs: losses fall, stage 2 freezes, resume is exact, outputs agree."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
from pathlib import Path

import pytest
import torch

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model.checkpoint import load_checkpoint
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.config import load_config
from mess_ros.train.errors import TrainError
from mess_ros.train.losses import cross_entropy
from mess_ros.train.stages import plan_stages
from mess_ros.train.trainer import learning_rate, stage_loss, train
from tests.train.helpers import STAGE1_STEPS, STAGE2_STEPS, Runs, tiny_config


def log_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "train_log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def stage_losses(run_dir: Path, stage: str) -> list[float]:
    return [float(row["loss"]) for row in log_rows(run_dir) if row["stage"] == stage]


def test_both_stages_lower_their_loss(runs: Runs) -> None:
    for stage, steps in (("stage1", STAGE1_STEPS), ("stage2", STAGE2_STEPS)):
        losses = stage_losses(runs.straight, stage)
        assert len(losses) == steps
        first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
        assert last < 0.95 * first, f"{stage} loss did not fall: {losses}"


def test_stage2_distills_and_stage1_does_not(runs: Runs) -> None:
    rows = log_rows(runs.straight)
    assert all(float(row["distill_loss"]) == 0.0 for row in rows if row["stage"] == "stage1")
    assert all(float(row["distill_loss"]) > 0.0 for row in rows if row["stage"] == "stage2")


def test_stage2_leaves_backbone_and_final_head_untouched(runs: Runs) -> None:
    after_stage1 = runs.stage1_state["model"]
    assert runs.stage1_state["stage_name"] == "stage1"
    assert runs.stage1_state["step"] == STAGE1_STEPS
    final = load_checkpoint(runs.paused_at_stage_end / "checkpoint.pt").model.state_dict()
    frozen = [k for k in final if k.startswith(("backbone.", "final_head."))]
    assert any("running_mean" in k for k in frozen)  # batch-norm statistics are checked too
    for key in frozen:
        assert torch.equal(final[key], after_stage1[key]), f"{key} changed in stage 2"
    # The stage-1 linear heads belong to the pool: stage 2 kept training them.
    linear = [k for k in final if k.startswith("exit_heads.") and ":linear." in k]
    assert linear
    assert any(not torch.equal(final[k], after_stage1[k]) for k in linear)


def test_checkpoint_holds_the_whole_head_pool(runs: Runs) -> None:
    checkpoint = load_checkpoint(runs.straight / "checkpoint.pt")
    model = checkpoint.model
    expected = {f"{p}:{h}" for p in model.points for h in runs.config.head_pool}
    assert set(model.exit_ids) == expected | {FINAL_EXIT}
    assert checkpoint.train_config == runs.config.to_dict()
    assert checkpoint.labels["name"] == "synthetic"


def test_resumed_runs_equal_the_uninterrupted_run(runs: Runs) -> None:
    reference = load_checkpoint(runs.straight / "checkpoint.pt").model.state_dict()
    for run_dir in (runs.paused_at_stage_end, runs.paused_mid_stage):
        resumed = load_checkpoint(run_dir / "checkpoint.pt").model.state_dict()
        assert resumed.keys() == reference.keys()
        for key, value in reference.items():
            assert torch.equal(resumed[key], value), f"{run_dir.name}: {key} differs"


def test_resumed_log_has_one_row_per_step(runs: Runs) -> None:
    for run_dir in (runs.straight, runs.paused_at_stage_end, runs.paused_mid_stage):
        rows = log_rows(run_dir)
        steps = [(row["stage"], int(row["step"])) for row in rows]
        expected = [("stage1", s) for s in range(1, STAGE1_STEPS + 1)]
        expected += [("stage2", s) for s in range(1, STAGE2_STEPS + 1)]
        assert steps == expected
        assert rows[-1]["val_miou_final"] != ""


def test_run_directory_files_agree(runs: Runs) -> None:
    run_dir = runs.straight
    assert load_config(run_dir / "config.yaml") == runs.config
    metrics = json.loads((run_dir / "metrics.json").read_text())
    cache = CalibrationCache.load(run_dir / "calibration.npz")
    checkpoint = load_checkpoint(run_dir / "checkpoint.pt")
    assert cache.checkpoint_fingerprint == checkpoint.fingerprint
    assert cache.exit_ids == checkpoint.model.exit_ids
    assert checkpoint.metrics == metrics
    assert metrics["training"]["mode"] == "two_stage"
    for exit_id in cache.exit_ids:
        assert metrics["exits"][exit_id]["miou"] == pytest.approx(
            cache.exit_miou(exit_id), abs=1e-6
        )
        per_level = metrics["exits"][exit_id]["miou_per_difficulty"]
        assert set(per_level) <= {"easy", "medium", "hard"} and per_level


def test_an_existing_run_is_not_overwritten(runs: Runs) -> None:
    with pytest.raises(TrainError, match="already holds a run"):
        train(runs.config, runs.straight, progress=False)


def test_resume_refuses_a_different_config(runs: Runs) -> None:
    changed = dataclasses.replace(runs.config, lr=runs.config.lr * 2, seed=7)
    with pytest.raises(TrainError, match=r"different settings \(lr, seed\)"):
        train(changed, runs.paused_mid_stage, resume=True, progress=False)


@pytest.mark.parametrize("mode", ["single_exit", "naive_joint"])
def test_baselines_train_their_exits(tmp_path: Path, mode: str) -> None:
    config = tiny_config(mode=mode, stage1_steps=3, stage2_steps=2, val_images=2)
    result = train(config, tmp_path / mode, progress=False)
    model = result.model
    if mode == "single_exit":
        assert model.exit_ids == [FINAL_EXIT]
    else:
        assert len(model.exit_ids) == len(model.points) * len(config.head_pool) + 1
    rows = log_rows(tmp_path / mode)
    # The backbone trains for stage1_steps in every mode.
    assert [row["stage"] for row in rows] == [mode] * config.stage1_steps
    assert all(float(row["distill_loss"]) == 0.0 for row in rows)
    assert result.metrics is not None and set(result.metrics["exits"]) == set(model.exit_ids)


def test_learning_rate_warms_up_then_decays_to_near_zero() -> None:
    rates = [learning_rate(step, 100, 1.0, 10) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(rates[9:]))
    assert 0.0 < rates[-1] < 0.05


def test_loss_stride_subsamples_labels_at_cell_centres() -> None:
    config = tiny_config(loss_stride=2, mode="single_exit")
    (plan,) = plan_stages(config, [])
    torch.manual_seed(4)
    logits = {FINAL_EXIT: torch.randn(2, 3, 4, 8)}
    masks = torch.randint(0, 3, (2, 16, 32))
    loss, ce, distill = stage_loss(logits, masks, plan, config)
    expected = cross_entropy(logits[FINAL_EXIT], masks[:, 1::2, 1::2])
    assert torch.allclose(loss, expected) and torch.allclose(ce, expected)
    assert distill.item() == 0.0
    full, _, _ = stage_loss(logits, masks, plan, tiny_config(mode="single_exit"))
    assert not torch.allclose(full, expected)
