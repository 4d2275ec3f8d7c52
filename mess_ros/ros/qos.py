"""Quality-of-service profiles of the node's topics.

Camera drivers publish with the sensor-data profile (best effort, keep last),
so that is the default for image inputs: a best-effort subscription connects
to both best-effort and reliable publishers. A reliable subscription is only
needed when the publisher must not drop frames towards this node (rosbag
replay for evaluation), hence the parameters.

Outputs are published *reliable*: a reliable publisher connects to reliable
subscribers (RViz, ``ros2 bag record``) and best-effort ones alike, and with
keep-last history it never blocks the publishing thread.
"""

from __future__ import annotations

from typing import Final

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

from mess_ros.ros.errors import RosError

RELIABILITY_POLICIES: Final[dict[str, ReliabilityPolicy]] = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
}

# Enough for slow subscribers of masks without letting memory grow.
OUTPUT_DEPTH: Final = 5
# Load readings and camera info are small; keep a few in case of bursts.
SMALL_TOPIC_DEPTH: Final = 10


def reliability_policy(name: str) -> ReliabilityPolicy:
    """The policy called ``name``; :class:`RosError` lists the accepted names."""
    try:
        return RELIABILITY_POLICIES[name]
    except KeyError as err:
        valid = ", ".join(RELIABILITY_POLICIES)
        msg = f"unknown QoS reliability {name!r}; expected one of: {valid}"
        raise RosError(msg) from err


def image_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Input image QoS: keep the newest ``depth`` frames only (latest frame wins)."""
    if depth < 1:
        raise RosError(f"image QoS depth must be >= 1, got {depth}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=reliability_policy(reliability),
        durability=DurabilityPolicy.VOLATILE,
    )


def output_qos(depth: int = OUTPUT_DEPTH) -> QoSProfile:
    """Masks, exit info and scaled camera info: reliable, volatile, keep last ``depth``."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def latched_qos() -> QoSProfile:
    """Facts that hold for the node's lifetime (``labels``): the last one reaches late joiners.

    A subscriber must ask for ``transient_local`` durability to get it on joining.
    """
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )


def small_input_qos() -> QoSProfile:
    """``system_load`` and ``camera_info`` inputs: best effort to accept any publisher."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=SMALL_TOPIC_DEPTH,
        reliability=ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )
