"""Deployment configuration: names, validation, parameter files."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from mess_ros.config import (
    POLICY_NAMES,
    ConfigError,
    SegmentationConfig,
    parameter_file,
    parameter_names,
)


def custom_config() -> SegmentationConfig:
    config = SegmentationConfig()
    config.engine.model_path = "/robots/r1/model.pt"
    config.engine.device = "cuda:1"
    config.engine.input_height, config.engine.input_width = 128, 256
    config.policy.name = "fixed"
    config.policy.active_exits = ["layer1_0:linear", "layer2_1:fcn_c64_k2_d1"]
    config.policy.fixed_exit = "layer2_1:fcn_c64_k2_d1"
    config.policy.image_thresholds = [0.7, 0.85]
    config.policy.class_thresholds = [0.5, 0.6, 0.95]
    config.deadline.deadline_ms = 66.5
    config.deadline.ewma_alpha = 1e-2
    config.node.publish_color_mask = False
    config.cameras.names = ["front", "left"]
    config.cameras.deadlines_ms = [50.0, 80.0]
    config.cameras.priorities = [1, 0]
    return config


def test_parameters_are_dotted_section_names() -> None:
    params = SegmentationConfig().to_parameters()
    assert list(params) == parameter_names()
    assert {"engine.device", "policy.name", "deadline.deadline_ms", "node.publish_color_mask"} <= (
        params.keys()
    )
    assert all(name.count(".") == 1 for name in params)
    assert params["policy.image_thresholds"] == [0.8]


def test_flat_parameters_round_trip() -> None:
    config = custom_config()
    params = config.to_parameters()
    assert SegmentationConfig.from_parameters(params) == config


def test_from_parameters_applies_on_base_without_touching_it() -> None:
    base = custom_config()
    before = copy.deepcopy(base)
    changed = SegmentationConfig.from_parameters({"deadline.deadline_ms": 40}, base)
    assert changed.deadline.deadline_ms == 40.0
    assert isinstance(changed.deadline.deadline_ms, float)  # YAML/ROS integers accepted
    assert changed.policy == base.policy
    assert base == before


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(ConfigError) as info:
        SegmentationConfig.from_parameters({"policy.nme": "final"})
    message = str(info.value)
    assert "policy.nme" in message
    assert "policy.name" in message and "deadline.deadline_ms" in message


@pytest.mark.parametrize(
    ("name", "value", "allowed"),
    [
        ("policy.pixel_threshold", 1.5, "[0, 1]"),
        ("policy.image_thresholds", [0.5, -0.1], "[0, 1]"),
        ("policy.class_thresholds", [0.5, 2.0], "[0, 1]"),
        ("deadline.latency_quantile", 0.2, "[0.5, 0.999]"),
        ("deadline.deadline_ms", -1.0, "[0, 3600000]"),
        ("policy.name", "greedy", "one of: final, fixed, confidence, deadline, hybrid"),
        ("engine.device", "gpu", "cpu, cuda or cuda:N"),
        ("engine.input_height", 8, "both >= 16 pixels"),
        ("engine.input_height", 5000, "[0, 4096]"),
        ("engine.precision", "int8", "fp32, fp16, bf16"),
        ("deadline.deadline_ms", "fast", "a number"),
        ("engine.warmup_frames", 2.5, "an integer"),
        ("engine.warmup_frames", True, "an integer"),
        ("deadline.use_load", 1, "true or false"),
        ("policy.active_exits", "final", "a list"),
        ("policy.pixel_threshold", float("nan"), "[0, 1]"),
    ],
)
def test_bad_value_names_parameter_value_and_allowed(
    name: str, value: object, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        SegmentationConfig.from_parameters({name: value})
    message = str(info.value)
    assert name in message
    assert repr(value) in message
    assert allowed in message


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        SegmentationConfig.from_parameters(
            {"policy.pixel_threshold": 2.0, "deadline.ewma_alpha": 0.0}
        )
    assert len(info.value.problems) == 2


def test_validate_checks_directly_built_configs() -> None:
    config = SegmentationConfig()
    config.policy.pixel_threshold = -0.5
    with pytest.raises(ConfigError, match=r"policy\.pixel_threshold = -0\.5"):
        config.validate()


def test_cross_field_rules() -> None:
    config = SegmentationConfig()
    config.policy.active_exits = ["layer1_0:linear", "layer2_0:linear"]
    config.policy.image_thresholds = [0.5, 0.6, 0.7]
    problems = config.problems()
    assert any("policy.image_thresholds" in p and "expected 1 value or 2" in p for p in problems)

    config = SegmentationConfig()
    config.policy.name = "fixed"
    config.policy.active_exits = ["layer1_0:linear"]
    config.policy.fixed_exit = "layer2_0:linear"
    assert any("policy.fixed_exit" in p for p in config.problems())

    config = SegmentationConfig()
    config.policy.active_exits = ["layer1_0:linear", "layer1_0:linear", "oops"]
    problems = config.problems()
    assert any("repeated: layer1_0:linear" in p for p in problems)
    assert any("'oops'" in p and "not exit ids" in p for p in problems)

    config = SegmentationConfig()
    config.policy.image_thresholds = []
    assert any("policy.image_thresholds" in p for p in config.problems())


def test_camera_lists_match_the_camera_names() -> None:
    config = SegmentationConfig.from_parameters(
        {"cameras.names": ["front", "left", "right"], "cameras.deadlines_ms": [40, 60, 60]}
    )
    assert [config.cameras.deadline_ms(i, 99.0) for i in range(3)] == [40.0, 60.0, 60.0]
    assert config.cameras.priority(2) == 0
    shared = SegmentationConfig.from_parameters({"cameras.names": ["front", "left"]})
    assert shared.cameras.deadline_ms(1, 99.0) == 99.0  # deadline.deadline_ms for every camera

    with pytest.raises(ConfigError) as info:
        SegmentationConfig.from_parameters(
            {
                "cameras.names": ["front", "left", "front"],
                "cameras.deadlines_ms": [40.0],
                "cameras.priorities": [1, 0, 0, 2],
            }
        )
    problems = info.value.problems
    assert any("repeated: front" in p for p in problems)
    assert any(
        p.startswith("cameras.deadlines_ms") and "one value per camera" in p for p in problems
    )
    assert any(p.startswith("cameras.priorities") for p in problems)
    with pytest.raises(ConfigError, match=r"empty while cameras\.names is empty"):
        SegmentationConfig.from_parameters({"cameras.priorities": [1]})
    with pytest.raises(ConfigError, match="a ROS name token"):
        SegmentationConfig.from_parameters({"cameras.names": ["front", "rear/left"]})
    with pytest.raises(ConfigError, match=r"cameras.deadlines_ms.*\[0, 3600000\]"):
        SegmentationConfig.from_parameters(
            {"cameras.names": ["front"], "cameras.deadlines_ms": [-1.0]}
        )


def test_parameter_specs_describe_every_parameter() -> None:
    specs = {s.name: s for s in SegmentationConfig.parameter_specs()}
    assert list(specs) == parameter_names()
    assert all(s.description for s in specs.values())
    assert specs["engine.device"].read_only and specs["engine.model_path"].read_only
    assert specs["engine.input_height"].read_only
    assert not specs["deadline.deadline_ms"].read_only and not specs["policy.name"].read_only
    assert specs["policy.name"].choices == POLICY_NAMES
    assert (specs["policy.pixel_threshold"].min, specs["policy.pixel_threshold"].max) == (0.0, 1.0)
    assert specs["policy.active_exits"].type_name == "string_array"
    assert specs["policy.image_thresholds"].type_name == "double_array"
    assert specs["engine.input_width"].type_name == "integer"
    assert specs["deadline.deadline_ms"].type_name == "double"
    assert specs["cameras.names"].read_only and specs["cameras.names"].type_name == "string_array"
    assert not specs["cameras.deadlines_ms"].read_only
    assert specs["cameras.priorities"].type_name == "integer_array"
    custom = {s.name: s for s in SegmentationConfig.parameter_specs(custom_config())}
    assert custom["deadline.deadline_ms"].default == 66.5


def test_yaml_round_trip_and_layout(tmp_path: Path) -> None:
    config = custom_config()
    path = tmp_path / "robots" / "r1.yaml"
    parameter_file.write(config, path, header_comment="robot r1\npredicted mIoU 61.2")
    text = path.read_text()
    assert text.startswith("# robot r1\n# predicted mIoU 61.2\n")
    data = yaml.safe_load(text)
    params = data["/**"]["ros__parameters"]
    assert params["policy"]["active_exits"] == config.policy.active_exits
    assert params["deadline"]["ewma_alpha"] == 0.01
    assert "deadline_ms: 66.5" in text
    assert parameter_file.read(path) == config


def test_yaml_leaves_empty_lists_to_the_declared_default(tmp_path: Path) -> None:
    config = SegmentationConfig()
    path = tmp_path / "default.yaml"
    parameter_file.write(config, path, node_name="segmentation_node", describe=False)
    text = path.read_text()
    assert "# active_exits: []" in text and "\n      active_exits:" not in text
    assert "deadline_ms: 0.0" in text  # floats keep their dot so ROS types them as double
    assert parameter_file.read(path) == config
    assert parameter_file.read(path, node_name="/segmentation_node") == config


def test_from_yaml_accepts_dotted_keys_and_merges_node_over_wildcard(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "/**:\n  ros__parameters:\n    policy.name: final\n    deadline:\n      deadline_ms: 50\n"
        "seg:\n  ros__parameters:\n    policy.name: deadline\n"
    )
    merged = parameter_file.read(path, node_name="seg")
    assert (merged.policy.name, merged.deadline.deadline_ms) == ("deadline", 50.0)
    assert parameter_file.read(path).policy.name == "final"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read parameter file"),
        ("/**: [unclosed", "not valid YAML"),
        ("just: text\n", "ros__parameters"),
        ("/**:\n  ros__parameters:\n    policy:\n      nmae: final\n", "valid parameters:"),
        ("/**:\n  ros__parameters:\n    policy:\n      pixel_threshold: 3\n", "[0, 1]"),
        ("a:\n  ros__parameters: {}\nb:\n  ros__parameters: {}\n", "several nodes"),
    ],
)
def test_from_yaml_errors_name_the_file(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "broken.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError) as info:
        parameter_file.read(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_read_only_changes() -> None:
    old = SegmentationConfig()
    new = custom_config()
    changed = old.changed_parameters(new)
    assert "deadline.deadline_ms" in changed and "engine.device" in changed
    read_only = old.read_only_changes(new)
    assert "engine.device" in read_only and "deadline.deadline_ms" not in read_only


@pytest.mark.ros
def test_ros_reads_the_written_file(tmp_path: Path) -> None:
    """The real ROS 2 parameter parser (rcl) loads the file to the same values."""
    rclpy = pytest.importorskip("rclpy")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    config = custom_config()
    path = tmp_path / "r1.yaml"
    parameter_file.write(config, path, header_comment="written by the test")
    context = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(path)], context=context)
    try:
        node = rclpy.create_node(
            "segmentation_node",
            context=context,
            automatically_declare_parameters_from_overrides=True,
        )
        values = {
            name: node.get_parameter(name).value
            for name in parameter_names()
            if node.has_parameter(name)
        }
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    # rclpy returns arrays as array.array; empty lists are not in the file (declared defaults)
    assert SegmentationConfig.from_parameters(values) == config
    assert values["deadline.deadline_ms"] == 66.5 and values["engine.input_height"] == 128


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("policy.pixel_treshold", "policy.pixel_threshold"),
        ("pixel_treshold", "policy.pixel_threshold"),
        ("deadline_ms", "deadline.deadline_ms"),
        ("engine.modelpath", "engine.model_path"),
    ],
)
def test_unknown_names_suggest_the_closest_parameter(typo: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=f"{typo} \\(did you mean {meant}\\?\\)"):
        SegmentationConfig.from_parameters({typo: 1.0})
    with pytest.raises(ConfigError) as info:
        SegmentationConfig.from_parameters({"completely_unrelated": 1})
    assert "did you mean" not in str(info.value)


def test_fixed_exit_is_checked_whatever_the_policy() -> None:
    with pytest.raises(ConfigError, match=r"policy\.fixed_exit"):
        SegmentationConfig.from_parameters({"policy.name": "confidence", "policy.fixed_exit": "x"})
    config = SegmentationConfig.from_parameters({"policy.fixed_exit": "layer1_0:linear"})
    assert config.policy.fixed_exit == "layer1_0:linear"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"- 1\n- 2\n", "its top level is a list"),
        (b"", "its top level is empty"),
        (b"\xff\xfe\x00garbage", "is not UTF-8 text (byte 0xff at offset 0)"),
        (b"/**:\n  ros__parameters: [1, 2\n", "not valid YAML: "),
    ],
)
def test_parameter_file_shape_errors(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        parameter_file.read(path)
    assert str(path) in str(info.value) and expected in str(info.value)
    assert "\n" not in str(info.value)


def test_artefacts_are_found_beside_the_parameter_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    robots = tmp_path / "robots"
    robots.mkdir()
    (robots / "rover.pt").write_bytes(b"weights")
    path = robots / "rover.yaml"
    path.write_text(
        '"/**":\n  ros__parameters:\n    engine:\n      model_path: "rover.pt"\n'
        '      latency_table: "cpu_rover.latency.json"\n'
    )
    # A file of the same name in the current directory must not matter.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu_rover.latency.json").write_text("stray")
    config = parameter_file.read(path)
    assert config.engine.model_path == str((robots / "rover.pt").resolve())
    # Not beside the file: kept as a name for the packaged models.
    assert config.engine.latency_table == "cpu_rover.latency.json"


def test_default_yaml_is_what_the_schema_writes() -> None:
    """config/default.yaml is generated: its values with its header, every description current."""
    path = Path(__file__).resolve().parents[2] / "config" / "default.yaml"
    text = path.read_text(encoding="utf-8")
    comment_lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        comment_lines.append(line[2:] if line.startswith("# ") else "")
    params = parameter_file.select(parameter_file.blocks(path), None)
    config = SegmentationConfig.from_parameters(params)
    regenerated = parameter_file.text(config, header_comment="\n".join(comment_lines))
    assert regenerated == text, (
        "config/default.yaml differs from what the schema writes; regenerate it with "
        "parameter_file.write(SegmentationConfig.from_parameters(...), path, header_comment=...)"
    )
