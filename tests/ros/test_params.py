"""Parameter declaration from SegmentationConfig on a real (in-process) rclpy node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from mess_ros.ros.errors import NodeStartupError
from mess_ros.ros.params import declare_parameters, parameter_descriptor
from mess_ros.runtime.config import SegmentationConfig
from tests.ros.conftest import next_domain_id

SPECS = SegmentationConfig.parameter_specs()


@pytest.fixture
def context() -> Iterator[Context]:
    context = Context()
    rclpy.init(
        context=context, domain_id=next_domain_id(), signal_handler_options=SignalHandlerOptions.NO
    )
    yield context
    rclpy.try_shutdown(context=context)


def make_node(context: Context, params_file: Path | None = None) -> Node:
    cli_args = ["--ros-args", "--params-file", str(params_file)] if params_file else None
    return Node("segmentation_node", context=context, cli_args=cli_args)


def test_declared_defaults_equal_the_config(context: Context) -> None:
    node = make_node(context)
    try:
        values = declare_parameters(node, SPECS)
        assert SegmentationConfig.from_parameters(values) == SegmentationConfig()
        assert node.get_parameter("policy.active_exits").type_ == Parameter.Type.STRING_ARRAY
        described = node.describe_parameter("engine.model_path")
        assert described.read_only
        assert described.description.startswith("Checkpoint file")
        threshold = node.describe_parameter("policy.pixel_threshold")
        assert threshold.floating_point_range[0].to_value == 1.0
        # rclpy enforces the descriptor: range and read-only.
        results = node.set_parameters(
            [Parameter("policy.pixel_threshold", value=1.5), Parameter("engine.device", value="x")]
        )
        assert not any(r.successful for r in results)
    finally:
        node.destroy_node()


def test_file_values_and_empty_lists(context: Context, tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        '"/**":\n  ros__parameters:\n    policy:\n      active_exits: []\n'
        "      image_thresholds: [0.5, 0.7]\n    deadline:\n      deadline_ms: 40.0\n"
    )
    node = make_node(context, path)
    try:
        values = declare_parameters(node, SPECS)
        assert values["policy.active_exits"] == []
        assert values["policy.image_thresholds"] == [0.5, 0.7]
        assert values["deadline.deadline_ms"] == 40.0
        # The untyped [] became a typed empty string array that accepts exit ids later.
        results = node.set_parameters([Parameter("policy.active_exits", value=["final"])])
        assert results[0].successful
    finally:
        node.destroy_node()


def test_integer_for_a_double_names_the_fix(context: Context, tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text('"/**":\n  ros__parameters:\n    deadline:\n      deadline_ms: 50\n')
    node = make_node(context, path)
    try:
        with pytest.raises(NodeStartupError, match=r"deadline\.deadline_ms.*50\.0"):
            declare_parameters(node, SPECS)
    finally:
        node.destroy_node()


def test_descriptor_ranges_only_on_scalars() -> None:
    by_name = {spec.name: spec for spec in SPECS}
    assert parameter_descriptor(by_name["engine.input_height"]).integer_range[0].to_value == 4096
    thresholds = parameter_descriptor(by_name["policy.image_thresholds"])
    assert not thresholds.floating_point_range
    assert "0, 1" in thresholds.additional_constraints
    assert "hybrid" in parameter_descriptor(by_name["policy.name"]).additional_constraints
