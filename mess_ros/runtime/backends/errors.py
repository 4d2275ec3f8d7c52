"""Errors of the execution backends (export, runtimes, engines built from the export).

They are :class:`~mess_ros.runtime.errors.EngineError`\\ s, so a node or a tool
that catches the engine's errors reports a backend problem the same way as
any other reason the network cannot run.
"""

from __future__ import annotations

from mess_ros.runtime.errors import EngineError


class BackendError(EngineError):
    """A backend cannot run the network as configured (export, session or engine build failed)."""


class RuntimeMissingError(BackendError):
    """The runtime a backend needs is not installed; the message says what to install."""
