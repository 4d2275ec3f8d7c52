"""The launch file's decisions (file selection, overrides, remappings) without launch_ros."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from mess_ros.config import SegmentationConfig, parameter_file

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "segmentation.launch.py"


def load_launch_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("segmentation_launch", LAUNCH_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def launch() -> ModuleType:
    return load_launch_module()


@pytest.fixture
def share(tmp_path: Path) -> Path:
    """A package share directory with a default and two robot files."""
    (tmp_path / "config" / "robots").mkdir(parents=True)
    parameter_file.write(SegmentationConfig(), tmp_path / "config" / "default.yaml")
    for robot in ("rover", "arm"):
        parameter_file.write(SegmentationConfig(), tmp_path / "config" / "robots" / f"{robot}.yaml")
    return tmp_path


def test_arguments_are_the_documented_ones(launch: ModuleType) -> None:
    assert set(launch.ARGUMENTS) == {
        "robot",
        "params_file",
        "cameras",
        "namespace",
        "image_topic",
        "device",
        "deadline_ms",
        "use_sim_time",
        "log_level",
        "dds_profile",
    }
    # The bundled defaults exist in the checkout.
    assert Path(launch.ARGUMENTS["dds_profile"][0]).is_file()
    assert launch.select_params_file("", "").is_file()


def test_params_file_selection(launch: ModuleType, share: Path, tmp_path: Path) -> None:
    assert launch.select_params_file("", "", share) == share / "config" / "default.yaml"
    assert launch.select_params_file("rover", "", share) == share / "config/robots/rover.yaml"
    custom = tmp_path / "custom.yaml"
    custom.write_text("{}")
    assert launch.select_params_file("rover", str(custom), share) == custom
    with pytest.raises(launch.LaunchArgumentError, match="available robots: arm, rover"):
        launch.select_params_file("hovercraft", "", share)
    with pytest.raises(launch.LaunchArgumentError, match="does not exist"):
        launch.select_params_file("", str(tmp_path / "nope.yaml"), share)


def test_overrides_are_typed(launch: ModuleType) -> None:
    # Empty arguments keep the parameter file's values.
    assert launch.parameter_overrides("", "", "") == {}
    assert launch.parameter_overrides("", "", "false") == {"use_sim_time": False}
    overrides = launch.parameter_overrides("cuda:1", "50", "True")
    assert overrides == {
        "use_sim_time": True,
        "engine.device": "cuda:1",
        "deadline.deadline_ms": 50.0,
    }
    assert isinstance(overrides["deadline.deadline_ms"], float)
    # Overrides use the node's own parameter names.
    names = {spec.name for spec in SegmentationConfig.parameter_specs()}
    assert {"engine.device", "deadline.deadline_ms"} <= names
    with pytest.raises(launch.LaunchArgumentError, match="deadline_ms"):
        launch.parameter_overrides("", "fast", "false")
    with pytest.raises(launch.LaunchArgumentError, match="use_sim_time"):
        launch.parameter_overrides("", "", "maybe")


@pytest.mark.parametrize(
    ("device", "deadline_ms", "expected"),
    [
        ("tpu", "", r"device:='tpu' cannot be used: .*expected cpu, cuda or cuda:N"),
        ("", "-5", r"deadline_ms:=-5\.0 cannot be used: .*\[0, 3600000\]"),
        ("cuda:x", "", r"device:='cuda:x'"),
    ],
)
def test_overrides_are_validated_before_anything_starts(
    launch: ModuleType, device: str, deadline_ms: str, expected: str
) -> None:
    """Checked against the node's own parameter schema, as log_level is checked."""
    with pytest.raises(launch.LaunchArgumentError, match=expected):
        launch.parameter_overrides(device, deadline_ms, "")


@pytest.mark.parametrize("text", ["[front, left, right]", "front,left,right", "[front,left,right]"])
def test_cameras_become_the_camera_names(launch: ModuleType, text: str) -> None:
    assert launch.camera_overrides(text, "image") == {"cameras.names": ["front", "left", "right"]}


def test_cameras_are_checked_before_anything_starts(launch: ModuleType) -> None:
    assert launch.camera_overrides("", "/camera/image_raw") == {}  # the file's cameras
    with pytest.raises(launch.LaunchArgumentError, match="repeated: front"):
        launch.camera_overrides("[front, front]", "image")
    with pytest.raises(launch.LaunchArgumentError, match="a ROS name token"):
        launch.camera_overrides("[front, rear/left]", "image")
    with pytest.raises(launch.LaunchArgumentError, match="a list of names"):
        launch.camera_overrides("[front, {a: 1}]", "image")
    with pytest.raises(launch.LaunchArgumentError, match="remap each <name>/image"):
        launch.camera_overrides("[front, left]", "/camera/image_raw")


def test_log_level_is_checked_before_launch(launch: ModuleType) -> None:
    assert launch.parse_log_level("WARN") == "warn"
    with pytest.raises(launch.LaunchArgumentError, match="debug, info, warn, error, fatal"):
        launch.parse_log_level("verbose")


@pytest.mark.parametrize(
    ("image_topic", "expected"),
    [
        ("image", []),
        (
            "/camera/image_raw",
            [("image", "/camera/image_raw"), ("camera_info", "/camera/camera_info")],
        ),
        ("front/image_rect", [("image", "front/image_rect"), ("camera_info", "front/camera_info")]),
        ("/image_raw", [("image", "/image_raw"), ("camera_info", "/camera_info")]),
        ("image_raw", [("image", "image_raw"), ("camera_info", "camera_info")]),
    ],
)
def test_remappings(launch: ModuleType, image_topic: str, expected: list[tuple[str, str]]) -> None:
    assert launch.remappings(image_topic) == expected


def test_dds_profile_environment(launch: ModuleType, tmp_path: Path) -> None:
    profile = launch.ARGUMENTS["dds_profile"][0]
    assert launch.environment(profile, {}) == {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    assert launch.environment(profile, {"FASTDDS_DEFAULT_PROFILES_FILE": profile}) == {}
    assert launch.environment("", {}) == {}
    with pytest.raises(launch.LaunchArgumentError):
        launch.environment(str(tmp_path / "missing.xml"), {})


def test_launch_description_builds_where_launch_ros_exists(launch: ModuleType) -> None:
    pytest.importorskip("launch_ros")
    description = launch.generate_launch_description()
    names = {getattr(entity, "name", None) for entity in description.entities}
    assert set(launch.ARGUMENTS) <= names
