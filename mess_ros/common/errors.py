"""Errors of the shared file formats (latency tables)."""

from __future__ import annotations

from mess_ros.errors import MessError


class LatencyTableError(MessError):
    """A latency table file that cannot be read, is malformed, or does not fit the model."""
