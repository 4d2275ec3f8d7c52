"""``segmentation_node``: the multi-exit segmentation node and its entry point.

Run it with ``ros2 run mess_ros segmentation_node --ros-args --params-file
config/default.yaml`` (or the console script of the same name). Topics,
parameters and ``exit_info`` keys are described in :mod:`mess_ros.ros.core`
and :mod:`mess_ros.ros.diagnostics`.

``--lifecycle`` starts a managed node instead: ``configure`` loads the model
and creates the topics, ``activate`` starts processing, ``deactivate`` stops
it, ``cleanup`` releases the model. Without it the node configures and
activates itself at start.

SIGINT and SIGTERM both stop the node cleanly: rclpy's signal handlers shut
the context down, ``spin`` returns, the inference thread finishes its frame
and the process exits with status 0.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.utilities import remove_ros_args

from mess_ros.errors import MessError
from mess_ros.ros.core import SegmentationCore

NODE_NAME = "segmentation_node"


class SegmentationNode(Node):
    """The node that configures and activates its pipeline at construction."""

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        try:
            self.core = SegmentationCore(self)
            self.core.configure()
            self.core.activate()
        except BaseException:
            self.destroy_node()
            raise

    def close(self) -> None:
        """Stop the inference thread and release topics and model (idempotent)."""
        self.core.cleanup()


class LifecycleSegmentationNode(LifecycleNode):
    """Managed flavour: the model loads on ``configure`` and frames flow on ``activate``."""

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: Any) -> None:
        super().__init__(node_name, **node_kwargs)
        try:
            self.core = SegmentationCore(self)
        except BaseException:
            self.destroy_node()
            raise

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.core.configure()
        except MessError as err:
            self.get_logger().error(str(err))
            self.core.cleanup()
            return TransitionCallbackReturn.FAILURE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.activate()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.deactivate()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.core.cleanup()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        self.core.cleanup()


def _parse_options(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=NODE_NAME,
        description="Multi-exit semantic segmentation node. ROS arguments go after --ros-args.",
    )
    parser.add_argument(
        "--lifecycle",
        action="store_true",
        help="start as a managed (lifecycle) node: configure loads the model, activate runs it",
    )
    return parser.parse_args(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    args = list(sys.argv if argv is None else argv)
    options = _parse_options(remove_ros_args(args)[1:])
    rclpy.init(args=args)
    logger = rclpy.logging.get_logger(NODE_NAME)
    node: SegmentationNode | LifecycleSegmentationNode | None = None
    status = 0
    try:
        node = LifecycleSegmentationNode() if options.lifecycle else SegmentationNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MessError as err:
        logger.fatal(f"cannot start: {err}")
        status = 1
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
