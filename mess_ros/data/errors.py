"""Exceptions of the data subpackage.

:class:`DataError` covers everything a user can get wrong about label sets,
images and masks; :class:`DatasetError` narrows it to dataset folders and
specs, so a CLI can tell "your folder is broken" apart from other failures.
:class:`ImageFormatError` is an image message or array that does not fit its
encoding: one subclass per check, each with the stable ``cause`` tag the node
counts dropped frames under (``dropped.<cause>`` in ``/diagnostics``) and the
bag reader counts skipped frames under, so the same bad image has the same
name everywhere.
"""

from __future__ import annotations

from typing import ClassVar, Final, Literal, TypeAlias

from mess_ros.errors import MessError

ImageFormatCause: TypeAlias = Literal[
    "unsupported_encoding",
    "zero_size",
    "too_large",
    "bad_step",
    "bad_data_length",
    "decode_failed",
    "encode_failed",
    "bad_array",
]
"""The checks an image can fail, as stable tags (see :attr:`ImageFormatError.cause`)."""


class DataError(MessError):
    """Bad label set, image, mask or preprocessing argument."""


class DatasetError(DataError):
    """A dataset cannot be built or read: missing files, mismatched pairs, bad spec."""


class ImageFormatError(DataError):
    """An image message or array does not fit its encoding, size or payload format.

    Only its subclasses are raised: ``cause`` names the failed check, so
    callers branch on the tag while the message explains the particular image.
    """

    cause: ClassVar[ImageFormatCause]


class UnsupportedEncodingError(ImageFormatError):
    """The encoding (or compressed format) names a pixel format that is not converted."""

    cause: ClassVar[ImageFormatCause] = "unsupported_encoding"


class EmptyImageError(ImageFormatError):
    """Width or height is zero, or a compressed payload is empty: nothing to segment."""

    cause: ClassVar[ImageFormatCause] = "zero_size"


class ImageTooLargeError(ImageFormatError):
    """The image is bigger than the pixel limit.

    The limit protects a reader from a corrupted header that claims a huge
    size and would otherwise make it allocate gigabytes.
    """

    cause: ClassVar[ImageFormatCause] = "too_large"


class ImageStepError(ImageFormatError):
    """``step`` (bytes per row) is smaller than one row of pixels needs, or padding is negative."""

    cause: ClassVar[ImageFormatCause] = "bad_step"


class ImageDataLengthError(ImageFormatError):
    """``len(data)`` differs from ``step * height``."""

    cause: ClassVar[ImageFormatCause] = "bad_data_length"


class ImageDecodeError(ImageFormatError):
    """A compressed payload could not be decoded."""

    cause: ClassVar[ImageFormatCause] = "decode_failed"


class ImageEncodeError(ImageFormatError):
    """An array could not be compressed."""

    cause: ClassVar[ImageFormatCause] = "encode_failed"


class ImageArrayError(ImageFormatError):
    """An array to be sent or written does not have the shape or type its encoding needs."""

    cause: ClassVar[ImageFormatCause] = "bad_array"


DECODE_ERRORS: Final = (
    UnsupportedEncodingError,
    EmptyImageError,
    ImageTooLargeError,
    ImageStepError,
    ImageDataLengthError,
    ImageDecodeError,
)
"""What reading a received or recorded frame can fail with (the other two concern writing)."""
