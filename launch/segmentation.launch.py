"""Launch ``segmentation_node`` with a per-robot parameter file and command-line overrides.

    ros2 launch mess_ros segmentation.launch.py robot:=jetson_orin image_topic:=/camera/image_raw
    ros2 launch mess_ros segmentation.launch.py params_file:=/path/to/params.yaml deadline_ms:=50.0
    ros2 launch mess_ros segmentation.launch.py cameras:="[front, left, right]"

Arguments:

* ``robot``: selects ``config/robots/<robot>.yaml``; empty uses ``config/default.yaml``.
* ``params_file``: a parameter file that replaces the robot's.
* ``cameras``: several cameras served by one node and one model, ``[front, left, right]``
  (or ``front,left,right``): each reads ``<name>/image`` and ``<name>/camera_info`` and
  publishes ``<name>/mask``, ``<name>/mask_color``, ``<name>/mask_overlay`` and
  ``<name>/exit_info`` (parameter ``cameras.names``); empty keeps the file's.
* ``namespace``, ``image_topic`` (single camera: ``image`` is remapped to it; ``camera_info``
  to the ``camera_info`` beside it, as image_transport names them; with ``cameras``, remap
  each ``<name>/image`` instead), ``device``, ``deadline_ms``, ``use_sim_time``, ``log_level``.
* ``dds_profile``: Fast DDS profile for camera-sized messages (the bundled one by default;
  empty keeps the environment's ``FASTDDS_DEFAULT_PROFILES_FILE``). Give the camera driver
  the same profile, or ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``: best-effort VGA frames
  are otherwise mostly lost between processes.

Values given on the command line win over the file: they are passed as a
dictionary keyed by the node's full name after the file, and rcl applies
parameter sources in order, the later winning. Arguments left empty
(``device``, ``deadline_ms``, ``use_sim_time``) keep the file's value.

Every argument is checked before anything starts (the overrides against the
node's own parameter schema), so ``deadline_ms:=-5`` or ``device:=tpu`` fails
the launch with one message instead of a node that dies after the launch
reported success. Everything that decides what to launch is a plain function
of the argument strings, importable without ``launch`` installed, so it is
tested directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import yaml

from mess_ros.config import ConfigError, SegmentationConfig

PACKAGE: Final = "mess_ros"
EXECUTABLE: Final = "segmentation_node"
# share/mess_ros/launch/<this file> once installed, launch/<this file> in a checkout.
SHARE: Final = Path(__file__).parent.parent
PROFILE_VARIABLE: Final = "FASTDDS_DEFAULT_PROFILES_FILE"

ARGUMENTS: Final[dict[str, tuple[str, str]]] = {
    "robot": ("", "Robot whose config/robots/<robot>.yaml to load; empty: config/default.yaml"),
    "params_file": ("", "Parameter file to load instead of the robot's"),
    "cameras": (
        "",
        "Cameras one node serves, e.g. [front, left, right] (topics <name>/image, "
        "<name>/mask ...); empty keeps the parameter file's",
    ),
    "namespace": ("", "Namespace of the node and its relative topics"),
    "image_topic": ("image", "Image topic to segment (camera_info is taken beside it)"),
    "device": ("", "Override engine.device: cpu, cuda or cuda:N"),
    "deadline_ms": ("", "Override deadline.deadline_ms (0 disables deadlines)"),
    "use_sim_time": (
        "",
        "Use /clock (bag replay with --clock): true or false; empty keeps the file's",
    ),
    "log_level": ("info", "Logging level: debug, info, warn, error or fatal"),
    "dds_profile": (
        str(SHARE / "config" / "fastdds_large_data.xml"),
        "Fast DDS XML profile for large images; empty keeps the environment's",
    ),
}


class LaunchArgumentError(ValueError):
    """A launch argument that cannot be used, with what is expected."""


def available_robots(share: Path = SHARE) -> list[str]:
    return sorted(p.stem for p in (share / "config" / "robots").glob("*.yaml"))


def select_params_file(robot: str, params_file: str, share: Path = SHARE) -> Path:
    """The parameter file to load: ``params_file``, else the robot's, else the default."""
    if params_file:
        path = Path(params_file).expanduser()
        if not path.is_file():
            raise LaunchArgumentError(f"params_file {path} does not exist")
        return path
    if not robot:
        return share / "config" / "default.yaml"
    path = share / "config" / "robots" / f"{robot}.yaml"
    if not path.is_file():
        robots = ", ".join(available_robots(share)) or "(none)"
        msg = f"no parameter file for robot {robot!r} ({path}); available robots: {robots}"
        raise LaunchArgumentError(msg)
    return path


def parameter_overrides(device: str, deadline_ms: str, use_sim_time: str) -> dict[str, Any]:
    """Command-line values as typed, validated parameters of the node."""
    overrides: dict[str, Any] = {}
    if use_sim_time:
        overrides["use_sim_time"] = parse_bool("use_sim_time", use_sim_time)
    if device:
        overrides["engine.device"] = check_parameter("device", "engine.device", device)
    if deadline_ms:
        try:
            value = float(deadline_ms)
        except ValueError as err:
            msg = f"deadline_ms must be a number of milliseconds, got {deadline_ms!r}"
            raise LaunchArgumentError(msg) from err
        overrides["deadline.deadline_ms"] = check_parameter(
            "deadline_ms", "deadline.deadline_ms", value
        )
    return overrides


def camera_overrides(cameras: str, image_topic: str) -> dict[str, Any]:
    """``cameras:=[front, left, right]`` (or ``front,left,right``) as ``cameras.names``.

    A single ``image_topic`` remapping cannot say which camera it is meant
    for, so it is refused together with cameras.
    """
    text = cameras.strip()
    if not text:
        return {}
    try:
        value = yaml.safe_load(text) if text.startswith("[") else text.split(",")
    except yaml.YAMLError as err:
        raise LaunchArgumentError(f"cameras:={cameras!r} is not a list of names") from err
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"cameras:={cameras!r} must be a list of names, e.g. [front, left, right]"
        raise LaunchArgumentError(msg)
    names = [v.strip() for v in value if v.strip()]
    if image_topic not in ("", "image"):
        msg = (
            f"image_topic:={image_topic!r} remaps the single camera's topic; with cameras, "
            "remap each <name>/image instead"
        )
        raise LaunchArgumentError(msg)
    return {"cameras.names": check_parameter("cameras", "cameras.names", names)}


def check_parameter(argument: str, name: str, value: Any) -> Any:
    """``value`` when the node accepts it for parameter ``name``; else why not."""
    try:
        SegmentationConfig.from_parameters({name: value})
    except ConfigError as err:
        why = "; ".join(err.problems)
        raise LaunchArgumentError(f"{argument}:={value!r} cannot be used: {why}") from err
    return value


def parse_bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise LaunchArgumentError(f"{name} must be true or false, got {text!r}")


LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


def parse_log_level(text: str) -> str:
    """Checked here because rcl only warns about a bad level and then logs at the default."""
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise LaunchArgumentError(f"log_level must be one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return level


def remappings(image_topic: str) -> list[tuple[str, str]]:
    """``image`` (and so ``image/compressed``) to ``image_topic``; ``camera_info`` beside it."""
    if not image_topic or image_topic == "image":
        return []
    parent, _, _ = image_topic.rstrip("/").rpartition("/")
    info_topic = f"{parent}/camera_info" if parent or image_topic.startswith("/") else "camera_info"
    return [("image", image_topic), ("camera_info", info_topic)]


def environment(dds_profile: str, current: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment variables to set for the node (the DDS profile, when one is given)."""
    if not dds_profile:
        return {}
    if not Path(dds_profile).is_file():
        raise LaunchArgumentError(f"dds_profile {dds_profile} does not exist")
    return {PROFILE_VARIABLE: dds_profile} if current.get(PROFILE_VARIABLE) != dds_profile else {}


def generate_launch_description() -> Any:
    """Entry point of ``ros2 launch``."""
    # Module paths rather than ``from launch import ...``: a type checker run from the
    # repository root would otherwise take this launch/ folder for the package.
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
    from launch.launch_context import LaunchContext
    from launch.launch_description import LaunchDescription
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    def launch_node(context: LaunchContext) -> list[Any]:
        def arg(name: str) -> str:
            return str(LaunchConfiguration(name).perform(context))

        params_file = select_params_file(arg("robot"), arg("params_file"))
        overrides = parameter_overrides(arg("device"), arg("deadline_ms"), arg("use_sim_time"))
        overrides.update(camera_overrides(arg("cameras"), arg("image_topic")))
        actions: list[Any] = [
            SetEnvironmentVariable(name, value)
            for name, value in environment(arg("dds_profile")).items()
        ]
        actions.append(
            Node(
                package=PACKAGE,
                executable=EXECUTABLE,
                name=EXECUTABLE,
                namespace=arg("namespace"),
                parameters=[str(params_file), overrides],
                remappings=remappings(arg("image_topic")),
                arguments=["--ros-args", "--log-level", parse_log_level(arg("log_level"))],
                output="screen",
                emulate_tty=True,
            )
        )
        return actions

    declared = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=launch_node)])
