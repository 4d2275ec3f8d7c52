"""``exit_info`` messages and their typed reading."""

from __future__ import annotations

import math

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus
from std_msgs.msg import Header

from mess_ros.ros.diagnostics import (
    EXIT_INFO_KEYS,
    CameraHealth,
    ExitInfo,
    exit_info_message,
    health_message,
    key_values,
)
from mess_ros.ros.stats import NodeStatistics
from mess_ros.runtime.engine import SegmentationResult
from tests.clock import ManualClock


def result(**changes: object) -> SegmentationResult:
    values: dict[str, object] = {
        "mask": np.zeros((2, 3), dtype=np.uint8),
        "exit_id": "layer1_0:linear",
        "exit_index": 0,
        "num_exits": 3,
        "confidence": 0.875,
        "reason": "infeasible: earliest exit needs 41.0 ms, 12.0 ms left; earliest exit",
        "stage_times_ms": {"preprocess": 1.25, "segment:layer1_0": 3.5, "deliver:480x640": 2.0},
        "predicted_ms": 7.5,
        "measured_ms": 6.25,
        "deadline_ms": 12.0,
        "met_deadline": False,
        "load": 0.9,
        "dropped": False,
        "infeasible": True,
        "threads": 1,
        "planned_ms": 9.5,
    }
    values.update(changes)
    return SegmentationResult(**values)  # type: ignore[arg-type]


def header() -> Header:
    msg = Header(frame_id="camera")
    msg.stamp.sec, msg.stamp.nanosec = 12, 345
    return msg


def test_exit_info_reads_back_what_was_written() -> None:
    message = exit_info_message(
        header(),
        result(),
        status_name="node: exit",
        hardware_id="cpu",
        policy="hybrid",
        queue_ms=0.5,
        end_to_end_ms=14.0,
        camera="front",
        waiting=2,
        outputs=["mask", "mask_overlay"],
    )
    assert [kv.key for kv in message.status[0].values][: len(EXIT_INFO_KEYS)] == list(
        EXIT_INFO_KEYS
    )
    info = ExitInfo.from_message(message)
    assert info.stamp_ns == 12_000_000_345
    assert (info.exit_id, info.exit_index, info.num_exits) == ("layer1_0:linear", 0, 3)
    assert info.confidence == 0.875 and info.policy == "hybrid"
    assert info.reason.startswith("infeasible")
    assert (info.predicted_ms, info.measured_ms, info.deadline_ms) == (7.5, 6.25, 12.0)
    assert info.met_deadline is False and info.infeasible and not info.dropped
    assert (info.load, info.threads, info.queue_ms, info.end_to_end_ms) == (0.9, 1, 0.5, 14.0)
    assert info.hardware_id == "cpu"
    assert (info.camera, info.planned_ms, info.waiting) == ("front", 9.5, 2)
    assert info.outputs == ("mask", "mask_overlay")
    assert info.stage_ms == {"preprocess": 1.25, "segment:layer1_0": 3.5, "deliver:480x640": 2.0}


def test_unknown_values_read_as_nan_and_none() -> None:
    message = exit_info_message(
        header(),
        result(confidence=math.nan, deadline_ms=None, met_deadline=None, load=None),
        status_name="node: exit",
        hardware_id="cpu",
        policy="final",
        queue_ms=0.5,
        end_to_end_ms=14.0,
    )
    info = ExitInfo.from_message(message)
    assert math.isnan(info.confidence)
    assert info.deadline_ms is None and info.met_deadline is None and info.load is None
    assert info.camera == "" and info.waiting == 0 and info.outputs == ()


def test_health_has_one_status_per_camera_after_the_node_status() -> None:
    clock = ManualClock()
    node = NodeStatistics(clock=clock)
    front, rear = NodeStatistics(clock=clock, parent=node), NodeStatistics(clock=clock, parent=node)
    front.frame_received()
    front.frame_published("final", 10.0, 12.0, True)
    clock.now_s += 1.0
    message = health_message(
        header().stamp,
        node.snapshot(),
        status_name="node: segmentation",
        hardware_id="cpu",
        extra=[("cameras", "front,rear")],
        cameras=[
            CameraHealth("node: camera front", front.snapshot(), [("camera", "front")]),
            CameraHealth("node: camera rear", rear.snapshot(), [("camera", "rear")]),
        ],
    )
    whole, first, second = message.status
    assert whole.name == "node: segmentation" and whole.level == DiagnosticStatus.OK
    assert key_values(whole)["cameras"] == "front,rear"
    assert key_values(first)["frames_published"] == "1" and first.level == DiagnosticStatus.OK
    # A camera that sends nothing is a warning of its own; the node itself is fine.
    assert second.level == DiagnosticStatus.WARN and second.message == "no frames from this camera"
    assert key_values(second)["camera"] == "rear"
