"""Tiny training runs shared by the training tests (each costs a few seconds on one core)."""

from __future__ import annotations

import pytest
import torch

from mess_ros.data.datasets import DatasetSpec
from mess_ros.train.cli import main
from mess_ros.train.config import TrainConfig, preset
from mess_ros.train.trainer import train
from tests.train.helpers import STAGE1_STEPS, Runs, tiny_config


@pytest.fixture
def tiny() -> TrainConfig:
    return tiny_config()


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("runs")
    config = tiny_config()
    config_path = root / "tiny.yaml"
    config.to_yaml(config_path)

    straight = root / "straight"
    train(config, straight, progress=False)

    at_stage_end = root / "at_stage_end"
    common = ["--config", str(config_path), "--out", str(at_stage_end), "--no-progress"]
    assert main([*common, "--max-steps", str(STAGE1_STEPS)]) == 0
    stage1_state = torch.load(at_stage_end / "train_state.pt", weights_only=True)
    assert main(["--out", str(at_stage_end), "--resume", "--no-progress"]) == 0

    mid_stage = root / "mid_stage"
    paused = train(config, mid_stage, progress=False, max_steps=4)
    assert not paused.finished and paused.metrics is None
    assert not (mid_stage / "checkpoint.pt").exists()
    assert train(config, mid_stage, resume=True, progress=False).finished
    return Runs(config, straight, at_stage_end, mid_stage, stage1_state)


@pytest.fixture
def synthetic_val() -> DatasetSpec:
    return preset("tiny").val_dataset
