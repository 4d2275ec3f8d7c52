"""Strict checks of plain values, shared by every schema of the package.

Node parameters, training configs and model specs all arrive as plain data
(YAML, JSON, ROS parameters, checkpoints) in which ``true`` would pass for 1
and ``2.5`` for a layer count; a slip of that kind surfaces much later as an
unreadable shape error or a silently different run. One set of checks turns
such input into one sentence naming the field and what it should be. Each
subpackage raises its own error family, so the checks are bound to an error
class (:class:`Checks`) rather than raising a common one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any, Final, TypeAlias, TypeVar

from mess_ros.errors import MessError

Scalar: TypeAlias = bool | int | float | str
"""A plain value of one of the kinds below."""

KINDS: Final[Mapping[type[Any], str]] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
}
"""The scalar kinds a schema field can have, with how a message names what they accept."""

_T = TypeVar("_T")


def as_kind(kind: type[Any], value: object) -> Scalar | None:
    """``value`` as a ``kind`` (one of :data:`KINDS`), or None when it is not one.

    A bool is never taken for a number (Python counts it as an int, YAML
    users do not), and an integer is taken for a float (YAML reads ``100``
    where ``100.0`` was meant).
    """
    if kind is bool:
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind is int:
        return value if isinstance(value, int) else None
    if kind is float:
        return float(value) if isinstance(value, int | float) else None
    return value if isinstance(value, str) else None


class Checks:
    """The checks, raising ``error`` (the caller's own family) with ``what`` named."""

    def __init__(self, error: type[MessError]) -> None:
        self.error = error

    def kind(self, kind: type[_T], value: object, what: str) -> _T:
        """``value`` as a ``kind`` (see :func:`as_kind`)."""
        converted = as_kind(kind, value)
        if converted is None:
            raise self.error(f"{what} must be {KINDS[kind]}, got {value!r}")
        return converted  # type: ignore[return-value]

    def integer(self, value: object, what: str, minimum: int | None = None) -> int:
        """``value`` if it is a plain int (not a bool), at least ``minimum``."""
        number = self.kind(int, value, what)
        if minimum is not None and number < minimum:
            raise self.error(f"{what} must be >= {minimum}, got {number}")
        return number

    def number(self, value: object, what: str) -> float:
        return self.kind(float, value, what)

    def boolean(self, value: object, what: str) -> bool:
        return self.kind(bool, value, what)

    def string(self, value: object, what: str, *, non_empty: bool = False) -> str:
        """``value`` if it is a string (with ``non_empty``, one of at least one character)."""
        if non_empty and (not isinstance(value, str) or not value):
            raise self.error(f"{what} must be a non-empty string, got {value!r}")
        return self.kind(str, value, what)

    def strings(self, value: object, what: str) -> list[str]:
        """A list (or tuple) of strings as a list."""
        if not isinstance(value, list | tuple):
            raise self.error(f"{what} must be a list of strings, got {value!r}")
        return [self.string(item, what) for item in value]

    def pair(self, value: object, what: str, item: Callable[[object, str], _T]) -> tuple[_T, _T]:
        """A list (or tuple) of two values, each checked by ``item``."""
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise self.error(f"{what} must be a list of two values, got {value!r}")
        return (item(value[0], what), item(value[1], what))

    def mapping(self, value: object, what: str) -> Mapping[str, Any]:
        """``value`` if it is a mapping, the shape every ``from_dict`` expects."""
        if not isinstance(value, Mapping):
            raise self.error(f"{what} must be a mapping, got {type(value).__name__}")
        return value

    def keys(
        self,
        data: Mapping[str, Any],
        what: str,
        required: AbstractSet[str],
        optional: AbstractSet[str] = frozenset(),
    ) -> None:
        """Reject missing and unknown keys, so that a misspelt field is not silently ignored."""
        missing = sorted(required - data.keys())
        if missing:
            raise self.error(f"{what} is missing {', '.join(missing)}")
        unknown = sorted(set(data) - required - optional)
        if unknown:
            allowed = ", ".join(sorted(required | optional))
            raise self.error(f"{what} has unknown keys {', '.join(unknown)}; allowed: {allowed}")
