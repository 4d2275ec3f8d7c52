"""Errors of the ROS glue.

Every malformed-input class carries a short ``cause`` tag. The node drops the
frame, logs the message (throttled) and counts drops per cause in
``/diagnostics``, so the tag is the stable name an operator sees there while
the message explains the particular frame.
"""

from __future__ import annotations

from typing import ClassVar

from mess_ros.errors import MessError


class RosError(MessError):
    """Base class of the errors raised by :mod:`mess_ros.ros`."""


class ImageConversionError(RosError):
    """An image message cannot be turned into an array (or an array into a message)."""

    cause: ClassVar[str] = "bad_image"


class UnsupportedEncodingError(ImageConversionError):
    """The ``encoding`` field names a pixel format the node does not convert."""

    cause: ClassVar[str] = "unsupported_encoding"


class EmptyImageError(ImageConversionError):
    """Width or height is zero: there is nothing to segment."""

    cause: ClassVar[str] = "zero_size"


class ImageTooLargeError(ImageConversionError):
    """The image is bigger than the configured pixel limit.

    The limit protects the node from a corrupted header that claims a huge
    size and would otherwise make it allocate gigabytes.
    """

    cause: ClassVar[str] = "too_large"


class ImageStepError(ImageConversionError):
    """``step`` (bytes per row) is smaller than one row of pixels needs."""

    cause: ClassVar[str] = "bad_step"


class ImageDataLengthError(ImageConversionError):
    """``len(data)`` differs from ``step * height``."""

    cause: ClassVar[str] = "bad_data_length"


class CompressedImageError(ImageConversionError):
    """A ``CompressedImage`` payload could not be decoded."""

    cause: ClassVar[str] = "decode_failed"


class NodeStartupError(RosError):
    """The node cannot start: configuration or model problem found before spinning."""


class DemoError(RosError):
    """The demo could not run to the end (a process died, nothing arrived...)."""
