"""One parameter of the node: how it is declared, described and checked.

A section of the configuration is a dataclass whose fields are declared with
:func:`parameter`; :func:`resolve_specs` turns them into
:class:`ParameterSpec` objects, the single description of a parameter that
the node declares ROS parameters from, the parameter file documents and
validation enforces.
"""

from __future__ import annotations

import array
import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias, cast, get_type_hints

from mess_ros.config.checks import KINDS, as_kind

ParamValue: TypeAlias = bool | int | float | str | list[bool] | list[int] | list[float] | list[str]
"""Value types a ROS 2 parameter of this package can take."""

_TYPE_NAMES: Final[Mapping[type[Any], str]] = {
    bool: "bool",
    int: "integer",
    float: "double",
    str: "string",
}


def parameter(
    default: ParamValue,
    description: str,
    *,
    read_only: bool = False,
    min_value: float | None = None,
    max_value: float | None = None,
    choices: Sequence[str] = (),
    pattern: str = "",
    pattern_text: str = "",
) -> Any:
    """A section field that is a parameter; ranges, choices and patterns apply per list element.

    The keyword names of the metadata are those of :class:`ParameterSpec`, so a
    field resolves to a spec without translation.
    """
    metadata = {
        "description": description,
        "read_only": read_only,
        "min": min_value,
        "max": max_value,
        "choices": tuple(choices),
        "pattern": pattern,
        "pattern_text": pattern_text,
    }
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=lambda: list(items), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ParameterSpec:
    """Everything about one parameter: its ROS declaration, its documentation, its checks.

    ``kind`` is the element type of an array parameter, explicit because an
    empty list default carries none and ROS needs it to declare the array.
    """

    name: str  # dotted: "<section>.<field>"
    kind: type[Any]  # bool, int, float or str
    is_array: bool
    default: ParamValue
    description: str
    read_only: bool = False
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    pattern_text: str = ""

    @property
    def section(self) -> str:
        return self.name.partition(".")[0]

    @property
    def attr(self) -> str:
        return self.name.partition(".")[2]

    @property
    def type_name(self) -> str:
        """bool, integer, double, string, or one of them with ``_array`` (ROS's names)."""
        base = _TYPE_NAMES[self.kind]
        return f"{base}_array" if self.is_array else base

    @property
    def constraints(self) -> str:
        """What the parameter accepts, as the end of a sentence ("a number in [0, 1]")."""
        kind = KINDS[self.kind]
        if self.choices:
            text = "one of: " + ", ".join(self.choices)
        elif self.pattern_text:
            text = self.pattern_text
        elif self.min is not None and self.max is not None:
            text = f"{kind} in [{_fmt_number(self.min)}, {_fmt_number(self.max)}]"
        else:
            text = kind
        return f"a list, each {text}" if self.is_array else text

    def coerce(self, value: object) -> ParamValue | None:
        """``value`` converted to the parameter's type, or None when it is of another type.

        An empty list is accepted for any array because ROS cannot type an
        empty array; ``array.array`` is what rclpy hands out for arrays.
        """
        if not self.is_array:
            return as_kind(self.kind, value)
        if isinstance(value, str | bytes) or not isinstance(value, list | tuple | array.array):
            return None
        items = [as_kind(self.kind, item) for item in value]
        if any(item is None for item in items):
            return None
        return cast(ParamValue, items)

    def fits(self, value: ParamValue) -> bool:
        """Whether an already typed value passes the range, choice and pattern checks."""
        values: list[Any] = list(value) if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, float) and not math.isfinite(item):
                return False
            if self.choices and item not in self.choices:
                return False
            if self.pattern and not re.fullmatch(self.pattern, str(item)):
                return False
            if isinstance(item, int | float) and not isinstance(item, bool):
                if self.min is not None and item < self.min:
                    return False
                if self.max is not None and item > self.max:
                    return False
        return True

    def check(self, value: object) -> tuple[ParamValue | None, str]:
        """``(typed value, "")`` or ``(None, problem sentence)`` for a raw value."""
        converted = self.coerce(value)
        if converted is None or not self.fits(converted):
            return None, parameter_problem(self.name, value, f"expected {self.constraints}")
        return converted, ""


def parameter_problem(name: str, value: object, why: str) -> str:
    """The sentence every configuration problem is reported with."""
    return f"{name} = {value!r} is not allowed: {why}"


def _fmt_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def resolve_specs(sections: Mapping[str, type[Any]]) -> tuple[ParameterSpec, ...]:
    """The specs of every field of the section dataclasses, in declaration order."""
    specs = []
    for section, cls in sections.items():
        hints = get_type_hints(cls)
        defaults = cls()
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            is_array = getattr(hint, "__origin__", None) is list
            kind = hint.__args__[0] if is_array else hint
            if kind not in KINDS:  # pragma: no cover - guards future edits
                raise TypeError(f"unsupported parameter type {hint!r} for {section}.{f.name}")
            default = getattr(defaults, f.name)
            specs.append(
                ParameterSpec(
                    name=f"{section}.{f.name}",
                    kind=kind,
                    is_array=is_array,
                    default=list(default) if is_array else default,
                    **f.metadata,
                )
            )
    return tuple(specs)
