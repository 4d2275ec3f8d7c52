"""Errors of the configuration schema (node parameters and parameter files).

Kept apart from the runtime's family so that reading a parameter file never
imports the engine; the engine raises :class:`ConfigError` too when a valid
configuration does not fit the loaded model.
"""

from __future__ import annotations

from collections.abc import Sequence

from mess_ros.errors import MessError


class ConfigError(MessError):
    """A configuration (parameters, parameter file) that is not valid as a whole.

    ``problems`` holds one sentence per offending parameter so that a ROS
    parameter callback can return all of them at once instead of making the
    user fix one mistake per attempt.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


def invalid_configuration(problems: Sequence[str]) -> ConfigError:
    """The error for a configuration with these problems (one sentence each)."""
    return ConfigError("invalid configuration: " + "; ".join(problems), problems)
