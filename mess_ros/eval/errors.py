"""Errors of the evaluation tools.

A bag that cannot be read at all is a :class:`BagError` naming the file; a
single frame that cannot be used is a :class:`FrameError`, which the reader
catches, counts and reports instead of stopping a long evaluation.
"""

from __future__ import annotations

from mess_ros.errors import MessError


class EvalError(MessError):
    """Base class of the evaluation errors (bad options, failed runs)."""


class BagError(EvalError):
    """A bag is missing, corrupt, truncated or lacks the topics asked for."""


class FrameError(BagError):
    """One recorded frame cannot be evaluated (undecodable image, wrong size).

    Raised by the per-message decoders; the reader turns it into a skipped,
    counted frame so one bad message never ends an evaluation. ``reason`` is
    the short category the report counts frames under (for an image the
    codec refused, its cause tag, as the node's ``dropped.<cause>``: "bad_step",
    "decode_failed" ...), the message the detail for one frame.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class LiveError(EvalError):
    """The live replay could not run: the node did not start, stopped or never answered."""
