"""TrainConfig: presets, strict YAML loading with errors naming file and key, round trips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from mess_ros.model.checkpoint import load_checkpoint
from mess_ros.model.heads import HeadSpec
from mess_ros.runtime.engine import resolve_model_path
from mess_ros.train.config import (
    _PARSERS,
    CONVERT_MODE,
    PRESETS,
    TrainConfig,
    load_config,
    preset,
)
from mess_ros.train.errors import TrainError


def test_every_field_has_a_parser() -> None:
    assert set(_PARSERS) == {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip(name: str, tmp_path: Path) -> None:
    config = preset(name)
    config.validate()
    assert TrainConfig.from_dict(config.to_dict()) == config
    path = tmp_path / "config.yaml"
    config.to_yaml(path)
    assert load_config(path) == config
    for head in config.head_pool:
        assert HeadSpec.parse(head).name == head


def test_presets_are_fresh_copies() -> None:
    first = preset("tiny")
    first.head_pool.append("linear")
    assert preset("tiny").head_pool != first.head_pool


def test_default_preset_is_the_recipe_of_the_bundled_model() -> None:
    config = preset("default")
    assert config.backbone.name == "resnet18" and config.backbone.output_stride == 8
    assert config.input_hw == (128, 256) and config.mode == "two_stage"
    assert config.dataset.kind == "synthetic" and config.val_dataset.split == "val"
    # Settings added since the model was trained read as their defaults.
    checkpoint = load_checkpoint(resolve_model_path(""))
    bundled = TrainConfig.from_dict(checkpoint.train_config)
    assert bundled.mode in ("two_stage", CONVERT_MODE)
    if bundled.mode == CONVERT_MODE:
        # Its exit heads were trained again on the frozen backbone of a model of this
        # recipe, which is the preset's stage 2; the conversion records no stage 1, and
        # the class count it read from the source network instead of "from the labels" (0).
        assert bundled.stage1_steps == 0 and bundled.source_network
        assert bundled.num_classes == len(checkpoint.labels["class_names"])
        bundled = dataclasses.replace(
            bundled,
            mode=config.mode,
            stage1_steps=config.stage1_steps,
            source_network=config.source_network,
            num_classes=config.num_classes,
        )
    assert bundled.to_dict() == config.to_dict()


def test_yaml_overrides_merge_into_the_base(tmp_path: Path) -> None:
    path = tmp_path / "override.yaml"
    path.write_text("batch_size: 2\ndataset:\n  num_images: 6\nbackbone:\n  base_width: 4\n")
    config = load_config(path, base=preset("tiny"))
    assert config.batch_size == 2
    assert config.dataset.num_images == 6 and config.dataset.height == 32
    assert config.backbone.base_width == 4 and config.backbone.name == "resnet10"


def test_a_dataset_of_another_kind_replaces_the_base_dataset(tmp_path: Path) -> None:
    path = tmp_path / "folder.yaml"
    path.write_text("dataset:\n  kind: folder\n  path: /data/robot\n")
    config = load_config(path, base=preset("tiny"))
    assert config.dataset.kind == "folder" and config.dataset.path == "/data/robot"
    assert config.dataset.num_images == 0  # all pairs, not the synthetic preset's 32
    assert config.val_dataset == preset("tiny").val_dataset


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("batch_sise: 4\n", r"unknown key 'batch_sise'; valid keys: .*batch_size"),
        ("batch_size: four\n", r"key 'batch_size' must be an integer, got 'four'"),
        ("batch_size: 0\n", r"key 'batch_size' is 0; must be >= 1"),
        ("lr: true\n", r"key 'lr' must be a number"),
        ("input_hw: [32]\n", r"key 'input_hw' must be a list of two values"),
        ("mode: joint\n", r"key 'mode' is 'joint'; expected one of two_stage"),
        ("amp: fp8\n", r"key 'amp' is 'fp8'"),
        ("head_pool: [linear, fcn_big]\n", r"key 'head_pool': bad exit head name 'fcn_big'"),
        ("dataset:\n  folder: x\n", r"key 'dataset': unknown dataset spec keys \['folder'\]"),
        ("backbone:\n  name: resnet7\n", r"key 'backbone': unknown backbone 'resnet7'"),
        ("scale_range: [1.5, 1.0]\n", r"key 'scale_range' is \[1.5, 1.0\]"),
        ("- just\n- a list\n", r"expected a mapping of settings"),
    ],
)
def test_bad_yaml_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TrainError, match=r"config file '.*bad\.yaml'") as caught:
        load_config(path, base=preset("tiny"))
    assert caught.match(message)


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"cannot read config file .*nowhere\.yaml"):
        load_config(tmp_path / "nowhere.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("batch_size: [1, 2\n")
    with pytest.raises(TrainError, match=r"'.*broken\.yaml' is not valid YAML"):
        load_config(broken)


def test_a_config_without_base_needs_the_datasets(tmp_path: Path) -> None:
    path = tmp_path / "partial.yaml"
    path.write_text("batch_size: 2\n")
    with pytest.raises(TrainError, match=r"missing required key.*dataset, val_dataset"):
        load_config(path)


def test_unknown_preset_lists_the_valid_ones() -> None:
    expected = "unknown preset 'huge'; valid presets: ablation, default, tiny"
    with pytest.raises(TrainError, match=expected):
        preset("huge")
