"""Export: parameter file round trip through the node's parameter definitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mess_ros.common.latency_table import LatencyStat, LatencyTable
from mess_ros.config import ConfigError, SegmentationConfig, parameter_file
from mess_ros.deploy.errors import DeployError
from mess_ros.deploy.export import (
    Provenance,
    apply_configuration,
    configuration_from_parameters,
    header_comment,
)
from mess_ros.deploy.problem import ExitConfiguration, ScoredConfiguration
from mess_ros.deploy.search import Target

PER_EXIT = ExitConfiguration(("layer1_0:linear", "layer3_0:fcn_c8_k1_d1"), 0.85, (0.3, 0.9))
SHARED = ExitConfiguration(("layer2_0:linear",), 0.7, (0.55,))
FINAL_ONLY = ExitConfiguration((), 0.0, ())


def table(device: str = "cpu", notes: dict[str, Any] | None = None) -> LatencyTable:
    stat = LatencyStat(1.0, 1.5)
    exits = [*PER_EXIT.exits, *SHARED.exits, "final"]
    return LatencyTable(
        model_fingerprint="0123456789abcdef",
        input_hw=(48, 96),
        device=device,
        device_name="test device",
        versions={},
        quantile=0.9,
        segments=dict.fromkeys(("layer1_0", "layer2_0", "layer3_0", "layer4_0"), stat),
        heads=dict.fromkeys(exits, stat),
        outputs=dict.fromkeys(exits, stat),
        notes=notes or {},
    )


def flat_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        keys |= flat_keys(value, name) if isinstance(value, dict) else {name}
    return keys


@pytest.mark.parametrize(
    "config", [PER_EXIT, SHARED, FINAL_ONLY], ids=["per_exit", "shared", "final"]
)
def test_parameter_file_round_trip(config: ExitConfiguration, tmp_path: Path) -> None:
    params = apply_configuration(
        config, table(notes={"cpu_threads": 3}), "robots/r.pt", "robots/r.latency.json"
    )
    path = tmp_path / "robot.yaml"
    parameter_file.write(params, path, header_comment="robot r\npredicted mIoU 50%")
    text = path.read_text()
    assert text.startswith("# robot r\n# predicted mIoU 50%\n")

    loaded = parameter_file.read(path)
    assert loaded == params
    assert configuration_from_parameters(loaded) == config
    assert loaded.engine.model_path == "robots/r.pt"
    assert loaded.engine.latency_table == "robots/r.latency.json"
    assert (loaded.engine.input_height, loaded.engine.input_width) == (48, 96)
    assert loaded.engine.num_threads == 3
    assert loaded.policy.active_exits == [*config.exits, "final"]
    if config is SHARED:
        assert loaded.policy.image_thresholds == [0.55]
    assert loaded.policy.name == ("final" if config is FINAL_ONLY else "confidence")

    data = yaml.safe_load(text)
    assert list(data) == ["/**"]
    written = flat_keys(data["/**"]["ros__parameters"])
    declared = {spec.name for spec in SegmentationConfig.parameter_specs()}
    empty_lists = {n for n, v in params.to_parameters().items() if v == []}
    assert written == declared - empty_lists


def test_engine_settings_come_from_the_table() -> None:
    params = apply_configuration(
        SHARED, table("cuda:0", notes={"channels_last": True, "cpu_threads": 3}), "m.pt"
    )
    assert params.engine.device == "cuda:0"
    assert params.engine.channels_last is True
    assert params.engine.num_threads == 0  # CPU threads only matter on the CPU


def test_other_settings_come_from_the_base_file() -> None:
    base = SegmentationConfig()
    base.node.image_qos_depth = 5
    base.deadline.deadline_ms = 33.0
    params = apply_configuration(SHARED, table(), "m.pt", base=base)
    assert params.node.image_qos_depth == 5
    assert params.deadline.deadline_ms == 33.0
    assert base.policy.active_exits == []  # the base is not modified


def test_the_camera_list_is_written_over_the_base_file() -> None:
    base = SegmentationConfig()
    base.cameras.names = ["front", "rear"]
    base.cameras.deadlines_ms = [50.0, 80.0]
    assert apply_configuration(SHARED, table(), "m.pt", base=base).cameras == base.cameras
    base.cameras.deadlines_ms = []
    params = apply_configuration(SHARED, table(), "m.pt", base=base, cameras=["a", "b", "c"])
    assert params.cameras.names == ["a", "b", "c"]
    base.cameras.deadlines_ms = [50.0, 80.0]  # one per camera of the base, not of the new list
    with pytest.raises(ConfigError, match=r"cameras\.deadlines_ms"):
        apply_configuration(SHARED, table(), "m.pt", base=base, cameras=["a", "b", "c"])


def test_only_the_confidence_policy_is_read_back() -> None:
    params = apply_configuration(SHARED, table(), "m.pt")
    params.policy.name = "deadline"
    with pytest.raises(DeployError, match="confidence policy"):
        configuration_from_parameters(params)


def test_header_names_sources_target_and_prediction() -> None:
    chosen = ScoredConfiguration(PER_EXIT, 0.6123, 41.5, 60.25, (3, 1, 4))
    baseline = ScoredConfiguration(FINAL_ONLY, 0.65, 80.0, 90.0, (8,))
    text = header_comment(
        "slow_cpu",
        chosen,
        baseline,
        Target(budget_ms=45.0),
        table(notes={"estimated": "scaled from a CPU table"}),
        Provenance("runs/default", "abc", "tables/cpu.json", 8),
        "config/robots/slow_cpu.pt",
    )
    for fragment in (
        "slow_cpu",
        "runs/default",
        "tables/cpu.json",
        "max mIoU with mean latency <= 45 ms",
        "mIoU 61.23%",
        "mean 41.50 ms",
        "p95 60.25 ms",
        "ESTIMATED",
        "config/robots/slow_cpu.pt",
        "layer1_0:linear 38%",
    ):
        assert fragment in text
