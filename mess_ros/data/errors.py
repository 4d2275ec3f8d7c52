"""Exceptions of the data subpackage.

:class:`DataError` covers everything a user can get wrong about label sets,
images and masks; :class:`DatasetError` narrows it to dataset folders and
specs, so a CLI can tell "your folder is broken" apart from other failures.
"""

from __future__ import annotations

from mess_ros.errors import MessError


class DataError(MessError):
    """Bad label set, image, mask or preprocessing argument."""


class DatasetError(DataError):
    """A dataset cannot be built or read: missing files, mismatched pairs, bad spec."""
