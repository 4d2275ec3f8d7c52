"""Numpy-only building blocks every other part stands on: exit ids, metrics, latency tables.

Nothing here imports torch or rclpy, so the deployment search, the
evaluation reports and the tests can read these formats anywhere.
"""

from __future__ import annotations

from mess_ros.common.errors import LatencyTableError
from mess_ros.common.exits import FINAL_EXIT, exit_point, is_exit_id
from mess_ros.common.latency_table import (
    PREPROCESS_KEY,
    LatencyStat,
    LatencyTable,
    deliver_key,
    head_key,
    output_key,
    segment_key,
)
from mess_ros.common.metrics import ConfusionMatrix, confusion_matrix, mean_iou

__all__ = [
    "FINAL_EXIT",
    "PREPROCESS_KEY",
    "ConfusionMatrix",
    "LatencyStat",
    "LatencyTable",
    "LatencyTableError",
    "confusion_matrix",
    "deliver_key",
    "exit_point",
    "head_key",
    "is_exit_id",
    "mean_iou",
    "output_key",
    "segment_key",
]
