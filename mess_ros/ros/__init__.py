"""ROS 2 glue of mess_ros: the node, its client and launcher, live replay, the demo.

This is the only subpackage that imports rclpy; what the node runs comes from
:mod:`mess_ros.runtime`. Modules are imported explicitly so that, for example,
the conversions do not load torch.
"""

from __future__ import annotations
