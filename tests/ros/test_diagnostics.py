"""``exit_info`` messages and their typed reading."""

from __future__ import annotations

import math

import numpy as np
from std_msgs.msg import Header

from mess_ros.ros.diagnostics import EXIT_INFO_KEYS, ExitInfo, exit_info_message
from mess_ros.runtime.engine import SegmentationResult


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
