"""Starting and stopping the ROS side of a console script without tracebacks.

rcl parses the ROS arguments, parameter files included, inside
``remove_ros_args`` and ``rclpy.init``; a file it cannot read surfaces as an
``RCLInvalidROSArgsError`` traceback that ends in C source locations. The
parameter files are therefore read here first, so a missing, binary,
malformed or wrongly shaped file is one message naming it; whatever rcl still
refuses is turned into one line too.

Stopping is left to :class:`StopRequest` rather than to rclpy's signal
handlers: those chain to Python's, so a second SIGINT (Ctrl-C twice, or
``ros2 launch`` signalling a process group whose terminal also sent one)
raised ``KeyboardInterrupt`` in the middle of the cleanup, and Python's
default action during interpreter finalisation killed the process with
status -2 after an otherwise clean stop. Here a signal only sets a flag that
the spin loop checks, and once the process is stopping every further signal
is ignored.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Final, Generic, TypeVar

import rclpy
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from mess_ros.errors import MessError
from mess_ros.ros.errors import NodeStartupError
from mess_ros.ros.params import check_parameter_files, parameter_files

RCLError: type[Exception] = rclpy_implementation.RCLError

# rcl appends ", at /path/file.c:123" (and more of them) to its messages.
_SOURCE_LOCATION = re.compile(r",? at /\S+:\d+")
STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)
# How long the spin loop waits for work before it looks at the stop flag again.
SPIN_PERIOD_S: Final = 0.1

OptionsT = TypeVar("OptionsT")


def init_ros(args: Sequence[str]) -> list[str]:
    """Check the parameter files, then ``rclpy.init``; returns the arguments that are not ROS's.

    rclpy installs no signal handlers (see :class:`StopRequest`). Raises
    :class:`NodeStartupError` with one readable sentence when a file or a ROS
    argument cannot be used.
    """
    arguments = list(args)
    check_parameter_files(parameter_files(arguments))
    try:
        own = remove_ros_args(arguments)
        rclpy.init(args=arguments, signal_handler_options=SignalHandlerOptions.NO)
    except RCLError as err:
        raise NodeStartupError(f"invalid ROS arguments: {rcl_message(err)}") from err
    return list(own)


def fatal_logger(node_name: str) -> Callable[[str], None]:
    """Writes one FATAL line through the ROS logger of ``node_name`` (usable before init)."""

    def fatal(message: str) -> None:
        rclpy.logging.get_logger(node_name).fatal(message)

    return fatal


@dataclass(frozen=True)
class RosStart(Generic[OptionsT]):
    """A ROS process under way: its full arguments, its own options, its stop request."""

    args: list[str]
    options: OptionsT
    stop: StopRequest


def start_ros(
    argv: Sequence[str] | None,
    parse: Callable[[Sequence[str]], OptionsT],
    fatal: Callable[[str], None],
) -> RosStart[OptionsT] | None:
    """The start every ROS console script shares; None after one FATAL line if it cannot.

    ``argv`` includes the program name (``sys.argv`` when None); ``parse``
    reads the arguments that are not ROS's.
    """
    args = list(sys.argv if argv is None else argv)
    stop = StopRequest()
    try:
        return RosStart(args, parse(init_ros(args)[1:]), stop)
    except MessError as err:
        fatal(f"cannot start: {err}")
        return None


def rcl_message(err: BaseException) -> str:
    """An rcl error on one line, without the C source locations."""
    return " ".join(_SOURCE_LOCATION.sub("", str(err)).split())


class StopRequest:
    """SIGINT and SIGTERM ask the process to stop; it stops at its next look, never mid-step.

    Create it before building the node: a signal during a long start (model
    loading) then ends the process as soon as the node exists, without
    interrupting it half-built.
    """

    def __init__(self) -> None:
        self._requested = threading.Event()
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._requested.set()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def spin(self, node: Node, until: Callable[[], bool] = lambda: False) -> None:
        """Process the node's callbacks until a stop is requested, ``until()`` or shutdown."""
        while not self.requested and not until() and rclpy.ok(context=node.context):
            rclpy.spin_once(node, timeout_sec=SPIN_PERIOD_S)


def ignore_further_signals() -> None:
    """From now on SIGINT and SIGTERM are ignored: the process is already stopping.

    An ignored signal stays ignored while Python finalises (a handled one is
    reset to the default action, which would kill the process).
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
