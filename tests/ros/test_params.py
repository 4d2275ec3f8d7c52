"""Parameter declaration from SegmentationConfig on a real (in-process) rclpy node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import rclpy
import yaml
from rcl_interfaces.msg import SetParametersResult
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from mess_ros.config import SegmentationConfig
from mess_ros.ros.core import SegmentationCore
from mess_ros.ros.errors import NodeStartupError
from mess_ros.ros.params import (
    anchor_to_sources,
    declare_parameters,
    parameter_descriptor,
    parameter_files,
    parameter_sources,
)
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
        # A read-only array gets its (empty) default and its type all the same.
        cameras = node.get_parameter("cameras.names")
        assert cameras.type_ == Parameter.Type.STRING_ARRAY and list(cameras.value) == []
        assert node.describe_parameter("cameras.names").read_only
        (refused,) = node.set_parameters([Parameter("cameras.names", value=["front"])])
        assert not refused.successful
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


def test_integers_are_accepted_for_doubles(context: Context, tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(
        '"/**":\n  ros__parameters:\n    deadline:\n      deadline_ms: 50\n'
        "    policy:\n      image_thresholds: [1, 0]\n"
    )
    node = make_node(context, path)
    try:
        values = declare_parameters(node, SPECS)
        assert values["deadline.deadline_ms"] == 50.0
        assert node.get_parameter("deadline.deadline_ms").type_ == Parameter.Type.DOUBLE
        assert values["policy.image_thresholds"] == [1.0, 0.0]
    finally:
        node.destroy_node()


@pytest.mark.parametrize(
    ("content", "expected", "unexpected"),
    [
        (
            "deadline:\n      deadline_ms: fast",
            r"deadline\.deadline_ms has a value of the wrong type",
            "",
        ),
        ("deadline:\n      deadline_ms: -5.0", r"deadline\.deadline_ms is out of range", "decimal"),
        ("deadline:\n      deadline_ms: -5", r"deadline\.deadline_ms is out of range", "decimal"),
    ],
)
def test_wrong_types_and_ranges_are_told_apart(
    context: Context, tmp_path: Path, content: str, expected: str, unexpected: str
) -> None:
    path = tmp_path / "params.yaml"
    path.write_text('"/**":\n  ros__parameters:\n    ' + content + "\n")
    node = make_node(context, path)
    try:
        with pytest.raises(NodeStartupError, match=expected) as info:
            declare_parameters(node, SPECS)
        if unexpected:
            assert unexpected not in str(info.value)
    finally:
        node.destroy_node()


def core_node(context: Context, params_file: Path | None = None) -> tuple[Node, SegmentationCore]:
    """A node with the segmentation core's parameters and callbacks (no model is loaded)."""
    cli_args = ["--ros-args", "--params-file", str(params_file)] if params_file else None
    node = Node(
        "segmentation_node", context=context, cli_args=cli_args, allow_undeclared_parameters=True
    )
    files = [params_file] if params_file else []
    try:
        return node, SegmentationCore(node, files)
    except BaseException:
        node.destroy_node()
        raise


def test_undeclared_keys_stop_the_node_with_the_closest_name(
    context: Context, tmp_path: Path
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(
        '"/**":\n  ros__parameters:\n    policy:\n      pixel_treshold: 0.95\n'
        "segmentation_node:\n  ros__parameters:\n    deadline_ms: 40.0\n"
        "other_node:\n  ros__parameters:\n    anything: 1\n"
    )
    with pytest.raises(NodeStartupError) as info:
        core_node(context, path)
    message = str(info.value)
    assert str(path) in message
    assert "policy.pixel_treshold (did you mean policy.pixel_threshold?)" in message
    assert "deadline_ms (did you mean deadline.deadline_ms?)" in message
    # Keys for other nodes are not this node's business.
    assert "anything" not in message


def test_parameter_sets_are_checked_for_names_and_take_integers(context: Context) -> None:
    node, _ = core_node(context)
    try:
        (result,) = node.set_parameters([Parameter("policy.pixel_treshold", value=0.95)])
        assert not result.successful
        assert "did you mean policy.pixel_threshold?" in result.reason
        assert not node.has_parameter("policy.pixel_treshold")
        # An integer for a double parameter is set as a double (ros2 param set ... 50).
        (result,) = node.set_parameters([Parameter("deadline.deadline_ms", value=50)])
        assert result.successful, result.reason
        assert node.get_parameter("deadline.deadline_ms").value == 50.0
        assert node.get_parameter("deadline.deadline_ms").type_ == Parameter.Type.DOUBLE
        # Out of range stays refused, by rclpy's range check, without a hint about decimals.
        (result,) = node.set_parameters([Parameter("deadline.deadline_ms", value=-5)])
        assert not result.successful
        assert "decimal" not in result.reason
        # A bad exit id for the fixed exit is refused whatever the policy.
        (result,) = node.set_parameters([Parameter("policy.fixed_exit", value="nope")])
        assert not result.successful
        assert "policy.fixed_exit" in result.reason
    finally:
        node.destroy_node()


def test_changes_apply_only_once_committed(context: Context) -> None:
    """Validated in on-set, applied in post-set: a change refused after ours is never applied."""
    node, core = core_node(context)
    try:
        (result,) = node.set_parameters([Parameter("deadline.deadline_ms", value=40.0)])
        assert result.successful, result.reason
        assert core.config.deadline.deadline_ms == 40.0
        running = core.config
        node.add_on_set_parameters_callback(
            lambda _: SetParametersResult(successful=False, reason="refused by a later check")
        )
        (result,) = node.set_parameters([Parameter("deadline.deadline_ms", value=60.0)])
        assert not result.successful and result.reason == "refused by a later check"
        assert core.config is running
        assert node.get_parameter("deadline.deadline_ms").value == 40.0
    finally:
        node.destroy_node()


def test_parameter_files_of_a_command_line() -> None:
    args = ["node", "--lifecycle", "--ros-args", "-p", "a:=1", "--params-file", "one.yaml"]
    args += ["--", "--params-file", "not_ros.yaml", "--ros-args", "--params-file", "two.yaml"]
    assert parameter_files(args) == [Path("one.yaml"), Path("two.yaml")]


def test_artefacts_resolve_beside_the_file_that_names_them(tmp_path: Path) -> None:
    robots = tmp_path / "robots"
    robots.mkdir()
    (robots / "rover.pt").write_bytes(b"x")
    params = robots / "rover.yaml"
    engine = {"model_path": "rover.pt", "latency_table": "rover.latency.json"}
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"engine": engine}}}))
    later = tmp_path / "later.yaml"
    later.write_text("segmentation_node:\n  ros__parameters:\n    policy:\n      name: final\n")
    sources = parameter_sources([params, later], "/segmentation_node")
    assert sources["engine.model_path"] == params
    assert sources["policy.name"] == later
    config = SegmentationConfig.from_parameters(
        {"engine.model_path": "rover.pt", "engine.latency_table": "rover.latency.json"}
    )
    anchored = anchor_to_sources(config, sources)
    assert anchored.engine.model_path == str((robots / "rover.pt").resolve())
    # Not beside the file: left for the packaged models, never taken from the current directory.
    assert anchored.engine.latency_table == "rover.latency.json"


def test_descriptor_ranges_only_on_scalars() -> None:
    by_name = {spec.name: spec for spec in SPECS}
    assert parameter_descriptor(by_name["engine.input_height"]).integer_range[0].to_value == 4096
    thresholds = parameter_descriptor(by_name["policy.image_thresholds"])
    assert not thresholds.floating_point_range
    assert "0, 1" in thresholds.additional_constraints
    assert "hybrid" in parameter_descriptor(by_name["policy.name"]).additional_constraints
