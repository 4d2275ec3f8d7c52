"""Checks shared by the spec dataclasses of the model package.

Specs arrive from YAML configs, JSON and checkpoints, where a typo or a
float in place of an int would otherwise surface deep inside torch as an
unreadable shape error; these helpers turn such input into a ModelError that
says which field was wrong and what it should be.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from mess_ros.model.errors import ModelError


def require_int(value: object, what: str, minimum: int | None = None) -> int:
    """Return ``value`` if it is a plain int (not a bool) at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{what} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ModelError(f"{what} must be >= {minimum}, got {value}")
    return value


def require_str(value: object, what: str) -> str:
    """Return ``value`` if it is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ModelError(f"{what} must be a non-empty string, got {value!r}")
    return value


def require_mapping(data: object, what: str) -> Mapping[str, Any]:
    """Return ``data`` if it is a mapping, the shape every ``from_dict`` expects."""
    if not isinstance(data, Mapping):
        raise ModelError(f"{what} must be a mapping, got {type(data).__name__}")
    return data


def check_keys(
    data: Mapping[str, Any],
    what: str,
    required: AbstractSet[str],
    optional: AbstractSet[str] = frozenset(),
) -> None:
    """Reject missing and unknown keys, so that a misspelt field is not silently ignored."""
    missing = sorted(required - data.keys())
    if missing:
        raise ModelError(f"{what} is missing {', '.join(missing)}")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        allowed = ", ".join(sorted(required | optional))
        raise ModelError(f"{what} has unknown keys {', '.join(unknown)}; allowed: {allowed}")
