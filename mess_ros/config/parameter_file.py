"""ROS 2 parameter files (``<node>: ros__parameters: ...``) of the node's configuration.

Written for a robot by ``mess_configure``, read by the node (through rcl),
the launch file and the CLIs. The writer produces text that PyYAML and rcl's
own parser read back to exactly the same values; the reader reports every
problem with the file's name instead of rcl's bare parser messages, picks the
entry of one node as ROS does, and resolves the artefact files a parameter
file names (checkpoint, latency table, exit model) beside the file itself:
:func:`write` and :func:`text` for a configuration, :func:`read` for a file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Final

import yaml

from mess_ros.config.errors import ConfigError
from mess_ros.config.fields import ParamValue
from mess_ros.config.schema import (
    ARTEFACT_PARAMETERS,
    SPECS,
    WILDCARD_NODE,
    SegmentationConfig,
)
from mess_ros.textfiles import read_text, write_text_atomically

ROS_PARAMETERS_KEY: Final = "ros__parameters"
EXPECTED: Final = "a ROS 2 parameter YAML file ('/**: ros__parameters: ...')"


def write(
    config: SegmentationConfig,
    path: str | Path,
    node_name: str = WILDCARD_NODE,
    header_comment: str = "",
    *,
    describe: bool = True,
) -> None:
    """Write ``config`` as a standard ROS 2 parameter file, replacing ``path`` atomically.

    Parameters are nested by section and, with ``describe``, preceded by
    their description as a comment so the file documents itself. Empty
    lists are written as comments: ROS cannot type an empty array in a
    parameter file, and the declared default (empty) applies instead.
    """
    config.validate()
    content = text(config, node_name, header_comment, describe=describe)
    target = Path(path)
    try:
        write_text_atomically(target, content)
    except OSError as err:
        raise ConfigError(f"cannot write parameter file {target}: {err}") from err


def text(
    config: SegmentationConfig,
    node_name: str = WILDCARD_NODE,
    header_comment: str = "",
    *,
    describe: bool = True,
) -> str:
    """The text :func:`write` writes."""
    lines = [f"# {line}".rstrip() for line in header_comment.splitlines()]
    lines.append(f"{json.dumps(node_name)}:")
    lines.append(f"  {ROS_PARAMETERS_KEY}:")
    params = config.to_parameters()
    for section in dict.fromkeys(spec.section for spec in SPECS):
        specs = [spec for spec in SPECS if spec.section == section]
        written = [spec for spec in specs if params[spec.name] != []]
        # A section of empty lists only would be an empty mapping, which rcl refuses.
        lines.append(f"    {section}:" if written else f"    # {section}:")
        for spec in specs:
            if describe:
                lines.append(f"      # {spec.description} Allowed: {spec.constraints}.")
            if spec in written:
                lines.append(f"      {spec.attr}: {_yaml_value(params[spec.name])}")
            else:
                lines.append(f"      # {spec.attr}: []  (empty: the declared default applies)")
    return "\n".join(lines) + "\n"


def read(
    path: str | Path, node_name: str | None = None, base: SegmentationConfig | None = None
) -> SegmentationConfig:
    """The configuration a parameter file sets on top of ``base``; every error names the file.

    ``node_name`` picks the entry for that node (merged over ``/**`` as ROS
    does); without it the file must hold one entry, or a ``/**`` one.
    """
    source = Path(path)
    found = blocks(source)
    try:
        params = select(found, node_name)
        config = SegmentationConfig.from_parameters(params, base)
    except ConfigError as err:
        problems = [f"{source}: {p}" for p in err.problems]
        raise ConfigError(f"parameter file {source}: {err}", problems) from err
    return anchor_artefacts(config, source.parent, [n for n in ARTEFACT_PARAMETERS if n in params])


def blocks(path: str | Path) -> dict[str, Mapping[str, object]]:
    """``{node name: ros__parameters mapping}`` of a ROS 2 parameter file.

    Everything rcl would refuse with a bare parser message (a missing file,
    bytes that are not UTF-8 text, YAML syntax errors, a list at the top, no
    ``ros__parameters`` section) raises one :class:`ConfigError` naming the
    file and what it should hold.
    """
    source = Path(path)
    content = read_text(source, "parameter file", EXPECTED, ConfigError)
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as err:
        raise ConfigError(
            f"parameter file {source} is not valid YAML: {_yaml_problem(err)}"
        ) from err
    if not isinstance(data, Mapping):
        found = "empty" if data is None else f"a {type(data).__name__}"
        msg = (
            f"parameter file {source} must map node names to parameters, but its top level is "
            f"{found}; expected {EXPECTED}"
        )
        raise ConfigError(msg)
    result = dict(_parameter_blocks(data, ""))
    if not result:
        key = ROS_PARAMETERS_KEY
        msg = f"parameter file {source}: no '<node>: {key}:' section found (expected '/**: {key}:')"
        raise ConfigError(msg)
    return result


def select(found: Mapping[str, Mapping[str, object]], node_name: str | None) -> dict[str, object]:
    """The flat parameters of ``node_name``'s entry merged over ``/**`` (see :func:`read`)."""
    if node_name is not None:
        wanted = [n for n in (WILDCARD_NODE, node_name, node_name.lstrip("/")) if n in found]
        if not wanted:
            raise ConfigError(
                f"no parameters for node {node_name!r}; the file has: {', '.join(found)}"
            )
    elif len(found) == 1:
        wanted = list(found)
    elif WILDCARD_NODE in found:
        wanted = [WILDCARD_NODE]
    else:
        raise ConfigError(
            f"the file has parameters for several nodes ({', '.join(found)}); name the node"
        )
    params: dict[str, object] = {}
    for name in dict.fromkeys(wanted):
        params.update(flatten(found[name]))
    return params


def flatten(params: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested ``ros__parameters`` as flat dotted names, as rcl reads them."""
    flat: dict[str, object] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name))
        else:
            flat[name] = value
    return flat


def anchor_artefacts(
    config: SegmentationConfig, directory: Path, names: Iterable[str] = ARTEFACT_PARAMETERS
) -> SegmentationConfig:
    """``config`` with the relative artefact paths among ``names`` that exist in ``directory``
    made absolute.

    A parameter file names its checkpoint and latency table relative to itself,
    so the files can move together (a checkout, a pip prefix, a colcon install)
    and work whatever the current directory. A relative name not found there
    is left for the engine to look up among the packaged models; the current
    directory is never searched.
    """
    params = config.to_parameters()
    updates: dict[str, object] = {}
    for name in names:
        value = params[name]
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            candidate = directory / value
            if candidate.is_file():
                updates[name] = str(candidate.resolve())
    return SegmentationConfig.from_parameters(updates, config) if updates else config


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: what is wrong and where (PyYAML's text spans several)."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(err).split())


def _yaml_value(value: ParamValue) -> str:
    """One YAML scalar or flow list that both PyYAML and ROS's rcl parser read back exactly."""
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return _yaml_scalar(value)


def _yaml_scalar(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        number = repr(value)
        mantissa, e, exponent = number.partition("e")
        if "." not in mantissa:  # YAML 1.1 needs a dot to read it as a float
            mantissa += ".0"
        return mantissa + e + exponent
    return json.dumps(value)  # a JSON string is a valid double-quoted YAML scalar


def _parameter_blocks(data: object, prefix: str) -> Iterator[tuple[str, Mapping[str, object]]]:
    """``(node path, ros__parameters mapping)`` pairs, following namespace nesting."""
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        if not isinstance(value, Mapping):
            continue
        name = f"{prefix}/{key}".replace("//", "/") if prefix else str(key)
        if ROS_PARAMETERS_KEY in value:
            block = value[ROS_PARAMETERS_KEY]
            yield name, block if isinstance(block, Mapping) else {}
        else:
            yield from _parameter_blocks(value, name)
