"""ROS time stamps as integer nanoseconds, the one unit every timing in mess_ros uses.

Works on any message with a ``std_msgs/Header`` (``header.stamp.sec``,
``header.stamp.nanosec``): rclpy's messages and rosbags' alike, so the
node's side and the bag side never convert differently.
"""

from __future__ import annotations

from typing import Any, Final

NS_PER_S: Final = 1_000_000_000


def time_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (``sec``, ``nanosec``) as integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def header_stamp_ns(msg: Any) -> int:
    """``msg.header.stamp`` as integer nanoseconds."""
    return time_ns(msg.header.stamp)


def split_ns(stamp_ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of ``stamp_ns``, the fields of a ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return sec, nanosec
