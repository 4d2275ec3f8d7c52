"""Errors of the runtime (inference engine, exit policies, latency model).

The node turns these into answers a roboticist can act on: a rejected
parameter change, a refused load reading, a model that cannot run on the
requested device. Catching :class:`EngineError` therefore covers every
failure the runtime raises on purpose, while programming errors still surface.
"""

from __future__ import annotations

from collections.abc import Sequence

from mess_ros.errors import MessError


class EngineError(MessError):
    """The engine cannot be built or cannot run as configured."""


class ConfigError(EngineError):
    """A configuration (parameters, parameter file) that is not valid as a whole.

    ``problems`` holds one sentence per offending parameter so that a ROS
    parameter callback can return all of them at once instead of making the
    user fix one mistake per attempt.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class PolicyError(EngineError):
    """An exit policy or one of its inputs (thresholds, load readings) is unusable."""


class LoadValueError(PolicyError, ValueError):
    """A load reading that is NaN, infinite or outside 0..1.

    It is also a :class:`ValueError` because the reading is a bad value, so code
    that validates sensor inputs generically can catch it without knowing the
    runtime.
    """
