"""Weight import: torchvision's networks, with random weights, computed exactly by MESSNet."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.model import (
    BackboneSpec,
    HeadSpec,
    MESSNet,
    ModelSpec,
    WeightImportError,
    save_checkpoint,
)
from mess_ros.model.importing import (
    import_backbone,
    import_network,
    inspect_weights,
    read_state_dict,
)
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD
from tests.torchvision_reference import (
    RESNETS,
    dilated_resnet,
    randomize_batch_norm,
    resnet_features,
    segmentation,
    torchvision,
)

# Odd sizes: every stride-2 step rounds up, in torchvision as in MESSNet.
IMAGE_HW = (29, 45)
RELATIVE_TOLERANCE = 1e-4
NUM_CLASSES = 5


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The reference networks are the largest of the suite: on a shared CPU two torch threads
    spend most of their time waiting for each other, one thread does the same work sooner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def relative_error(got: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest deviation relative to the reference's largest magnitude."""
    assert got.shape == reference.shape
    return float((got - reference).abs().max() / reference.abs().max())


def image(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, *IMAGE_HW, generator=torch.Generator().manual_seed(seed))


def backbone_model(spec: BackboneSpec, state: dict[str, torch.Tensor]) -> MESSNet:
    """A MESSNet around imported backbone weights (its head stays random and unused)."""
    model = MESSNet(ModelSpec(spec, NUM_CLASSES, HeadSpec("linear")))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.startswith("final_head.") for key in missing)
    return model.eval()


@pytest.fixture(scope="module")
def resnet_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torchvision ResNets with random weights, saved as their plain state dicts."""
    root = tmp_path_factory.mktemp("resnets")
    files = {}
    for seed, name in enumerate(RESNETS):
        files[name] = root / f"{name}.pth"
        torch.save(dilated_resnet(name, 32, seed).state_dict(), files[name])
    return files


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("name", RESNETS)
def test_resnet_backbone_equals_torchvision(
    name: str, output_stride: int, resnet_files: dict[str, Path]
) -> None:
    seed = RESNETS.index(name)
    reference = dilated_resnet(name, output_stride, seed)
    spec = BackboneSpec(name, 64, output_stride)
    model = backbone_model(spec, import_backbone(resnet_files[name], spec))
    x = image(seed)
    with torch.no_grad():
        expected = resnet_features(reference, x)
        features = model.backbone(x)
        stepwise = model.forward_backbone(x, None, model.final_point)
    assert relative_error(features, expected) <= RELATIVE_TOLERANCE
    assert torch.equal(stepwise, features)
    layout = inspect_weights(resnet_files[name])
    assert (layout.backbone, layout.base_width, layout.head) == (name, 64, None)


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["deeplabv3_resnet50", "deeplabv3_resnet101", "fcn_resnet50"])
def test_segmentation_network_equals_torchvision(builder: str, tmp_path: Path) -> None:
    """Backbone features and final-exit logits of torchvision's DeepLabV3 and FCN (stride 8)."""
    torch.manual_seed(3)
    reference = getattr(segmentation, builder)(
        weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True
    )
    randomize_batch_norm(reference, seed=3)
    path = tmp_path / f"{builder}.pth"
    torch.save(reference.state_dict(), path)

    imported = import_network(read_state_dict(path), str(path), NUM_CLASSES)
    head, backbone = builder.split("_")
    assert imported.layout.name == builder
    assert imported.spec.backbone == BackboneSpec(backbone, 64, 8)
    expected_head = (
        HeadSpec("deeplabv3_tv", channels=256)
        if head == "deeplabv3"
        else HeadSpec("fcn", channels=512, depth=1, dilation=1)
    )
    assert imported.spec.final_head == expected_head
    model = MESSNet(imported.spec)
    model.load_state_dict(imported.state)
    model.eval()
    x = image(4)
    with torch.no_grad():
        expected_features = reference.backbone(x)["out"]
        expected_logits = reference.classifier(expected_features)
        features = model.backbone(x)
        logits = model(x)["final"]
        full = reference(x)["out"]
    assert relative_error(features, expected_features) <= RELATIVE_TOLERANCE
    assert relative_error(logits, expected_logits) <= RELATIVE_TOLERANCE
    # torchvision upsamples the logits to the input exactly as the engine does.
    upsampled = torch.nn.functional.interpolate(
        logits, size=IMAGE_HW, mode="bilinear", align_corners=False
    )
    assert relative_error(upsampled, full) <= RELATIVE_TOLERANCE


def test_input_statistics_other_than_imagenet_are_applied(tmp_path: Path) -> None:
    """Weights trained on [-1, 1] inputs get them from ImageNet-normalised images."""
    reference = dilated_resnet("resnet18", 32, seed=5)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    half = (0.5, 0.5, 0.5)
    spec = BackboneSpec("resnet18", 64, 32, input_mean=half, input_std=half)
    model = backbone_model(spec, import_backbone(path, spec))
    x = image(5)  # ImageNet-normalised, as the product's preprocessing gives
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = x * std + mean
    with torch.no_grad():
        expected = resnet_features(reference, (pixels - 0.5) / 0.5)
        got = model.backbone(x)
    assert relative_error(got, expected) <= RELATIVE_TOLERANCE
    assert spec.to_dict()["input_mean"] == [0.5, 0.5, 0.5]
    assert BackboneSpec.from_dict(spec.to_dict()) == spec
    # The ImageNet statistics are the default and are not written (old fingerprints hold).
    assert set(BackboneSpec("resnet18").to_dict()) == {"name", "base_width", "output_stride"}


def test_state_dict_containers_are_unwrapped(resnet_files: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(resnet_files["resnet18"], weights_only=True)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, wrapped)
    assert read_state_dict(wrapped).keys() == state.keys()


# --------------------------------------------------------------------------------------------
# Files that cannot be imported
# --------------------------------------------------------------------------------------------


def expect_error(call: object, *fragments: str) -> str:
    assert callable(call)
    with pytest.raises(WeightImportError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_truncated_file(resnet_files: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.pth"
    data = resnet_files["resnet18"].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    expect_error(lambda: read_state_dict(cut), str(cut), "truncated")
    expect_error(lambda: read_state_dict(tmp_path / "absent.pth"), "does not exist")


def test_file_of_another_architecture(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pth"
    torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
    spec = BackboneSpec("resnet18", 64, 32)
    expect_error(
        lambda: import_backbone(path, spec),
        str(path),
        "does not hold a ResNet",
        "an image classifier of another family",
        "features.0.0.weight",
    )


def test_resnet_of_another_depth_names_every_difference(
    resnet_files: dict[str, Path],
) -> None:
    message = expect_error(
        lambda: import_backbone(resnet_files["resnet34"], BackboneSpec("resnet18", 64, 32)),
        "does not fit backbone resnet18",
        "the file looks like resnet34",
    )
    # ResNet-34 has 16 blocks where ResNet-18 has 8: every extra tensor is listed.
    extra_blocks = ["layer1.2.", "layer2.2.", "layer2.3.", "layer3.2.", "layer3.5.", "layer4.2."]
    for block in extra_blocks:
        assert f"unexpected: {block}conv1.weight" in message


def test_missing_unexpected_and_misshaped_tensors_are_all_named(
    resnet_files: dict[str, Path], tmp_path: Path
) -> None:
    state = torch.load(resnet_files["resnet18"], weights_only=True)
    del state["layer2.1.bn2.running_var"]
    del state["layer4.0.downsample.0.weight"]
    state["layer3.0.extra.weight"] = torch.zeros(2)
    state["layer1.1.conv2.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    expect_error(
        lambda: import_backbone(path, BackboneSpec("resnet18", 64, 8)),
        "looks like resnet18",
        "missing: layer2.1.bn2.running_var",
        "missing: layer4.0.downsample.0.weight",
        "unexpected: layer3.0.extra.weight",
        "layer1.1.conv2.weight has shape [64, 64, 1, 1], expected [64, 64, 3, 3]",
    )


def test_wrong_class_count_and_missing_head(resnet_files: dict[str, Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = segmentation.fcn_resnet50(weights=None, weights_backbone=None, num_classes=9)
    path = tmp_path / "fcn.pth"
    torch.save(network.state_dict(), path)
    state = read_state_dict(path)
    expect_error(
        lambda: import_network(state, str(path), num_classes=4),
        "fcn_resnet50 classifier predicts 9 classes",
        "label set has 4",
    )
    bare = read_state_dict(resnet_files["resnet50"])
    expect_error(
        lambda: import_network(bare, "r50.pth", num_classes=4),
        "resnet50",
        "without a segmentation head",
        "--backbone-weights",
    )


def test_files_that_are_not_state_dicts(tmp_path: Path) -> None:
    training = tmp_path / "training.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=0.1)}, training)
    expect_error(lambda: read_state_dict(training), "Python objects besides tensors")
    ours = tmp_path / "ours.pt"
    model = MESSNet(ModelSpec(BackboneSpec("resnet10", 8, 32), 9, HeadSpec("linear")))
    save_checkpoint(ours, model, SYNTHETIC_LABELS.to_dict(), {})
    expect_error(lambda: read_state_dict(ours), "is a mess_ros checkpoint")
    mixed = tmp_path / "mixed.pth"
    torch.save({"conv1.weight": torch.zeros(1), "note": "hello"}, mixed)
    expect_error(lambda: read_state_dict(mixed), "not tensors (note)")
