"""Fixtures for the ROS tests: a tiny model, node subprocesses and a DDS test client.

Every ROS participant stays on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=
LOCALHOST) and every node fixture gets its own ROS_DOMAIN_ID in 1..101 (the ids
whose ports stay below the ephemeral range), so test runs and other developers'
processes never see each other. Nodes are started by the package's launcher
(:func:`mess_ros.ros.processes.start_node`) in their own session and always
stopped by PID in a ``finally``; the test client is the package's
:class:`~mess_ros.ros.client.NodeClient` with what only the tests look at.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
import torch
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.msg import SetParametersResult
from rcl_interfaces.srv import GetParameters, ListParameters, SetParameters, SetParametersAtomically
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.model import BackboneSpec, ExitSpec, HeadSpec, MESSNet, ModelSpec, save_checkpoint
from mess_ros.ros import qos
from mess_ros.ros.client import NodeClient
from mess_ros.ros.diagnostics import key_values
from mess_ros.ros.processes import (
    NODE_MODULE,
    ManagedProcess,
    default_domain_id,
    python_module_argv,
    ros_environment,
)
from mess_ros.ros.processes import start_node as launch_node

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90.0
NODE_PROGRAM = tuple(python_module_argv(NODE_MODULE))
# The tests' nodes run on one thread; they stop more slowly than the demo's on a busy machine.
TEST_ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
STOP_TIMEOUT_S = 20.0

T = TypeVar("T")

_domain_ids = itertools.count()


def next_domain_id() -> int:
    """A domain id in 1..101, offset by PID so two concurrent test runs rarely collide.

    The environment's ROS_DOMAIN_ID is not used: the fixtures need one domain each.
    """
    return default_domain_id(os.getpid() * 6 + next(_domain_ids), environ={})


def ros_env(domain_id: int) -> dict[str, str]:
    """Environment of a ROS process of the tests: the package's, on one thread."""
    return ros_environment(domain_id, base={**os.environ, **TEST_ENV})


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base-width-8 ResNet-10 with a linear exit after every block but the last.

    Untrained: the tests check plumbing, exits and timing, not accuracy.
    """
    torch.manual_seed(0)
    backbone = BackboneSpec("resnet10", 8, 16)
    num_classes = SYNTHETIC_LABELS.num_classes
    probe = MESSNet(ModelSpec(backbone, num_classes, HeadSpec("linear")))
    exits = tuple(ExitSpec(point, HeadSpec("linear")) for point in probe.points)
    model = MESSNet(ModelSpec(backbone, num_classes, HeadSpec("linear"), exits)).eval()
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model, SYNTHETIC_LABELS.to_dict(), {"purpose": "ros tests"})
    return path


TINY_EXITS = ("layer1_0:linear", "layer2_0:linear", "layer3_0:linear", "final")


def write_params(path: Path, checkpoint: Path, **overrides: Any) -> Path:
    """A parameter file for the tiny model; ``overrides`` use dotted names with ``__`` for dots."""
    params: dict[str, Any] = {
        "engine.model_path": str(checkpoint),
        "engine.input_height": 32,
        "engine.input_width": 64,
        "engine.num_threads": 1,
        "engine.warmup_frames": 1,
        "engine.profile_repeats": 3,
        "policy.name": "final",
        "node.diagnostics_period_s": 0.5,
    }
    params.update({name.replace("__", "."): value for name, value in overrides.items()})
    parameter_file.write(SegmentationConfig.from_parameters(params), path)
    return path


def start_node(
    params_file: Path,
    domain_id: int,
    log_path: Path,
    extra: Sequence[str] = (),
    program: Sequence[str] = NODE_PROGRAM,
    **launch: Any,
) -> ManagedProcess:
    """``program`` (the node by default; a wrapper or a variant for some tests) with the params.

    ``extra`` are the program's own arguments (``--lifecycle``); ``launch``
    passes on to :func:`mess_ros.ros.processes.start_node` (``cwd``, ``extra_env``).
    """
    extra_env = {**TEST_ENV, **launch.pop("extra_env", {})}
    process = launch_node(
        params_file,
        domain_id,
        log_path,
        program=program,
        program_args=extra,
        extra_env=extra_env,
        **launch,
    )
    process.stop_timeout_s = STOP_TIMEOUT_S
    return process


class RosClient:
    """A test node in this process: publishes inputs, records outputs, calls services.

    A :class:`~mess_ros.ros.client.NodeClient` (its context, spin thread,
    publishers and service calls) plus what only the tests look at: every
    raw message of every output topic, compressed images and camera info.
    """

    def __init__(self, domain_id: int, *, reliable_images: bool = False) -> None:
        self.client = NodeClient(
            domain_id,
            name="mess_test_client",
            image_reliability="reliable" if reliable_images else "best_effort",
            image_depth=10,
        )
        self.node = self.client.node
        self.image_pub = self.client.image_pub
        self.load_pub = self.client.load_pub
        self.masks: list[Image] = []
        self.colors: list[Image] = []
        self.infos: list[CameraInfo] = []
        self.exits: list[DiagnosticArray] = []
        self.health: list[DiagnosticArray] = []
        node = self.node
        out = qos.output_qos(depth=50)
        node.create_subscription(Image, "mask", self.masks.append, out)
        node.create_subscription(Image, "mask_color", self.colors.append, out)
        node.create_subscription(CameraInfo, "mask/camera_info", self.infos.append, out)
        node.create_subscription(DiagnosticArray, "exit_info", self.exits.append, out)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.health.append, out)
        image_qos = qos.image_qos("reliable" if reliable_images else "best_effort", 10)
        self.compressed_pub = node.create_publisher(CompressedImage, "image/compressed", image_qos)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", qos.output_qos())

    def close(self) -> None:
        self.client.close()

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        return self.client.wait_until(predicate, timeout_s)

    def spin_for(self, seconds: float) -> None:
        time.sleep(seconds)

    def next_stamp(self, msg: Any) -> tuple[int, int]:
        """Give ``msg`` a fresh, unique stamp on the current clock; returns it."""
        now = self.node.get_clock().now().to_msg()
        msg.header.stamp = now
        return stamp_of(msg)

    def request(
        self, publish: Callable[[], None], until: Callable[[], T | None], timeout_s: float
    ) -> T:
        """Publish repeatedly until ``until`` returns a value (best effort may drop a message)."""
        got: list[T] = []

        def check() -> bool:
            value = until()
            if value is not None:
                got.append(value)
            return bool(got)

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            publish()
            if self.spin_until(check, 0.5):
                return got[0]
        raise AssertionError(f"no answer within {timeout_s} s")

    def mask_for(self, stamp: tuple[int, int]) -> Image | None:
        return next((m for m in list(self.masks) if stamp_of(m) == stamp), None)

    def exit_for(self, stamp: tuple[int, int]) -> DiagnosticArray | None:
        return next((e for e in list(self.exits) if stamp_of(e) == stamp), None)

    def segment(self, image: Image, timeout_s: float = 30.0) -> tuple[Image, dict[str, str]]:
        """Publish ``image`` with a fresh stamp; its mask and exit-info values."""
        stamp = self.next_stamp(image)
        mask = self.request(
            lambda: self.image_pub.publish(image), lambda: self.mask_for(stamp), timeout_s
        )
        self.spin_until(lambda: self.exit_for(stamp) is not None, 5.0)
        info = self.exit_for(stamp)
        assert info is not None, "a mask arrived without its exit_info"
        return mask, key_values(info.status[0])

    def latest_health(self) -> dict[str, str]:
        assert self.health, "no /diagnostics received"
        return key_values(self.health[-1].status[0])

    def set_parameters(
        self, parameters: Sequence[Parameter[Any]], *, atomically: bool = True
    ) -> list[SetParametersResult]:
        messages = [p.to_parameter_msg() for p in parameters]
        if atomically:
            request = SetParametersAtomically.Request(parameters=messages)
            response = self.client.call(
                SetParametersAtomically, "set_parameters_atomically", request
            )
            return [response.result]
        request = SetParameters.Request(parameters=messages)
        return list(self.client.call(SetParameters, "set_parameters", request).results)

    def get_parameter(self, name: str) -> Any:
        request = GetParameters.Request(names=[name])
        response = self.client.call(GetParameters, "get_parameters", request, repeat=True)
        return Parameter.from_parameter_msg(_parameter_msg(name, response.values[0])).value

    def lifecycle_state(self) -> str:
        response = self.client.call(GetState, "get_state", GetState.Request(), repeat=True)
        return str(response.current_state.label)

    def change_state(self, transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return bool(self.client.call(ChangeState, "change_state", request, 60.0).success)

    def list_parameters(self) -> list[str]:
        request = ListParameters.Request()
        response = self.client.call(ListParameters, "list_parameters", request, repeat=True)
        return list(response.result.names)


def _parameter_msg(name: str, value: Any) -> Any:
    from rcl_interfaces.msg import Parameter as ParameterMsg

    return ParameterMsg(name=name, value=value)


def stamp_of(msg: Any) -> tuple[int, int]:
    return (int(msg.header.stamp.sec), int(msg.header.stamp.nanosec))


class NodeUnderTest:
    """A running segmentation node and a client on its domain."""

    def __init__(self, process: ManagedProcess, client: RosClient) -> None:
        self.process = process
        self.client = client


def wait_until_serving(process: ManagedProcess, client: RosClient, image: Image) -> None:
    """Block until the node answers a frame (model loaded, profiled, subscriptions matched)."""
    try:
        client.segment(image, timeout_s=START_TIMEOUT_S)
    except AssertionError:
        pytest.fail(f"node did not serve within {START_TIMEOUT_S} s; its log:\n{process.output()}")


def run_node(
    tmp_path: Path,
    params_file: Path,
    probe: Image,
    *,
    extra: Sequence[str] = (),
    program: Sequence[str] = NODE_PROGRAM,
    reliable_images: bool = False,
    wait: bool = True,
) -> Iterator[NodeUnderTest]:
    """Generator behind the node fixtures: start, wait until it serves, always stop both."""
    domain_id = next_domain_id()
    process = start_node(params_file, domain_id, tmp_path / "node.log", extra, program)
    client: RosClient | None = None
    try:
        client = RosClient(domain_id, reliable_images=reliable_images)
        if wait:
            wait_until_serving(process, client, probe)
        yield NodeUnderTest(process, client)
    finally:
        process.stop(signal.SIGINT)
        if client is not None:
            client.close()
