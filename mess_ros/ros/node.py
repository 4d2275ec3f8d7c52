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
and the process exits with status 0; signals arriving during that cleanup
are logged and change nothing.

A node that cannot start (an unreadable parameter file, a parameter it does
not declare, a missing model...) logs one FATAL line naming the file or
parameter and exits with status 1; ``--debug`` adds the traceback of an
unexpected error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from mess_ros.console import add_debug_option, console_main, debug_requested, report_unexpected
from mess_ros.errors import MessError
from mess_ros.ros.core import SegmentationCore
from mess_ros.ros.params import parameter_files
from mess_ros.ros.startup import fatal_logger, ignore_further_signals, start_ros

NODE_NAME = "segmentation_node"


def _node_arguments(node_kwargs: dict[str, Any]) -> dict[str, Any]:
    """rclpy ``Node`` arguments of both flavours.

    Undeclared parameters are let through by rclpy only so that the core can
    refuse them itself, with the closest valid name in the reason.
    """
    return {"node_name": NODE_NAME, "allow_undeclared_parameters": True, **node_kwargs}


class SegmentationNode(Node):
    """The node that configures and activates its pipeline at construction.

    ``parameter_files`` are the ``--params-file`` arguments it was started
    with: relative artefact paths are resolved beside them.
    """

    def __init__(self, parameter_files: Sequence[Path] = (), **node_kwargs: Any) -> None:
        super().__init__(**_node_arguments(node_kwargs))
        try:
            self.core = SegmentationCore(self, parameter_files)
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

    def __init__(self, parameter_files: Sequence[Path] = (), **node_kwargs: Any) -> None:
        super().__init__(**_node_arguments(node_kwargs))
        try:
            self.core = SegmentationCore(self, parameter_files)
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
    add_debug_option(parser)
    return parser.parse_args(list(argv))


class _RosLogHandler(logging.Handler):
    """Python log records of mess_ros (the engine's warnings) printed through the ROS logger.

    Without it they reach stderr twice over: bare through Python's last-resort
    handler, and again when the node repeated them with the ROS prefix.
    """

    def __init__(self, logger: Any) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        elif record.levelno >= logging.INFO:
            self._logger.info(text)
        else:
            self._logger.debug(text)


_fatal = fatal_logger(NODE_NAME)


@console_main(NODE_NAME, report=_fatal)
def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    start = start_ros(argv, _parse_options, _fatal)
    if start is None:
        return 1
    logger = rclpy.logging.get_logger(NODE_NAME)
    package_log = logging.getLogger("mess_ros")
    package_log.addHandler(_RosLogHandler(logger))
    package_log.propagate = False
    node: SegmentationNode | LifecycleSegmentationNode | None = None
    status = 0
    # Loading and warming up the model takes seconds: say so, a signal meanwhile waits for it.
    logger.info("starting: reading parameters, loading the model")
    try:
        node_class = LifecycleSegmentationNode if start.options.lifecycle else SegmentationNode
        node = node_class(parameter_files=parameter_files(start.args))
        start.stop.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except MessError as err:
        _fatal(f"cannot start: {err}")
        status = 1
    except Exception as err:
        stage = "stopped" if node is not None else "cannot start"
        debug = debug_requested(start.args[1:])
        report_unexpected(err, debug, lambda text: _fatal(f"{stage}: {text}"))
        status = 1
    finally:
        ignore_further_signals()
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown(uninstall_handlers=False)
    return status


if __name__ == "__main__":
    sys.exit(main())
