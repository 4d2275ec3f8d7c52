"""Errors of the runtime (inference engine, exit policies, latency model).

The node turns these into answers a roboticist can act on: a refused load
reading, a model that cannot run on the requested device. Catching
:class:`EngineError` therefore covers every failure the runtime raises on
purpose, while programming errors still surface; a configuration that does
not fit the loaded model is a :class:`mess_ros.config.ConfigError`.
"""

from __future__ import annotations

from mess_ros.errors import MessError


class EngineError(MessError):
    """The engine cannot be built or cannot run as configured."""


class PolicyError(EngineError):
    """An exit policy or one of its inputs (thresholds, load readings) is unusable."""


class LoadValueError(PolicyError, ValueError):
    """A load reading that is NaN, infinite or outside 0..1.

    It is also a :class:`ValueError` because the reading is a bad value, so code
    that validates sensor inputs generically can catch it without knowing the
    runtime.
    """
