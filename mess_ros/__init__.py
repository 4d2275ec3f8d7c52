"""mess_ros: multi-exit semantic segmentation for ROS 2 robots.

Everything outside :mod:`mess_ros.ros` imports without rclpy, so training,
deployment search and offline evaluation run on a workstation with no ROS.
"""

from __future__ import annotations

__version__ = "0.1.0"
