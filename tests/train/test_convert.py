"""mess_convert and mess_train --backbone-weights: pretrained weights in, a normal run out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml

from mess_ros.common.exits import FINAL_EXIT
from mess_ros.model.checkpoint import load_checkpoint
from mess_ros.train.calibration import CalibrationCache
from mess_ros.train.cli import convert_main, main
from mess_ros.train.config import CONVERT_MODE, TrainConfig
from mess_ros.train.errors import TrainError
from mess_ros.train.stages import build_model, plan_stages
from mess_ros.train.trainer import train
from tests.torchvision_reference import dilated_resnet, resnet_features, small_deeplabv3
from tests.train.helpers import tiny_config

NUM_CLASSES = 9  # the synthetic label set
CONVERT_STEPS = 3


def quick(config: TrainConfig) -> TrainConfig:
    """Few images, no periodic validation or state saves: these runs check plumbing."""
    return dataclasses.replace(
        config,
        dataset=dataclasses.replace(config.dataset, num_images=4),
        val_dataset=dataclasses.replace(config.val_dataset, num_images=3),
        head_pool=["linear"],
        batch_size=2,
        eval_every=1000,
        checkpoint_every=1000,
    )


def write_yaml(path: Path, config: TrainConfig) -> Path:
    config.to_yaml(path)
    return path


def run(entry: object, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    assert callable(entry)
    code = entry([*args, "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("source") / "deeplabv3.pth"
    torch.save(small_deeplabv3(NUM_CLASSES, seed=1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def single_exit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("single") / "run"
    config = quick(tiny_config(mode="single_exit", stage1_steps=2))
    train(config, root, progress=False)
    return root


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(path).model.state_dict()
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "final_head."))}


@pytest.mark.slow
def test_conversion_of_a_torchvision_file_is_a_normal_run(
    torchvision_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = write_yaml(tmp_path / "base.yaml", quick(tiny_config()))
    out = tmp_path / "converted"
    args = [str(torchvision_file), "--config", str(base), "--out", str(out)]
    code, stdout, err = run(
        convert_main, [*args, "--output-stride", "32", "--stage2-steps", str(CONVERT_STEPS)], capsys
    )
    assert code == 0, err
    assert "deeplabv3_resnet10" in stdout and f"run written to {out}" in stdout

    checkpoint = load_checkpoint(out / "checkpoint.pt")
    model = checkpoint.model
    assert model.spec.final_head.name == "deeplabv3tv_c256"
    assert set(model.exit_ids) == {f"{p}:linear" for p in model.points} | {FINAL_EXIT}
    config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
    assert config["mode"] == CONVERT_MODE and config["stage1_steps"] == 0
    assert config["source_network"] == str(torchvision_file)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["training"]["stages"] == {"stage2": CONVERT_STEPS}
    cache = CalibrationCache.load(out / "calibration.npz")
    assert cache.checkpoint_fingerprint == checkpoint.fingerprint
    assert set(cache.exit_ids) == set(model.exit_ids)

    # The final exit is the source network, weight for weight and logit for logit.
    source = small_deeplabv3(NUM_CLASSES, seed=1)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = source.classifier(source.backbone(x)["out"])
        assert torch.equal(model(x)[FINAL_EXIT], expected)


@pytest.mark.slow
def test_conversion_of_a_single_exit_run_keeps_its_final_exit(
    single_exit_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "converted"
    code, _, err = run(
        convert_main,
        [str(single_exit_run), "--out", str(out), "--stage2-steps", str(CONVERT_STEPS)],
        capsys,
    )
    assert code == 0, err
    before = final_weights(single_exit_run / "checkpoint.pt")
    after = final_weights(out / "checkpoint.pt")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[key], after[key]) for key in before)
    # Its own config is the base: same data, same calibration images, same final-exit counts.
    source_cache = CalibrationCache.load(single_exit_run / "calibration.npz")
    cache = CalibrationCache.load(out / "calibration.npz")
    assert (cache.exit_confusion(FINAL_EXIT) == source_cache.exit_confusion(FINAL_EXIT)).all()
    assert len(cache.exit_ids) > 1


def test_convert_plan_is_stage2_alone(tiny: TrainConfig) -> None:
    config = dataclasses.replace(tiny, mode=CONVERT_MODE, source_network="net.pth", stage1_steps=0)
    (plan,) = plan_stages(config, ["layer1_0", "layer2_0"])
    assert plan.name == "stage2" and plan.frozen_backbone
    assert set(plan.distill_weights) == set(plan.ce_weights)
    with pytest.raises(TrainError, match="'stage1_steps' is 5; a conversion trains no backbone"):
        dataclasses.replace(config, stage1_steps=5).validate()
    with pytest.raises(TrainError, match="'source_network' is empty"):
        dataclasses.replace(config, source_network="").validate()
    with pytest.raises(TrainError, match="only mode 'convert' converts"):
        dataclasses.replace(tiny, source_network="net.pth").validate()


def test_conversion_errors_are_one_line(
    torchvision_file: Path,
    single_exit_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def expect(args: list[str], *fragments: str) -> None:
        code, _, err = run(convert_main, [*args, "--out", str(tmp_path / "r")], capsys)
        assert code == 2 and err.startswith("mess_convert: error: ") and "Traceback" not in err
        for fragment in fragments:
            assert fragment in err, err

    four = tmp_path / "four_classes.pth"
    torch.save(small_deeplabv3(4).state_dict(), four)
    expect(
        [str(four), "--preset", "tiny", "--output-stride", "32"],
        "predicts 4 classes",
        "label set 'synthetic' has 9",
    )
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(torchvision_file.read_bytes()[:1000])
    expect([str(truncated), "--preset", "tiny"], str(truncated), "truncated")
    expect(
        [str(single_exit_run), "--output-stride", "8"],
        "--output-stride",
        "a mess_ros network, which records its own",
    )
    expect([], "give the network to convert")
    expect(["--resume"], "cannot resume")
    expect([str(tmp_path), "--preset", "tiny"], "without checkpoint.pt")
    # --labels reaches the dataset specs, where synthetic data keeps its own label set.
    expect(
        [str(torchvision_file), "--preset", "tiny", "--labels", "cityscapes"],
        "always use label set 'synthetic', not 'cityscapes'",
    )


def test_backbone_weights_start_stage1_from_the_file(tmp_path: Path) -> None:
    reference = dilated_resnet("resnet18", 8, seed=2)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    config = tiny_config(
        backbone_weights=str(path),
        backbone=dataclasses.replace(tiny_config().backbone, name="resnet18", base_width=64),
    )
    config = dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, output_stride=8)
    )
    model = build_model(config, NUM_CLASSES).eval()
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model.backbone(x), resnet_features(reference, x), rtol=1e-4, atol=0)
    wrong = dataclasses.replace(
        config, backbone=dataclasses.replace(config.backbone, name="resnet34")
    )
    with pytest.raises(TrainError, match=r"backbone_weights: .*looks like resnet18"):
        build_model(wrong, NUM_CLASSES)


@pytest.mark.slow
def test_mess_train_backbone_weights_records_architecture_and_normalisation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(dilated_resnet("resnet18", 32, seed=3).state_dict(), path)
    config = quick(tiny_config(stage1_steps=1, stage2_steps=1))
    # Weights trained on [-1, 1] inputs: the statistics travel with the backbone spec.
    config.backbone = dataclasses.replace(
        config.backbone, input_mean=(0.5, 0.5, 0.5), input_std=(0.5, 0.5, 0.5)
    )
    base = write_yaml(tmp_path / "base.yaml", config)
    out = tmp_path / "run"
    args = ["--config", str(base), "--backbone-weights", str(path), "--out", str(out)]
    code, stdout, err = run(main, args, capsys)
    assert code == 0, err
    assert "backbone resnet18 (base width 64" in stdout
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    backbone = checkpoint.spec.backbone
    assert (backbone.name, backbone.base_width) == ("resnet18", 64)
    assert backbone.input_mean == (0.5, 0.5, 0.5) and backbone.input_std == (0.5, 0.5, 0.5)
    assert checkpoint.train_config["backbone_weights"] == str(path)
    spec = torch.load(out / "checkpoint.pt", weights_only=True)["model_spec"]
    assert spec["backbone"]["input_mean"] == [0.5, 0.5, 0.5]


def test_backbone_weights_of_another_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "not_a_resnet.pth"
    torch.save({"features.0.weight": torch.zeros(8, 3, 3, 3)}, path)
    code, _, err = run(
        main,
        ["--preset", "tiny", "--backbone-weights", str(path), "--out", str(tmp_path / "r")],
        capsys,
    )
    assert code == 2 and "does not hold a ResNet" in err and str(path) in err


def test_states_saved_before_the_weight_settings_existed_still_resume(tmp_path: Path) -> None:
    config = quick(tiny_config(stage1_steps=2, stage2_steps=1))
    assert not train(config, tmp_path, progress=False, max_steps=1).finished
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    for key in ("backbone_weights", "source_network"):
        del state["config"][key]
    torch.save(state, tmp_path / "train_state.pt")
    assert train(config, tmp_path, resume=True, progress=False).finished
