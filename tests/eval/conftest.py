"""Shared fixtures of the evaluation tests: a tiny model, its configuration and a small bag.

Everything is small (48x64 frames, a base-width-8 ResNet-10 run at 32x64,
one thread) so the whole suite stays well within two minutes on one core.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mess_ros.config import SegmentationConfig
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.data.sample import Sample
from mess_ros.eval.bag_writer import BagWriteOptions, write_bag
from mess_ros.model import BackboneSpec, ExitSpec, HeadSpec, MESSNet, ModelSpec, save_checkpoint
from tests.eval.builders import RATE_HZ, synthetic_samples


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    return synthetic_samples()


@pytest.fixture(scope="session")
def checkpoint_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ResNet-10 (base width 8) with linear exits after its first two blocks.

    Batch-norm statistics are moved off their initial values with one pass
    in training mode, as training would, so the exits disagree.
    """
    torch.manual_seed(0)
    backbone = BackboneSpec("resnet10", 8, 16)
    probe = MESSNet(ModelSpec(backbone, SYNTHETIC_LABELS.num_classes, HeadSpec("linear")))
    exits = tuple(ExitSpec(point, HeadSpec("linear")) for point in probe.points[:2])
    model = MESSNet(ModelSpec(backbone, SYNTHETIC_LABELS.num_classes, HeadSpec("linear"), exits))
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 64))
    model.eval()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model, SYNTHETIC_LABELS.to_dict(), {"preset": "eval-tests"})
    return path


@pytest.fixture
def base_config(checkpoint_path: Path) -> SegmentationConfig:
    """Engine settings for the tiny model: small input, one thread, a short self-profile."""
    return SegmentationConfig.from_parameters(
        {
            "engine.model_path": str(checkpoint_path),
            "engine.input_height": 32,
            "engine.input_width": 64,
            "engine.num_threads": 1,
            "engine.warmup_frames": 1,
            "engine.profile_repeats": 2,
            "policy.name": "final",
        }
    )


@pytest.fixture(scope="session")
def small_bag(tmp_path_factory: pytest.TempPathFactory, samples: list[Sample]) -> Path:
    """Eight labelled synthetic frames at 20 Hz in one .mcap file."""
    path = tmp_path_factory.mktemp("bags") / "small.mcap"
    write_bag(path, samples, BagWriteOptions(rate_hz=RATE_HZ))
    return path
