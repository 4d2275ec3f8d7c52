"""Exceptions of the data subpackage.

:class:`DataError` covers everything a user can get wrong about label sets,
images and masks; :class:`DatasetError` narrows it to dataset folders and
specs, so a CLI can tell "your folder is broken" apart from other failures.
:class:`ImageFormatError` is an image message or array that does not fit its
encoding, tagged with the check it failed.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

from mess_ros.errors import MessError

# The checks an image can fail, as stable tags (see ImageFormatError.cause).
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


class DataError(MessError):
    """Bad label set, image, mask or preprocessing argument."""


class DatasetError(DataError):
    """A dataset cannot be built or read: missing files, mismatched pairs, bad spec."""


class ImageFormatError(DataError):
    """An image message or array does not fit its encoding, size or payload format.

    ``cause`` is a short stable tag naming the failed check (one of
    :data:`ImageFormatCause`): the node counts dropped frames and the bag reader
    counts skipped frames under it, so callers branch on the tag while the
    message explains the particular image.
    """

    def __init__(self, message: str, cause: ImageFormatCause) -> None:
        super().__init__(message)
        self.cause = cause
