"""Errors of the ROS glue.

A malformed image is not one of these: it is the codec's
:class:`mess_ros.data.errors.ImageFormatError`, whose ``cause`` tag the node
counts drops under in ``/diagnostics``, as the bag reader counts skipped frames.
"""

from __future__ import annotations

from mess_ros.errors import MessError


class RosError(MessError):
    """Base class of the errors raised by :mod:`mess_ros.ros`."""


class NodeStartupError(RosError):
    """The node cannot start: configuration or model problem found before spinning."""


class DemoError(RosError):
    """The demo could not run to the end (a process died, nothing arrived...)."""
