"""Several cameras served by one node over DDS; overlay and label set, seen from another process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription
from sensor_msgs.msg import Image
from std_msgs.msg import String

from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.ros import qos
from mess_ros.ros.conversions import array_to_image, image_to_array
from mess_ros.ros.diagnostics import ExitInfo, key_values
from mess_ros.ros.label_topic import (
    CLASS_NAMES_PARAMETER,
    COLORS_PARAMETER,
    LABELS_TOPIC,
    labels_from_message,
)
from tests.ros.conftest import (
    START_TIMEOUT_S,
    TINY_EXITS,
    NodeUnderTest,
    RosClient,
    run_node,
    stamp_of,
    write_params,
)
from tests.ros.test_node import scene

pytestmark = pytest.mark.ros

CAMERAS = ("front", "left", "right")
# Each camera sends frames of its own size, so a mask on the wrong topic cannot pass.
SIZES = {"front": (24, 40), "left": (30, 44), "right": (20, 36)}


class Cameras:
    """Per-camera topics of the node on the test client: frames out, masks and reports in."""

    def __init__(self, client: RosClient, names: tuple[str, ...]) -> None:
        self.client = client
        self.names = names
        node = client.node
        out = qos.output_qos(depth=50)
        self.masks: dict[str, list[Image]] = {name: [] for name in names}
        self.exits: dict[str, list[DiagnosticArray]] = {name: [] for name in names}
        self.image_pubs = {}
        for name in names:
            node.create_subscription(Image, f"{name}/mask", self.masks[name].append, out)
            node.create_subscription(
                DiagnosticArray, f"{name}/exit_info", self.exits[name].append, out
            )
            self.image_pubs[name] = node.create_publisher(
                Image, f"{name}/image", qos.image_qos("reliable", 10)
            )

    def image(self, name: str) -> Image:
        msg = array_to_image(scene(*SIZES[name]), "rgb8")
        msg.header.frame_id = f"{name}_optical_frame"
        return msg

    def mask_for(self, name: str, stamp: tuple[int, int]) -> Image | None:
        return next((m for m in self.masks[name] if stamp_of(m) == stamp), None)

    def info_for(self, name: str, stamp: tuple[int, int]) -> ExitInfo | None:
        report = next((e for e in self.exits[name] if stamp_of(e) == stamp), None)
        return None if report is None else ExitInfo.from_message(report)

    def segment(self, name: str, image: Image | None = None) -> tuple[Image, ExitInfo]:
        """Publish a frame to camera ``name`` with a fresh stamp; its mask and exit info."""
        frame = image or self.image(name)
        stamp = self.client.next_stamp(frame)
        mask = self.client.request(
            lambda: self.image_pubs[name].publish(frame), lambda: self.mask_for(name, stamp), 30.0
        )
        assert self.client.spin_until(lambda: self.info_for(name, stamp) is not None, 5.0)
        info = self.info_for(name, stamp)
        assert info is not None
        return mask, info


@pytest.fixture(scope="module", params=[2, 3], ids=["2_cameras", "3_cameras"])
def multi(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_checkpoint: Path,
) -> Iterator[tuple[NodeUnderTest, Cameras]]:
    """A node serving the first 2 or 3 of CAMERAS; tests leave its parameters as they found them."""
    names = CAMERAS[: request.param]
    tmp = tmp_path_factory.mktemp(f"cameras_{request.param}")
    params = write_params(
        tmp / "params.yaml",
        tiny_checkpoint,
        cameras__names=list(names),
        node__image_qos_reliability="reliable",
        node__image_qos_depth=10,
    )
    running = run_node(tmp, params, Image(), wait=False)
    under_test = next(running)
    try:
        cameras = Cameras(under_test.client, names)
        for name in names:
            try:
                cameras.segment(name)
            except AssertionError:
                log = under_test.process.output()
                pytest.fail(f"camera {name} not served in {START_TIMEOUT_S} s; node log:\n{log}")
        yield under_test, cameras
    finally:
        running.close()  # stops the node and the client


def test_masks_arrive_on_each_cameras_own_topics(multi: tuple[NodeUnderTest, Cameras]) -> None:
    _, cameras = multi
    client = cameras.client
    frames = {name: cameras.image(name) for name in cameras.names}
    stamps = {name: client.next_stamp(frame) for name, frame in frames.items()}
    for name, frame in frames.items():  # all cameras at once
        cameras.image_pubs[name].publish(frame)

    def answered() -> bool:
        return all(cameras.info_for(n, stamps[n]) is not None for n in cameras.names)

    assert client.spin_until(answered, 30.0)
    for name in cameras.names:
        mask = cameras.mask_for(name, stamps[name])
        assert mask is not None
        assert mask.header.frame_id == f"{name}_optical_frame"
        assert (mask.height, mask.width) == SIZES[name]
        info = cameras.info_for(name, stamps[name])
        assert info is not None and info.camera == name and info.outputs[0] == "mask"
        others = [n for n in cameras.names if n != name]
        assert all(cameras.mask_for(other, stamps[name]) is None for other in others)
    # Nothing on the single-camera topics of the node.
    assert not client.masks and not client.exits


def test_a_malformed_or_silent_camera_does_not_affect_the_others(
    multi: tuple[NodeUnderTest, Cameras],
) -> None:
    """The first camera sends broken frames, the last good ones, any other nothing."""
    process, cameras = multi
    client = cameras.client
    broken_name, good_name = cameras.names[0], cameras.names[-1]
    broken = cameras.image(broken_name)
    broken.data = bytes(len(broken.data) - 3)
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            cameras.image_pubs[broken_name].publish(broken)
            time.sleep(0.005)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        infos = [cameras.segment(good_name)[1] for _ in range(10)]
    finally:
        stop.set()
        flooder.join(5.0)
    assert all(info.camera == good_name and not info.dropped for info in infos)
    client.health.clear()
    assert client.spin_until(lambda: bool(client.health), 5.0)
    statuses = {status.name.rsplit(" ", 1)[-1]: status for status in client.health[-1].status}
    assert int(key_values(statuses[broken_name])["dropped.bad_data_length"]) >= 1
    assert "dropped.bad_data_length" not in key_values(statuses[good_name])
    assert process.process.alive()


def test_parameter_changes_apply_to_all_cameras_at_once(
    multi: tuple[NodeUnderTest, Cameras],
) -> None:
    _, cameras = multi
    client = cameras.client
    count = len(cameras.names)
    deadlines = [1000.0 + 1000.0 * i for i in range(count)]
    (result,) = client.set_parameters(
        [
            Parameter("policy.name", value="fixed"),
            Parameter("policy.fixed_exit", value=TINY_EXITS[0]),
            Parameter("cameras.deadlines_ms", value=deadlines),
        ]
    )
    assert result.successful, result.reason
    try:
        for name, deadline_ms in zip(cameras.names, deadlines, strict=True):
            info = cameras.segment(name)[1]
            assert (info.policy, info.exit_id) == ("fixed", TINY_EXITS[0])
            assert info.deadline_ms is not None
            assert deadline_ms - 500 < info.deadline_ms <= deadline_ms
            assert info.met_deadline is True
        # One list entry short: refused as a whole, with the reason; nothing changed.
        (result,) = client.set_parameters(
            [
                Parameter("policy.name", value="final"),
                Parameter("cameras.deadlines_ms", value=deadlines[:-1]),
            ]
        )
        assert not result.successful and "cameras.deadlines_ms" in result.reason
        assert client.get_parameter("policy.name") == "fixed"
        for name in cameras.names:
            assert cameras.segment(name)[1].exit_id == TINY_EXITS[0]
        # The camera list itself needs a restart.
        (result,) = client.set_parameters([Parameter("cameras.names", value=["front"])])
        assert not result.successful
    finally:
        (result,) = client.set_parameters(
            [
                Parameter("policy.name", value="final"),
                Parameter("cameras.deadlines_ms", Parameter.Type.DOUBLE_ARRAY, []),
            ]
        )
        assert result.successful, result.reason
    for name in cameras.names:
        info = cameras.segment(name)[1]
        assert (info.policy, info.exit_id, info.deadline_ms) == ("final", "final", None)


def test_diagnostics_per_camera(multi: tuple[NodeUnderTest, Cameras]) -> None:
    _, cameras = multi
    client = cameras.client
    served = cameras.names[1:]
    for name in served:
        for _ in range(3):
            cameras.segment(name)
    # A period with frames from every camera but the first.
    client.health.clear()
    assert client.spin_until(lambda: len(client.health) >= 2, 5.0)
    for name in served:
        cameras.segment(name)
    client.health.clear()
    assert client.spin_until(lambda: bool(client.health), 5.0)
    node_status, *camera_statuses = client.health[-1].status
    assert node_status.name.endswith(": segmentation")
    assert key_values(node_status)["cameras"] == ",".join(cameras.names)
    assert [s.name.rsplit(" ", 1)[-1] for s in camera_statuses] == list(cameras.names)
    published = 0
    for name, status in zip(cameras.names, camera_statuses, strict=True):
        values = key_values(status)
        assert values["camera"] == name and values["image_topic"] == f"/{name}/image"
        assert values["priority"] == "0" and values["deadline_ms"] == "0"
        for key in ("input_rate_hz", "deadline_miss_rate", "deadline_avoidable_miss_rate"):
            assert key in values
        published += int(values["frames_published"])
        if name in served:
            assert int(values["exit.final"]) >= 4
    assert int(key_values(node_status)["frames_published"]) == published
    silent = camera_statuses[0]
    assert silent.level == DiagnosticStatus.WARN
    assert silent.message == "no frames from this camera"


def overlay_subscription(
    client: RosClient, name: str, received: list[Image]
) -> Subscription[Image]:
    return client.node.create_subscription(
        Image, f"{name}/mask_overlay", received.append, qos.output_qos(depth=50)
    )


def test_overlay_only_while_subscribed_and_equal_to_the_blend(
    multi: tuple[NodeUnderTest, Cameras],
) -> None:
    _, cameras = multi
    client = cameras.client
    name = cameras.names[0]
    assert "mask_overlay" not in cameras.segment(name)[1].outputs
    overlays: list[Image] = []
    subscription = overlay_subscription(client, name, overlays)
    try:
        # Until the node has matched the new subscriber, frames go without an overlay.
        mask, info = cameras.segment(name)
        deadline = time.monotonic() + 30.0
        while "mask_overlay" not in info.outputs and time.monotonic() < deadline:
            mask, info = cameras.segment(name)
        assert "mask_overlay" in info.outputs
        assert client.spin_until(lambda: any(stamp_of(o) == stamp_of(mask) for o in overlays), 5)
        overlay = next(o for o in overlays if stamp_of(o) == stamp_of(mask))
        assert overlay.encoding == "rgb8" and overlay.header.frame_id == mask.header.frame_id
        image = scene(*SIZES[name]).astype(np.float64)
        colored = SYNTHETIC_LABELS.colorize(image_to_array(mask)).astype(np.float64)
        expected = 0.5 * image + 0.5 * colored  # node.overlay_alpha 0.5 by default
        blend = image_to_array(overlay).astype(np.float64)
        assert np.abs(blend - expected).max() <= 1.0

        (result,) = client.set_parameters([Parameter("node.overlay_alpha", value=1.0)])
        assert result.successful, result.reason
        mask, info = cameras.segment(name)
        assert client.spin_until(lambda: any(stamp_of(o) == stamp_of(mask) for o in overlays), 5)
        overlay = next(o for o in overlays if stamp_of(o) == stamp_of(mask))
        expected_color = SYNTHETIC_LABELS.colorize(image_to_array(mask))
        np.testing.assert_array_equal(image_to_array(overlay), expected_color)
    finally:
        client.node.destroy_subscription(subscription)
        (result,) = client.set_parameters([Parameter("node.overlay_alpha", value=0.5)])
        assert result.successful
    # Once nobody listens, the node stops computing it.
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if "mask_overlay" not in cameras.segment(name)[1].outputs:
            break
    assert "mask_overlay" not in cameras.segment(name)[1].outputs


def test_label_set_in_parameters_and_for_a_late_joining_subscriber(
    multi: tuple[NodeUnderTest, Cameras],
) -> None:
    _, cameras = multi
    client = cameras.client
    assert client.get_parameter(CLASS_NAMES_PARAMETER) == list(SYNTHETIC_LABELS.class_names)
    assert client.get_parameter(COLORS_PARAMETER) == SYNTHETIC_LABELS.hex_colors()
    (result,) = client.set_parameters([Parameter(CLASS_NAMES_PARAMETER, value=["a", "b"])])
    assert not result.successful
    # The node published its labels once, long ago (the fixture waited for masks).
    received: list[String] = []
    client.node.create_subscription(String, LABELS_TOPIC, received.append, qos.latched_qos())
    assert client.spin_until(lambda: bool(received), 10.0)
    assert labels_from_message(received[0]) == SYNTHETIC_LABELS
