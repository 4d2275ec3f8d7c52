"""A torchvision network through mess_convert, mess_profile and mess_configure, served by the node.

The whole "bring your own network" path with the real tools and a real node
over DDS: the converted run must be accepted by the deployment tools as it
is, and the node's final-exit masks must be the source network's, pixel for
pixel, on every test image.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from rclpy.parameter import Parameter

from mess_ros.config import parameter_file
from mess_ros.data.datasets import DatasetSpec, build_dataset
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.data.transforms import normalize_image
from mess_ros.deploy.cli import configure_main, profile_main
from mess_ros.ros.conversions import array_to_image, image_to_array
from mess_ros.train.cli import convert_main
from mess_ros.train.config import preset
from tests.ros.conftest import NodeUnderTest, run_node, write_params
from tests.torchvision_reference import small_deeplabv3

pytestmark = [pytest.mark.ros, pytest.mark.slow]

INPUT_HW = (64, 128)
TEST_IMAGES = DatasetSpec(kind="synthetic", split="test", num_images=4, height=64, width=128)
SEED = 7


def reference_mask(network: torch.nn.Module, rgb: np.ndarray) -> np.ndarray:
    """The source network's own prediction: torchvision upsamples its logits to the input."""
    x = torch.from_numpy(normalize_image(rgb, INPUT_HW))[None]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the node computes
    try:
        with torch.no_grad():
            out = network(x)["out"]
    finally:
        torch.set_num_threads(threads)
    mask: np.ndarray = out.argmax(dim=1)[0].numpy().astype(np.uint8)
    return mask


@pytest.fixture(scope="module")
def robot_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The robot parameter file mess_configure writes for the converted network."""
    root = tmp_path_factory.mktemp("byon")
    source = root / "deeplabv3.pth"
    torch.save(small_deeplabv3(SYNTHETIC_LABELS.num_classes, SEED).state_dict(), source)

    base = preset("tiny")
    base.dataset = dataclasses.replace(base.dataset, num_images=4, height=64, width=128)
    base.val_dataset = dataclasses.replace(base.val_dataset, num_images=4, height=64, width=128)
    base.head_pool = ["linear"]
    base.to_yaml(root / "data.yaml")
    run = root / "run"
    convert = [str(source), "--config", str(root / "data.yaml"), "--out", str(run)]
    options = ["--input-hw", "64", "128", "--output-stride", "32", "--stage2-steps", "2"]
    assert convert_main([*convert, *options, "--batch-size", "2", "--no-progress"]) == 0

    table = root / "table.json"
    size = f"{INPUT_HW[0]}x{INPUT_HW[1]}"
    profile = ["--model", str(run / "checkpoint.pt"), "--input-size", size, "--out", str(table)]
    assert profile_main([*profile, "--warmup", "1", "--repeats", "3", "--no-progress"]) == 0

    # Only what the node's start-up costs comes from the base file; mess_configure writes the rest.
    startup = write_params(root / "base.yaml", run / "checkpoint.pt")
    configure = ["--run", str(run), "--latency-table", str(table), "--budget-ms", "100000"]
    outputs = ["--robot", "converted", "--out-dir", str(root / "robots"), "--no-progress"]
    assert configure_main([*configure, *outputs, "--base-params", str(startup)]) == 0
    return root / "robots" / "converted.yaml"


@pytest.fixture(scope="module")
def serving(
    tmp_path_factory: pytest.TempPathFactory, robot_params: Path
) -> Iterator[NodeUnderTest]:
    probe = array_to_image(build_dataset(TEST_IMAGES)[0].image, "rgb8")
    yield from run_node(tmp_path_factory.mktemp("node"), robot_params, probe)


def test_node_serves_the_configured_exits_and_the_source_networks_final_masks(
    robot_params: Path, serving: NodeUnderTest
) -> None:
    params = parameter_file.read(robot_params)
    assert params.engine.model_path.endswith("converted.pt")
    client = serving.client
    images = build_dataset(TEST_IMAGES)
    for index in range(len(images)):
        _, info = client.segment(array_to_image(images[index].image, "rgb8"))
        assert info["exit_id"] in params.policy.active_exits

    (result,) = client.set_parameters([Parameter("policy.name", value="final")])
    assert result.successful, result.reason
    source = small_deeplabv3(SYNTHETIC_LABELS.num_classes, SEED)
    for index in range(len(images)):
        rgb = images[index].image
        mask, info = client.segment(array_to_image(rgb, "rgb8"))
        assert info["exit_id"] == "final"
        expected = reference_mask(source, rgb)
        assert len(np.unique(expected)) > 1, "a constant mask would prove little"
        np.testing.assert_array_equal(image_to_array(mask), expected)
