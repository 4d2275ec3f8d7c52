"""The segmentation node in a subprocess, driven over DDS by a client in this process."""

from __future__ import annotations

import math
import signal
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from lifecycle_msgs.msg import Transition
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32

from mess_ros.config import SegmentationConfig
from mess_ros.data.image_codec import SUPPORTED_ENCODINGS
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.ros.conversions import (
    array_to_image,
    image_to_array,
    rgb_to_compressed,
    rgb_to_encoding,
)
from mess_ros.ros.diagnostics import EXIT_INFO_KEYS, STAGE_KEY_PREFIX
from mess_ros.ros.processes import ManagedProcess
from tests.ros.conftest import (
    REPO,
    TINY_EXITS,
    NodeUnderTest,
    RosClient,
    next_domain_id,
    run_node,
    stamp_of,
    start_node,
    wait_until_serving,
    write_params,
)

pytestmark = pytest.mark.ros

HEIGHT, WIDTH = 24, 40
TUNABLE_LOAD_BETA = 20.0
STOP_WAIT_S = 60.0
RANDOM_BYTES = bytes(range(128, 256)) * 4


def one_fatal_line(process: ManagedProcess) -> str:
    """The node's only FATAL line, once it exited with status 1 and no traceback."""
    status = process.popen.wait(STOP_WAIT_S)
    output = process.output()
    assert status == 1, output
    fatal = [line for line in output.splitlines() if "[FATAL]" in line]
    assert len(fatal) == 1, output
    assert "Traceback" not in output
    return fatal[0]


def scene(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A deterministic colourful RGB frame."""
    rows = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    rgb = np.stack([rows + 0 * cols, 0 * rows + cols, (rows + cols) / 2], axis=2)
    return rgb.astype(np.uint8)


def probe_image() -> Image:
    msg = array_to_image(scene(), "rgb8")
    msg.header.frame_id = "test_camera"
    return msg


@pytest.fixture(scope="module")
def serving(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path
) -> Iterator[NodeUnderTest]:
    """A node with default behaviour (final exit, no deadline); tests must not reconfigure it."""
    tmp = tmp_path_factory.mktemp("serving")
    params = write_params(tmp / "params.yaml", tiny_checkpoint)
    yield from run_node(tmp, params, probe_image())


@pytest.fixture(scope="module")
def tunable(
    tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path
) -> Iterator[NodeUnderTest]:
    """A node with reliable image QoS that tests reconfigure (each sets what it needs)."""
    tmp = tmp_path_factory.mktemp("tunable")
    params = write_params(
        tmp / "params.yaml",
        tiny_checkpoint,
        node__image_qos_reliability="reliable",
        node__image_qos_depth=50,
        deadline__load_beta=TUNABLE_LOAD_BETA,
    )
    yield from run_node(tmp, params, probe_image(), reliable_images=True)


# --- images in, masks out ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("encoding", "row_padding", "big_endian"),
    [(e, 0, False) for e in SUPPORTED_ENCODINGS] + [("rgb8", 7, False), ("mono16", 4, True)],
)
def test_mask_for_each_encoding(
    serving: NodeUnderTest, encoding: str, row_padding: int, big_endian: bool
) -> None:
    pixels = rgb_to_encoding(scene(), encoding)
    image = array_to_image(pixels, encoding, row_padding=row_padding, is_bigendian=big_endian)
    image.header.frame_id = f"frame_{encoding}"
    mask, info = serving.client.segment(image)
    assert mask.encoding == "mono8"
    assert (mask.height, mask.width) == (HEIGHT, WIDTH)
    assert mask.step == WIDTH
    assert mask.header.frame_id == f"frame_{encoding}"
    assert stamp_of(mask) == stamp_of(image)
    ids = image_to_array(mask)
    assert ids.max() < SYNTHETIC_LABELS.num_classes
    assert info["exit_id"] == "final"


def test_exit_info_matches_mask_by_stamp(serving: NodeUnderTest) -> None:
    client = serving.client
    stamps = []
    for _ in range(4):
        mask, info = client.segment(probe_image())
        stamps.append(stamp_of(mask))
        assert set(EXIT_INFO_KEYS) <= set(info)
        stages = [k for k in info if k.startswith(STAGE_KEY_PREFIX)]
        assert f"{STAGE_KEY_PREFIX}output:final" in stages
        assert set(info) == set(EXIT_INFO_KEYS) | set(stages)
        assert info["exit_id"] in TINY_EXITS
        assert int(info["num_exits"]) == len(TINY_EXITS)
        assert int(info["exit_index"]) == TINY_EXITS.index(info["exit_id"])
        assert float(info["measured_ms"]) > 0
        assert info["confidence"] == "nan"  # the final policy computes no confidence
        assert info["dropped"] == "false"
        assert info["met_deadline"] == "none"  # no deadline configured
        assert float(info["end_to_end_ms"]) >= float(info["measured_ms"])
    assert len(set(stamps)) == len(stamps)
    for stamp in stamps:
        report = client.exit_for(stamp)
        assert report is not None
        assert report.header.frame_id == "test_camera"


def test_color_mask_and_scaled_camera_info(serving: NodeUnderTest) -> None:
    client = serving.client
    info = CameraInfo(width=WIDTH * 2, height=HEIGHT * 2)
    info.k = [100.0, 0.0, 40.0, 0.0, 100.0, 24.0, 0.0, 0.0, 1.0]
    info.p = [100.0, 0.0, 40.0, 0.0, 0.0, 100.0, 24.0, 0.0, 0.0, 0.0, 1.0, 0.0]

    def publish() -> None:
        client.info_pub.publish(info)
        client.image_pub.publish(image)

    image = probe_image()
    stamp = client.next_stamp(image)
    client.request(
        publish,
        lambda: next((i for i in client.infos if stamp_of(i) == stamp), None),
        30.0,
    )
    scaled = next(i for i in client.infos if stamp_of(i) == stamp)
    assert (scaled.width, scaled.height) == (WIDTH, HEIGHT)
    np.testing.assert_allclose(scaled.k, [50, 0, 20, 0, 50, 12, 0, 0, 1])
    assert client.spin_until(lambda: any(stamp_of(c) == stamp for c in client.colors), 5.0)
    color = next(c for c in client.colors if stamp_of(c) == stamp)
    mask = client.mask_for(stamp)
    assert mask is not None
    assert color.encoding == "rgb8"
    np.testing.assert_array_equal(
        image_to_array(color), SYNTHETIC_LABELS.colorize(image_to_array(mask))
    )


def test_malformed_input_is_counted_and_node_keeps_serving(serving: NodeUnderTest) -> None:
    client = serving.client
    good = array_to_image(scene(), "rgb8")
    short = array_to_image(scene(), "rgb8")
    short.data = bytes(len(short.data) - 3)
    yuv = array_to_image(scene(), "rgb8")
    yuv.encoding = "yuv422"
    empty = Image(height=0, width=WIDTH, encoding="rgb8", step=WIDTH * 3)
    huge = Image(height=100_000, width=100_000, encoding="rgb8", step=300_000)
    narrow = array_to_image(scene(), "rgb8")
    narrow.step = WIDTH * 3 - 1
    bad = {
        "bad_data_length": short,
        "unsupported_encoding": yuv,
        "zero_size": empty,
        "too_large": huge,
        "bad_step": narrow,
    }

    def all_counted() -> bool:
        if not client.health:
            return False
        values = client.latest_health()
        return (
            all(int(values.get(f"dropped.{cause}", "0")) >= 1 for cause in bad)
            and int(values["loads_rejected"]) >= 2
        )

    deadline = time.monotonic() + 30.0
    while not all_counted() and time.monotonic() < deadline:
        # The node keeps only the newest waiting image (depth 1): one at a time.
        for msg in bad.values():
            client.image_pub.publish(msg)
            client.spin_for(0.05)
        client.load_pub.publish(Float32(data=math.nan))
        client.load_pub.publish(Float32(data=1.5))
        client.spin_for(0.3)
    assert all_counted(), client.latest_health()
    assert serving.process.alive()
    mask, _ = client.segment(good)
    assert (mask.height, mask.width) == (HEIGHT, WIDTH)
    status = client.health[-1].status[0]
    assert "malformed" in status.message or int(client.latest_health()["dropped_total"]) >= 5
    log = serving.process.output()
    assert "data length" in log
    assert "Traceback" not in log


def test_diagnostics_report_rates_latency_and_exits(serving: NodeUnderTest) -> None:
    client = serving.client
    for _ in range(3):
        client.segment(probe_image())
    client.health.clear()
    assert client.spin_until(lambda: bool(client.health), 5.0)
    values = client.latest_health()
    for key in (
        "input_rate_hz",
        "output_rate_hz",
        "frames_received",
        "frames_published",
        "dropped_total",
        "deadline_miss_rate",
        "latency_mean_ms",
        "latency_p95_ms",
        "load",
        "device",
        "exit.final",
    ):
        assert key in values, key
    assert int(values["frames_published"]) >= 3
    assert float(values["latency_p95_ms"]) > 0
    assert values["device"] == "cpu"
    assert client.health[-1].status[0].hardware_id == "cpu"


def test_default_yaml_keys_equal_declared_parameters(serving: NodeUnderTest) -> None:
    declared = {
        name
        for name in serving.client.list_parameters()
        if name.split(".")[0] in ("engine", "policy", "deadline", "node", "cameras")
    }
    document = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    ros_params = document["/**"]["ros__parameters"]
    written = {f"{section}.{key}" for section, block in ros_params.items() for key in block}
    # Empty lists cannot be typed in a parameter file; they are written as comments.
    arrays = {spec.name for spec in SegmentationConfig.parameter_specs() if spec.is_array}
    commented = arrays - written
    text = (REPO / "config" / "default.yaml").read_text()
    for name in commented:
        assert f"# {name.split('.')[1]}: []" in text
    assert written | commented == declared
    assert not written & commented


# --- run-time reconfiguration and load --------------------------------------------------


def test_parameter_changes_valid_and_invalid(tunable: NodeUnderTest) -> None:
    client = tunable.client
    early = TINY_EXITS[0]
    results = client.set_parameters(
        [
            Parameter("policy.name", value="fixed"),
            Parameter("policy.fixed_exit", value=early),
            Parameter("deadline.deadline_ms", value=0.0),
        ]
    )
    assert results[0].successful, results[0].reason
    _, info = client.segment(probe_image())
    assert info["exit_id"] == early
    assert info["policy"] == "fixed"

    # A change that does not fit the model: rejected with the reason, nothing changes.
    results = client.set_parameters([Parameter("policy.active_exits", value=["layer9_9:linear"])])
    assert not results[0].successful
    assert "layer9_9:linear" in results[0].reason
    # Out of the declared range, read-only, and invalid as a whole (fixed exit not active).
    bad_sets: list[list[Parameter[Any]]] = [
        [Parameter("deadline.deadline_ms", value=-5.0)],
        [Parameter("engine.device", value="cuda")],
        [Parameter("policy.active_exits", value=[TINY_EXITS[1]])],
        [Parameter("policy.name", value="warp_speed")],
    ]
    for parameters in bad_sets:
        (result,) = client.set_parameters(parameters)
        assert not result.successful, parameters[0].name
        assert result.reason
    assert client.get_parameter("policy.active_exits") == []
    assert client.get_parameter("deadline.deadline_ms") == 0.0
    assert client.get_parameter("policy.name") == "fixed"
    _, info = client.segment(probe_image())
    assert info["exit_id"] == early

    # Non-atomic sets are validated one by one against the running configuration.
    results = client.set_parameters(
        [Parameter("policy.fixed_exit", value=TINY_EXITS[2])], atomically=False
    )
    assert results[0].successful
    _, info = client.segment(probe_image())
    assert info["exit_id"] == TINY_EXITS[2]

    results = client.set_parameters([Parameter("policy.name", value="final")])
    assert results[0].successful
    _, info = client.segment(probe_image())
    assert info["exit_id"] == "final"

    # ros2 param set ... deadline.deadline_ms 50: an integer for a double is taken as 50.0.
    (result,) = client.set_parameters([Parameter("deadline.deadline_ms", value=50)])
    assert result.successful, result.reason
    assert client.get_parameter("deadline.deadline_ms") == 50.0
    (result,) = client.set_parameters([Parameter("deadline.deadline_ms", value=0)])
    assert result.successful, result.reason
    # A typo is refused with the name that was meant, not silently added.
    (result,) = client.set_parameters([Parameter("policy.pixel_treshold", value=0.95)])
    assert not result.successful
    assert "did you mean policy.pixel_threshold?" in result.reason
    assert "policy.pixel_treshold" not in client.list_parameters()
    # An exit the model lacks is refused as fixed_exit even while the policy is not fixed.
    (result,) = client.set_parameters([Parameter("policy.fixed_exit", value="layer9_9:nope")])
    assert not result.successful
    assert "layer9_9:nope" in result.reason
    assert client.get_parameter("policy.fixed_exit") == TINY_EXITS[2]
    assert tunable.process.alive()


def after_first_exit_ms(info: dict[str, str]) -> float:
    """Measured time of a frame after the blocks up to the first exit."""
    first = f"{STAGE_KEY_PREFIX}segment:{TINY_EXITS[0].split(':')[0]}"
    skip = {f"{STAGE_KEY_PREFIX}preprocess", first}
    return sum(
        float(value)
        for key, value in info.items()
        if key.startswith(STAGE_KEY_PREFIX) and key not in skip
    )


def test_system_load_changes_exits_under_a_tight_deadline(tunable: NodeUnderTest) -> None:
    """A reported load makes the deadline policy leave early; idle, the same deadline fits.

    The node starts with ``deadline.load_beta`` = 20 (predicted times x21 at full load).
    The engine then learns the real slope from measured times; the load here is only
    reported (nothing actually slows down), so only the first loaded frame is sure to
    be predicted with the initial slope, and that is the frame this test checks.
    """
    client = tunable.client
    (result,) = client.set_parameters(
        [
            Parameter("policy.name", value="deadline"),
            Parameter("policy.active_exits", Parameter.Type.STRING_ARRAY, []),
            Parameter("deadline.deadline_ms", value=0.0),
            Parameter("deadline.use_load", value=True),
            Parameter("deadline.load_timeout_ms", value=60_000.0),
        ]
    )
    assert result.successful, result.reason

    def report_load(load: float) -> None:
        def received() -> bool:
            return bool(client.health) and client.latest_health()["load"] == f"{load:.3f}"

        client.health.clear()
        assert client.request(
            lambda: client.load_pub.publish(Float32(data=load)),
            lambda: True if received() else None,
            10.0,
        )

    report_load(0.0)
    # No deadline: every frame reaches the final exit; its stage times set the deadline.
    unloaded = [client.segment(probe_image())[1] for _ in range(5)]
    assert {r["exit_id"] for r in unloaded} == {"final"}
    total_ms = statistics.median(float(r["measured_ms"]) for r in unloaded)
    # The policy first decides after the first exit's blocks: what is left from there on
    # must fit idle (with room for noise) and must not fit at 21 times the idle cost.
    rest_ms = statistics.median(after_first_exit_ms(r) for r in unloaded)
    deadline_ms = total_ms + 6.0 * rest_ms + 1.0
    (result,) = client.set_parameters([Parameter("deadline.deadline_ms", value=deadline_ms)])
    assert result.successful, result.reason

    idle = [client.segment(probe_image())[1] for _ in range(5)]
    report_load(1.0)
    loaded = client.segment(probe_image())[1]
    detail = [
        (r["load"], r["exit_id"], r["predicted_ms"], r["deadline_ms"], r["reason"])
        for r in [*idle, loaded]
    ]
    assert statistics.median(int(r["exit_index"]) for r in idle) == len(TINY_EXITS) - 1, detail
    assert loaded["load"] == "1.000"
    assert int(loaded["exit_index"]) < len(TINY_EXITS) - 1, detail
    # at 21 times the idle cost even the earliest exit may be predicted too late: infeasible
    assert loaded["reason"].startswith(("deadline", "infeasible")), detail
    (result,) = client.set_parameters(
        [Parameter("policy.name", value="final"), Parameter("deadline.deadline_ms", value=0.0)]
    )
    assert result.successful


def test_latest_frame_wins_and_stale_frames_are_counted(tunable: NodeUnderTest) -> None:
    client = tunable.client
    (result,) = client.set_parameters([Parameter("policy.name", value="final")])
    assert result.successful
    before = client.latest_health() if client.health else {}
    published_before = int(before.get("frames_published", "0"))
    # Large frames make each inference slower than a burst of publishes (reliable, depth 50).
    big = array_to_image(scene(240, 320), "rgb8")
    stamps = []
    for _ in range(30):
        stamps.append(client.next_stamp(big))
        client.image_pub.publish(big)
    last = stamps[-1]
    assert client.spin_until(lambda: client.mask_for(last) is not None, 30.0)
    client.spin_for(1.2)
    values = client.latest_health()
    stale = int(values.get("dropped.stale", "0"))
    published = int(values["frames_published"]) - published_before
    assert stale > 0
    assert published < 30
    # The newest frame is always processed.
    assert client.mask_for(last) is not None


# --- starting and stopping --------------------------------------------------------------


@pytest.mark.parametrize(
    ("sig", "second_after_s"),
    [
        (signal.SIGINT, None),
        (signal.SIGTERM, None),
        # Ctrl-C twice, or ros2 launch beside the terminal: the second one changes nothing.
        (signal.SIGINT, 0.0),
        (signal.SIGINT, 0.05),
        (signal.SIGTERM, 0.5),
    ],
)
def test_clean_stop_on_signal(
    tmp_path: Path, tiny_checkpoint: Path, sig: int, second_after_s: float | None
) -> None:
    """Mid-stream, both signals end the node with status 0 and no traceback."""
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint)
    domain_id = next_domain_id()
    process = start_node(params, domain_id, tmp_path / "node.log")
    client: RosClient | None = None
    try:
        client = RosClient(domain_id)
        wait_until_serving(process, client, probe_image())
        for _ in range(5):
            image = probe_image()
            client.next_stamp(image)
            client.image_pub.publish(image)
            client.spin_for(0.02)
        process.popen.send_signal(sig)
        if second_after_s is not None:
            time.sleep(second_after_s)
            process.popen.send_signal(signal.SIGINT)
        status = process.popen.wait(STOP_WAIT_S)
        assert status == 0, process.output()
        assert "Traceback" not in process.output()
        assert "KeyboardInterrupt" not in process.output()
    finally:
        process.stop(signal.SIGKILL)
        if client is not None:
            client.close()


def test_compressed_input(tmp_path: Path, tiny_checkpoint: Path) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint, node__use_compressed=True)
    domain_id = next_domain_id()
    process = start_node(params, domain_id, tmp_path / "node.log")
    client: RosClient | None = None
    try:
        client = RosClient(domain_id)
        compressed = rgb_to_compressed(scene())
        compressed.header.frame_id = "jpeg_camera"
        stamp = client.next_stamp(compressed)
        mask = client.request(
            lambda: client.compressed_pub.publish(compressed),
            lambda: client.mask_for(stamp),
            90.0,
        )
        assert (mask.height, mask.width) == (HEIGHT, WIDTH)
        assert mask.header.frame_id == "jpeg_camera"
    finally:
        process.stop(signal.SIGINT)
        if client is not None:
            client.close()


def test_a_signal_while_the_model_loads_stops_the_node_cleanly(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    # Many warm-up passes keep the node busy starting when the signals arrive.
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint, engine__warmup_frames=1000)
    process = start_node(params, next_domain_id(), tmp_path / "node.log")
    try:
        deadline = time.monotonic() + STOP_WAIT_S
        while "starting:" not in process.output():
            assert time.monotonic() < deadline and process.alive(), process.output()
            time.sleep(0.1)
        process.popen.send_signal(signal.SIGINT)
        process.popen.send_signal(signal.SIGTERM)
        status = process.popen.wait(STOP_WAIT_S)
        assert status == 0, process.output()
        assert "Traceback" not in process.output()
    finally:
        process.stop(signal.SIGKILL)


@pytest.mark.parametrize(
    ("kind", "content", "expected"),
    [
        ("malformed YAML", b'"/**":\n  ros__parameters: [1, 2\n', "is not valid YAML"),
        ("missing file", None, "cannot read parameter file"),
        ("top-level list", b"- 1\n- 2\n", "its top level is a list"),
        ("random bytes", RANDOM_BYTES, "is not UTF-8 text"),
        ("no section", b"engine:\n  device: cpu\n", "no '<node>: ros__parameters:' section"),
        (
            "undeclared key",
            b'"/**":\n  ros__parameters:\n    policy:\n      pixel_treshold: 0.95\n',
            "did you mean policy.pixel_threshold?",
        ),
    ],
)
def test_unusable_parameter_files_end_in_one_fatal_line(
    tmp_path: Path, kind: str, content: bytes | None, expected: str
) -> None:
    params = tmp_path / "params.yaml"
    if content is not None:
        params.write_bytes(content)
    process = start_node(params, next_domain_id(), tmp_path / "node.log")
    try:
        fatal = one_fatal_line(process)
        assert str(params) in fatal and expected in fatal, process.output()
    finally:
        process.stop(signal.SIGKILL)


def test_a_latency_table_that_is_not_text_names_the_file(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    table = tmp_path / "tiny.latency.json"
    table.write_bytes(RANDOM_BYTES)
    params = write_params(
        tmp_path / "params.yaml", tiny_checkpoint, engine__latency_table=str(table)
    )
    process = start_node(params, next_domain_id(), tmp_path / "node.log")
    try:
        assert f"latency table {table} is not UTF-8 text" in one_fatal_line(process)
    finally:
        process.stop(signal.SIGKILL)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback needs a machine without CUDA")
def test_cuda_fallback_is_warned_once_through_ros_logging(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint, engine__device="cuda")
    started = run_node(tmp_path, params, probe_image())
    output = next(started).process.output()
    started.close()
    lines = [line for line in output.splitlines() if "CUDA is not available" in line]
    assert len(lines) == 1, output
    assert lines[0].startswith("[WARN]") and "[segmentation_node]" in lines[0]


def test_startup_error_is_reported_and_exits_nonzero(tmp_path: Path) -> None:
    params = write_params(tmp_path / "params.yaml", tmp_path / "missing.pt")
    process = start_node(params, next_domain_id(), tmp_path / "node.log")
    try:
        status = process.popen.wait(60)
        assert status == 1
        assert "missing.pt" in process.output()
        assert "Traceback" not in process.output()
    finally:
        process.stop(signal.SIGKILL)


def test_lifecycle_node(tmp_path: Path, tiny_checkpoint: Path) -> None:
    """--lifecycle: nothing is served until configure + activate, and not after deactivate."""
    params = write_params(tmp_path / "params.yaml", tiny_checkpoint)
    domain_id = next_domain_id()
    process = start_node(params, domain_id, tmp_path / "node.log", extra=["--lifecycle"])
    client: RosClient | None = None
    try:
        client = RosClient(domain_id)
        assert client.lifecycle_state() == "unconfigured"
        image = probe_image()
        stamp = client.next_stamp(image)
        client.image_pub.publish(image)
        client.spin_for(0.5)
        assert client.mask_for(stamp) is None
        assert client.change_state(Transition.TRANSITION_CONFIGURE)
        assert client.lifecycle_state() == "inactive"
        assert client.change_state(Transition.TRANSITION_ACTIVATE)
        mask, _ = client.segment(probe_image())
        assert (mask.height, mask.width) == (HEIGHT, WIDTH)
        assert client.change_state(Transition.TRANSITION_DEACTIVATE)
        image = probe_image()
        stamp = client.next_stamp(image)
        for _ in range(5):
            client.image_pub.publish(image)
            client.spin_for(0.2)
        assert client.mask_for(stamp) is None
        assert client.spin_until(
            lambda: (
                bool(client.health) and int(client.latest_health().get("dropped.inactive", "0")) > 0
            ),
            5.0,
        )
        assert client.change_state(Transition.TRANSITION_CLEANUP)
        assert client.lifecycle_state() == "unconfigured"
        assert process.stop(signal.SIGINT) == 0, process.output()
        assert "Traceback" not in process.output()
    finally:
        process.stop(signal.SIGKILL)
        if client is not None:
            client.close()
