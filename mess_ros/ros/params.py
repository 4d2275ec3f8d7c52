"""ROS parameter declaration from :class:`~mess_ros.runtime.config.SegmentationConfig`.

The configuration dataclasses are the single source of truth: names,
defaults, descriptions, ranges and read-only flags all come from
:func:`~mess_ros.runtime.config.parameter_specs`, so ``ros2 param describe``
shows the same text the parameter files and the deploy tool use.

Two ROS quirks are handled here rather than in the node:

* an empty list carries no element type, so array parameters are declared
  by type and then given their default; a parameter file may also say
  ``[]``, which rcl turns into an untyped (NOT_SET) override that gets the
  same treatment;
* rclpy does not convert an integer in a parameter file (``deadline_ms: 50``)
  to a double parameter; the resulting exception is turned into a message
  that names the parameter and the fix.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Final

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from mess_ros.ros.errors import NodeStartupError
from mess_ros.runtime.config import ParameterSpec, ParamValue

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

_TYPES: Final[dict[str, int]] = {
    "bool": ParameterType.PARAMETER_BOOL,
    "integer": ParameterType.PARAMETER_INTEGER,
    "double": ParameterType.PARAMETER_DOUBLE,
    "string": ParameterType.PARAMETER_STRING,
    "bool_array": ParameterType.PARAMETER_BOOL_ARRAY,
    "integer_array": ParameterType.PARAMETER_INTEGER_ARRAY,
    "double_array": ParameterType.PARAMETER_DOUBLE_ARRAY,
    "string_array": ParameterType.PARAMETER_STRING_ARRAY,
}
_RCLPY_TYPES: Final[dict[str, Parameter.Type]] = {
    "bool_array": Parameter.Type.BOOL_ARRAY,
    "integer_array": Parameter.Type.INTEGER_ARRAY,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}


def parameter_type(spec: ParameterSpec) -> int:
    """The ``rcl_interfaces/ParameterType`` constant of ``spec``."""
    return _TYPES[spec.type_name]


def parameter_descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """Descriptor shown by ``ros2 param describe`` and enforced by rclpy on every set.

    Ranges are only attached to scalar numbers: ROS ranges do not apply to
    array elements, which :meth:`SegmentationConfig.validate` checks instead.
    Choices and patterns go into ``additional_constraints`` as text.
    """
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=parameter_type(spec),
        description=spec.description,
        additional_constraints=f"Allowed: {spec.constraints}.",
        read_only=spec.read_only,
    )
    if spec.is_array or (spec.min is None and spec.max is None):
        return descriptor
    if spec.type_name == "integer":
        descriptor.integer_range = [
            IntegerRange(
                from_value=INT64_MIN if spec.min is None else int(spec.min),
                to_value=INT64_MAX if spec.max is None else int(spec.max),
                step=0,
            )
        ]
    elif spec.type_name == "double":
        descriptor.floating_point_range = [
            FloatingPointRange(
                from_value=-sys.float_info.max if spec.min is None else float(spec.min),
                to_value=sys.float_info.max if spec.max is None else float(spec.max),
                step=0.0,
            )
        ]
    return descriptor


def declare_parameters(node: Node, specs: Sequence[ParameterSpec]) -> dict[str, ParamValue]:
    """Declare every parameter of ``specs`` on ``node``; returns the effective values.

    Overrides from ``--params-file`` / ``-p`` apply at declaration. Raises
    :class:`NodeStartupError` naming the parameter when an override has the
    wrong type or is outside its range.
    """
    for spec in specs:
        # Arrays are declared by type: an empty default would otherwise be typed BYTE_ARRAY.
        default: Any = _RCLPY_TYPES[spec.type_name] if spec.is_array else spec.default
        try:
            node.declare_parameter(spec.name, default, parameter_descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            hint = " (write a decimal point, e.g. 50.0)" if spec.type_name == "double" else ""
            msg = (
                f"parameter {spec.name} has a value of the wrong type or range: {err}; "
                f"expected {spec.type_name}{hint}, {spec.constraints}"
            )
            raise NodeStartupError(msg) from err
    # Arrays without an override, or with ``[]`` in a file, are still unset: give them the default.
    unset: list[Parameter[Any]] = []
    for spec in specs:
        if spec.is_array and not _is_set(node, spec.name):
            unset.append(Parameter(spec.name, _RCLPY_TYPES[spec.type_name], list(spec.default)))  # type: ignore[arg-type]
    for result, parameter in zip(node.set_parameters(unset), unset, strict=True):
        if not result.successful:
            msg = f"cannot set the default of parameter {parameter.name}: {result.reason}"
            raise NodeStartupError(msg)
    return current_values(node, specs)


def _is_set(node: Node, name: str) -> bool:
    try:
        node.get_parameter(name)
    except ParameterUninitializedException:
        return False
    return True


def current_values(node: Node, specs: Sequence[ParameterSpec]) -> dict[str, ParamValue]:
    """The node's values of the parameters in ``specs``, as plain Python values."""
    return {spec.name: python_value(node.get_parameter(spec.name).value) for spec in specs}


def python_value(value: Any) -> ParamValue:
    """A parameter value with arrays as plain lists (rclpy may hand out ``array.array``)."""
    if isinstance(value, array.array | tuple | list):
        return list(value)
    if value is None:
        return []
    return value  # type: ignore[no-any-return]


def changed_values(
    parameters: Sequence[Parameter[Any]], specs: Mapping[str, ParameterSpec]
) -> dict[str, ParamValue]:
    """The subset of a parameter-set request that concerns the configuration."""
    return {p.name: python_value(p.value) for p in parameters if p.name in specs}
