"""Configurations and records shared by the training tests."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mess_ros.train.config import TrainConfig, preset

STAGE1_STEPS = 10
STAGE2_STEPS = 6


def tiny_config(**changes: Any) -> TrainConfig:
    """The tiny preset on a fixed batch (4 images, no augmentation) so losses must fall."""
    base = preset("tiny")
    config = dataclasses.replace(
        base,
        dataset=dataclasses.replace(base.dataset, num_images=4),
        augment=False,
        batch_size=4,
        stage1_steps=STAGE1_STEPS,
        stage2_steps=STAGE2_STEPS,
        eval_every=5,
        checkpoint_every=3,
    )
    return dataclasses.replace(config, **changes)


@dataclass
class Runs:
    """The same config trained three ways; all must end with identical weights."""

    config: TrainConfig
    straight: Path  # uninterrupted, through train()
    paused_at_stage_end: Path  # through the CLI: --max-steps at the end of stage 1, --resume
    paused_mid_stage: Path  # through train(): max_steps inside stage 1, resume=True
    stage1_state: dict[str, Any]  # train_state.pt of the run paused at the end of stage 1
