"""Errors of the model subsystem.

Building a network from a spec, looking up exits and reading checkpoints are
the places where user input (names typed in a config, files on disk) meets the
model; these classes let callers report such mistakes without catching
programming errors.
"""

from __future__ import annotations

from typing import Final

from mess_ros.config.checks import Checks
from mess_ros.errors import MessError


class ModelError(MessError):
    """A model spec, name or request that the network cannot honour."""


class CheckpointError(ModelError):
    """A checkpoint file that cannot be written or read back; the message names the file."""


class WeightImportError(ModelError):
    """A weights file of other code that cannot become MESSNet weights; names file and tensors."""


checks: Final = Checks(ModelError)
"""The value checks of model specs (from YAML configs, JSON and checkpoints), raising ModelError."""
