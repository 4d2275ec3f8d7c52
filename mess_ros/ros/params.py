"""ROS parameter declaration from :class:`~mess_ros.config.SegmentationConfig`.

The configuration dataclasses are the single source of truth: names,
defaults, descriptions, ranges and read-only flags all come from
:meth:`~mess_ros.config.SegmentationConfig.parameter_specs`, so ``ros2 param describe``
shows the same text the parameter files and the deploy tool use.

Three ROS quirks are handled here rather than in the node:

* an empty list carries no element type, so array parameters are declared
  by type and then given their default; a parameter file may also say
  ``[]``, which rcl turns into an untyped (NOT_SET) override that gets the
  same treatment;
* rclpy refuses an integer for a double parameter (``deadline_ms: 50`` in a
  file, ``ros2 param set ... deadline.deadline_ms 50``); integers are turned
  into doubles before rclpy checks the type, in overrides and in sets alike;
* rclpy silently ignores a parameter file key the node never declares, so a
  typo (``pixel_treshold``) would leave the default in force. Such keys stop
  the node at start, and ``ros2 param set`` of an undeclared name is
  refused, both naming the closest valid parameter.

The parameter files of the command line are also read here (rcl does not say
which file set what): relative artefact paths are resolved beside the file
that names them, and undeclared keys are reported with the file they come from.
"""

from __future__ import annotations

import array
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterUninitializedException,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from mess_ros.config import (
    ARTEFACT_PARAMETERS,
    ConfigError,
    ParameterSpec,
    ParamValue,
    SegmentationConfig,
    parameter_file,
    unknown_parameter_problem,
)
from mess_ros.ros.errors import NodeStartupError

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

PARAMETER_TYPES: Final[dict[str, Parameter.Type]] = {
    "bool": Parameter.Type.BOOL,
    "integer": Parameter.Type.INTEGER,
    "double": Parameter.Type.DOUBLE,
    "string": Parameter.Type.STRING,
    "bool_array": Parameter.Type.BOOL_ARRAY,
    "integer_array": Parameter.Type.INTEGER_ARRAY,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}
"""rclpy's type of each :attr:`ParameterSpec.type_name` (its values are ``ParameterType``'s)."""
_DOUBLE_FROM_INTEGER: Final[dict[str, str]] = {"double": "integer", "double_array": "integer_array"}
ROS_ARGS: Final = "--ros-args"
PARAMS_FILE_FLAG: Final = "--params-file"


def parameter_type(spec: ParameterSpec) -> int:
    """The ``rcl_interfaces/ParameterType`` constant of ``spec``."""
    return int(PARAMETER_TYPES[spec.type_name])


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

    Overrides from ``--params-file`` / ``-p`` apply at declaration (integers
    given for doubles are converted first). Raises :class:`NodeStartupError`
    naming the parameter when an override has the wrong type or is outside
    its range.
    """
    _coerce_overrides(node, specs)
    for spec in specs:
        # Arrays are declared by type: an empty default would otherwise be typed BYTE_ARRAY.
        default: Any = PARAMETER_TYPES[spec.type_name] if spec.is_array else spec.default
        try:
            node.declare_parameter(spec.name, default, parameter_descriptor(spec))
        except InvalidParameterTypeException as err:
            msg = (
                f"parameter {spec.name} has a value of the wrong type: {err}; "
                f"expected {spec.type_name}, {spec.constraints}"
            )
            raise NodeStartupError(msg) from err
        except InvalidParameterValueException as err:
            msg = f"parameter {spec.name} is out of range: {err}; expected {spec.constraints}"
            raise NodeStartupError(msg) from err
    # Arrays without an override, or with ``[]`` in a file, are still unset: give them the default.
    for spec in specs:
        if spec.is_array and not _is_set(node, spec.name):
            _set_default(node, spec)
    return current_values(node, specs)


def _set_default(node: Node, spec: ParameterSpec) -> None:
    """Give a parameter declared by type its default value.

    rclpy refuses any set of a read-only parameter once declared, its first
    value included; with the parameter's own descriptor passed along, as its
    declaration does, the descriptor is applied instead of checked.
    """
    default: Any = list(spec.default)  # type: ignore[arg-type]
    parameter = Parameter(spec.name, PARAMETER_TYPES[spec.type_name], default)
    if spec.read_only:
        descriptors = {spec.name: node.describe_parameter(spec.name)}
        result = node._set_parameters_atomically_common([parameter], descriptors)
    else:
        (result,) = node.set_parameters([parameter])
    if not result.successful:
        msg = f"cannot set the default of parameter {spec.name}: {result.reason}"
        raise NodeStartupError(msg)


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


def as_declared_types(
    parameters: Sequence[Parameter[Any]], specs: Mapping[str, ParameterSpec]
) -> list[Parameter[Any]]:
    """``parameters`` with integers given for double parameters turned into doubles.

    Registered as the node's pre-set callback, so ``ros2 param set ...
    deadline.deadline_ms 50`` sets 50.0 instead of failing rclpy's type check.
    """
    return [_as_declared_type(parameter, specs) for parameter in parameters]


def _as_declared_type(parameter: Parameter[Any], specs: Mapping[str, ParameterSpec]) -> Any:
    spec = specs.get(parameter.name)
    if spec is None or spec.type_name not in _DOUBLE_FROM_INTEGER:
        return parameter
    if parameter.type_ != PARAMETER_TYPES[_DOUBLE_FROM_INTEGER[spec.type_name]]:
        return parameter
    value = parameter.value
    converted = [float(v) for v in value] if spec.is_array else float(value)
    return Parameter(parameter.name, PARAMETER_TYPES[spec.type_name], converted)


def _coerce_overrides(node: Node, specs: Sequence[ParameterSpec]) -> None:
    """Integer overrides of double parameters become doubles before rclpy checks their type.

    rclpy keeps the overrides of ``--params-file`` and ``-p`` in a private
    dictionary and offers no hook before ``declare_parameter`` reads it.
    """
    overrides: dict[str, Parameter[Any]] | None = getattr(node, "_parameter_overrides", None)
    if overrides is None:
        return
    by_name = {spec.name: spec for spec in specs}
    for name, parameter in list(overrides.items()):
        overrides[name] = _as_declared_type(parameter, by_name)


def undeclared_overrides(node: Node) -> list[str]:
    """Overrides meant for this node (its own name or a wildcard) that it never declared."""
    overrides: Mapping[str, Parameter[Any]] = getattr(node, "_parameter_overrides", {})
    return sorted(name for name in overrides if not node.has_parameter(name))


def check_no_undeclared_overrides(
    node: Node, specs: Sequence[ParameterSpec], sources: Mapping[str, Path]
) -> None:
    """NodeStartupError naming every override the node ignores, and where it comes from.

    A key the node does not declare is almost always a typo; ignoring it, as
    rclpy does, silently runs the default instead of the intended value.
    """
    unknown = undeclared_overrides(node)
    if not unknown:
        return
    origins = sorted({str(sources[name]) for name in unknown if name in sources})
    where = f" in parameter file {', '.join(origins)}" if origins else ""
    problem = unknown_parameter_problem(unknown, [spec.name for spec in specs])
    raise NodeStartupError(f"{node.get_name()} does not declare parameter(s) set{where}: {problem}")


def undeclared_problem(
    parameters: Sequence[Parameter[Any]], node: Node, specs: Mapping[str, ParameterSpec]
) -> str | None:
    """Why a parameter change naming undeclared parameters is refused (None: all declared)."""
    unknown = [p.name for p in parameters if not node.has_parameter(p.name)]
    if not unknown:
        return None
    return f"{node.get_name()}: {unknown_parameter_problem(unknown, specs)}"


# --- parameter files of the command line ---------------------------------------------------


def parameter_files(args: Sequence[str]) -> list[Path]:
    """Files given with ``--params-file`` in the ``--ros-args`` sections of ``args``, in order."""
    files: list[Path] = []
    in_ros_args = False
    tokens = iter(args)
    for token in tokens:
        if token == ROS_ARGS:
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif in_ros_args and token == PARAMS_FILE_FLAG:
            value = next(tokens, None)
            if value is not None:
                files.append(Path(value))
    return files


def check_parameter_files(files: Sequence[Path]) -> None:
    """NodeStartupError for the first file rcl could not parse, saying what it should hold."""
    for path in files:
        try:
            parameter_file.blocks(path)
        except ConfigError as err:
            raise NodeStartupError(str(err)) from err


def node_matches(pattern: str, node_fqn: str) -> bool:
    """Whether a node entry of a parameter file (``/**``, ``/robot/*``, ``seg``) names the node."""
    text = re.escape(pattern.strip("/"))
    text = text.replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.fullmatch(text, node_fqn.strip("/")) is not None


def parameter_sources(files: Sequence[Path], node_fqn: str) -> dict[str, Path]:
    """Which file last sets each parameter of the node (later files win, as in rcl)."""
    sources: dict[str, Path] = {}
    for path in files:
        try:
            blocks = parameter_file.blocks(path)
        except ConfigError as err:
            raise NodeStartupError(str(err)) from err
        for pattern, block in blocks.items():
            if node_matches(pattern, node_fqn):
                sources.update(dict.fromkeys(parameter_file.flatten(block), path))
    return sources


def anchor_to_sources(
    config: SegmentationConfig, sources: Mapping[str, Path]
) -> SegmentationConfig:
    """Relative artefact paths resolved beside the parameter file that set them."""
    for name in ARTEFACT_PARAMETERS:
        if name in sources:
            config = parameter_file.anchor_artefacts(config, sources[name].parent, [name])
    return config
