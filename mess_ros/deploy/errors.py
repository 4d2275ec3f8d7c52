"""Errors of the deployment tools (profiling, configuration search, export, verification).

These end up printed by ``mess_profile`` and ``mess_configure`` as the only
thing a user sees, so every message names the file involved, what it holds and
what was expected instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mess_ros.errors import MessError

if TYPE_CHECKING:
    from mess_ros.deploy.problem import ScoredConfiguration


class DeployError(MessError):
    """A deployment input, search space or output that cannot be used."""


class InputMismatchError(DeployError):
    """Inputs that are each valid but do not belong together.

    Examples: a latency table profiled for another model or input size, or a
    calibration cache computed with another checkpoint. Searching with them
    would predict accuracies and latencies of a network that is not deployed.
    """


class SearchSpaceError(DeployError):
    """A search space or target that cannot be searched (empty grids, no candidate, bad limits)."""


class UnreachableTargetError(DeployError):
    """No configuration meets the target; ``closest`` is the best one can do instead.

    For a latency budget that is the fastest configuration, for an accuracy
    floor the most accurate one. It travels with the error so that the command
    line can print it and a script can decide to accept it.
    """

    def __init__(self, message: str, closest: ScoredConfiguration | None = None) -> None:
        super().__init__(message)
        self.closest = closest


class VerificationError(DeployError):
    """The verification run could not be carried out (missing images, engine failure)."""
