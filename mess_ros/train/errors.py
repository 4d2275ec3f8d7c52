"""Errors of the training side (configuration, datasets as used for training, runs, caches).

Every message names what was wrong and what is expected, and the file when one
is involved, because these errors end up printed by ``mess_train`` as the only
thing a user sees (no traceback).
"""

from __future__ import annotations

from mess_ros.errors import MessError


class TrainError(MessError):
    """A training configuration, run directory or training input is unusable."""


class CalibrationError(TrainError):
    """A calibration cache is missing, corrupt or inconsistent with its model."""
