"""Weights from other code: ResNet, DeepLabV3 and FCN state dicts in torchvision's layout.

A robotics team usually arrives with an ImageNet-pretrained ResNet or a
segmentation network already trained on its data, saved as
``torch.save(model.state_dict(), path)``. This module reads such files and
turns them into MESSNet weights that compute exactly what the source network
computed:

* ResNet-18/34/50/101 in torchvision's layout (``conv1``, ``bn1``,
  ``layer1.0.conv1`` ...: also the keys of timm's ``resnet*`` and of
  segmentation_models_pytorch's ResNet encoders), and mess_ros's ResNet-10
  in the same layout, as a backbone, at output
  stride 8, 16 or 32. Strides become dilations as torchvision's
  ``replace_stride_with_dilation`` does: the first block of a dilated stage
  keeps the previous dilation in its strided convolution. torchvision
  refuses dilation in its BasicBlock; ResNet-18/34 follow the same rule.
  The ImageNet classifier (``fc``) is ignored.
* torchvision's ``deeplabv3_resnet50/101`` (backbone plus ``DeepLabHead``,
  which becomes the ``deeplabv3_tv`` final head) and ``fcn_resnet50/101``
  (backbone plus ``FCNHead``, which is exactly our ``fcn`` head with one
  layer); ``aux_classifier`` is ignored. torchvision builds both at output
  stride 8.

The architecture is read from the keys and shapes alone. Anything that does
not fit is reported at once: every missing, unexpected and mis-shaped
tensor, and what the file looks like. Files are read with
``torch.load(weights_only=True)`` and nothing is ever downloaded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mess_ros.model.backbones import BACKBONES, BackboneSpec, ResNetPreset, Triple
from mess_ros.model.checkpoint import CHECKPOINT_FORMAT
from mess_ros.model.errors import ModelError, WeightImportError
from mess_ros.model.heads import HeadSpec
from mess_ros.model.messnet import MESSNet, ModelSpec
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD

PathLike = str | os.PathLike[str]

SEGMENTATION_HEADS = ("deeplabv3", "fcn")
"""Segmentation heads of torchvision's layout that import as the final head."""

#: Wrappers that training scripts put around a state dict (torchvision's references use
#: "model", timm and Lightning "state_dict").
_WRAPPER_KEYS = ("model", "state_dict")
_BATCH_COUNT = "num_batches_tracked"

# MESSNet key -> source key, first matching rule wins. Backbone keys get the source's prefix.
_Rules = tuple[tuple[re.Pattern[str], str], ...]
_BACKBONE_RULES: _Rules = (
    (re.compile(r"^backbone\.stem\.0\."), "conv1."),
    (re.compile(r"^backbone\.stem\.1\."), "bn1."),
    (re.compile(r"^backbone\.blocks\.layer(\d)_(\d+)\."), r"layer\1.\2."),
)
_HEAD_RULES: dict[str, _Rules] = {
    # DeepLabHead = Sequential(ASPP, conv3x3, bn, relu, conv1x1); ASPP.convs = 1x1 branch,
    # three dilated branches, image pooling (Sequential(pool, conv, bn, relu)).
    "deeplabv3": (
        (re.compile(r"^final_head\.aspp\.branches\.(\d+)\."), r"classifier.0.convs.\1."),
        (re.compile(r"^final_head\.aspp\.pooling\.conv\."), "classifier.0.convs.4.1."),
        (re.compile(r"^final_head\.aspp\.pooling\.norm\."), "classifier.0.convs.4.2."),
        (re.compile(r"^final_head\.aspp\.project\."), "classifier.0.project."),
        (re.compile(r"^final_head\.refine\.0\."), "classifier.1."),
        (re.compile(r"^final_head\.refine\.1\."), "classifier.2."),
        (re.compile(r"^final_head\.classifier\."), "classifier.4."),
    ),
    # FCNHead = Sequential(conv3x3, bn, relu, dropout, conv1x1).
    "fcn": (
        (re.compile(r"^final_head\.features\.0\.0\."), "classifier.0."),
        (re.compile(r"^final_head\.features\.0\.1\."), "classifier.1."),
        (re.compile(r"^final_head\.classifier\."), "classifier.4."),
    ),
}


@dataclass(frozen=True)
class SourceLayout:
    """What a state dict holds, read from its keys and shapes.

    ``head`` is None for a bare ResNet, else one of :data:`SEGMENTATION_HEADS`;
    ``prefix`` is what precedes the ResNet's own keys (``"backbone."`` in a
    torchvision segmentation network).
    """

    backbone: str
    base_width: int
    prefix: str = ""
    head: str | None = None
    head_channels: int = 0
    num_classes: int = 0

    @property
    def name(self) -> str:
        """torchvision's builder name: ``resnet50``, ``deeplabv3_resnet101``, ``fcn_resnet50``."""
        return self.backbone if self.head is None else f"{self.head}_{self.backbone}"

    def describe(self) -> str:
        """The name with the sizes that are not torchvision's defaults, for messages."""
        details = [f"base width {self.base_width}"]
        if self.head is not None:
            details += [f"head channels {self.head_channels}", f"{self.num_classes} classes"]
        return f"{self.name} ({', '.join(details)})"

    def final_head(self) -> HeadSpec:
        if self.head == "deeplabv3":
            return HeadSpec("deeplabv3_tv", channels=self.head_channels)
        if self.head == "fcn":
            return HeadSpec("fcn", channels=self.head_channels, depth=1, dilation=1)
        raise WeightImportError(f"{self.describe()} has no segmentation head")

    def ignored_prefixes(self, with_head: bool) -> tuple[str, ...]:
        """Source keys that never map to MESSNet weights (classifiers we do not import)."""
        if self.prefix:
            return ("aux_classifier.",) if with_head else ("aux_classifier.", "classifier.")
        return ("fc.",)


@dataclass(frozen=True)
class ImportedNetwork:
    """A segmentation network read from a file: its spec (no exits yet) and its weights."""

    spec: ModelSpec
    state: dict[str, Tensor]
    layout: SourceLayout


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """The tensors of a weights file (see :func:`state_dict_of`)."""
    path = Path(path)
    return state_dict_of(load_payload(path), str(path))


def state_dict_of(payload: Any, where: str) -> dict[str, Tensor]:
    """The state dict in what a weights file held, unwrapped from the usual containers.

    A training script's ``{"model": state_dict, ...}`` or ``{"state_dict": ...}``
    is unwrapped, and a ``module.`` prefix (DataParallel, DDP) dropped.
    """
    if isinstance(payload, dict) and payload.get("format") == CHECKPOINT_FORMAT:
        raise WeightImportError(
            f"{where} is a mess_ros checkpoint, not a state dict in torchvision's layout; "
            "mess_convert takes it (or its run directory) as the source network directly"
        )
    state = payload
    if isinstance(payload, dict):
        for key in _WRAPPER_KEYS:
            inner = payload.get(key)
            if isinstance(inner, dict) and inner and _all_tensors(inner):
                state = inner
                break
    if not isinstance(state, dict) or not state:
        found = type(state).__name__ if not isinstance(state, dict) else "an empty dict"
        raise WeightImportError(
            f"{where} holds {found}, not a state dict; save one with "
            "torch.save(model.state_dict(), path)"
        )
    others = sorted(str(key) for key, value in state.items() if not isinstance(value, Tensor))
    if others:
        raise WeightImportError(
            f"{where} holds entries that are not tensors ({_listed(others)}); expected a state "
            "dict (torch.save(model.state_dict(), path)) or one wrapped as "
            f"{{{', '.join(repr(k) for k in _WRAPPER_KEYS)}: state_dict}}"
        )
    tensors = {str(key): value for key, value in state.items()}
    if all(key.startswith("module.") for key in tensors):
        tensors = {key.removeprefix("module."): value for key, value in tensors.items()}
    return tensors


def load_payload(path: Path) -> Any:
    """``torch.load(weights_only=True)`` with the reasons it fails put in a user's terms."""
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise WeightImportError(f"weights file {path} {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if "Unsupported global" in str(err):
            raise WeightImportError(
                f"{path} holds Python objects besides tensors (a training checkpoint with its "
                "arguments or optimiser, for example), which are never unpickled here; "
                "save just the network's state dict, e.g. "
                "torch.save(torch.load(path, weights_only=False)['model'], 'weights.pth') "
                "for a file you trust"
            ) from err
        raise WeightImportError(
            f"cannot read weights file {path}: it is truncated, corrupt or not a torch file "
            f"({type(err).__name__}: {reason})"
        ) from err


def identify(state: Mapping[str, Tensor], where: str) -> SourceLayout:
    """The architecture a state dict holds, or an error saying what it looks like instead."""
    prefix = "backbone." if any(key.startswith("backbone.") for key in state) else ""
    stem = state.get(f"{prefix}conv1.weight")
    if stem is None or stem.ndim != 4 or tuple(stem.shape[1:]) != (3, 7, 7):
        raise WeightImportError(
            f"{where} does not hold a ResNet in torchvision's layout (no {prefix}conv1.weight "
            f"of shape [width, 3, 7, 7]): it looks like {_guess(state)}. Supported: "
            f"{supported_architectures()}"
        )
    layers = tuple(_blocks_in_stage(state, prefix, stage) for stage in range(1, 5))
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    backbone = _preset_name(bottleneck, layers)
    if backbone is None:
        block = "Bottleneck" if bottleneck else "BasicBlock"
        raise WeightImportError(
            f"{where} looks like a ResNet of {block} blocks {list(layers)} per stage, which is "
            f"none of the depths mess_ros builds: {_preset_table()}"
        )
    layout = SourceLayout(backbone=backbone, base_width=int(stem.shape[0]), prefix=prefix)
    if not any(key.startswith("classifier.") for key in state) or not prefix:
        return layout
    return _with_head(layout, state, where)


def inspect_weights(path: PathLike) -> SourceLayout:
    """The architecture of a weights file (reads the whole file)."""
    return identify(read_state_dict(path), str(path))


def import_backbone(path: PathLike, spec: BackboneSpec) -> dict[str, Tensor]:
    """Weights for the backbone of ``spec`` (MESSNet ``backbone.*`` keys) from a file.

    The file may hold a bare ResNet or a DeepLabV3/FCN network, whose
    backbone is taken and head ignored.
    """
    state = read_state_dict(path)
    layout = identify(state, str(path))
    template = _template(ModelSpec(spec, 2, HeadSpec("linear")), "backbone.")
    target = f"backbone {spec.name} (base width {spec.base_width})"
    return _match(state, template, layout, with_head=False, where=str(path), target=target)


def import_network(
    state: Mapping[str, Tensor],
    where: str,
    num_classes: int | None = None,
    output_stride: int = 8,
    input_mean: Triple = IMAGENET_MEAN,
    input_std: Triple = IMAGENET_STD,
) -> ImportedNetwork:
    """A torchvision DeepLabV3 or FCN network, as a MESSNet spec (no exits) and its weights.

    ``state`` comes from :func:`read_state_dict` (``where`` names its file in
    messages). ``num_classes``, the size of the label set the network is
    converted for, must be what the file's classifier predicts.
    """
    layout = identify(state, where)
    if layout.head is None:
        raise WeightImportError(
            f"{where} holds {layout.describe()} without a segmentation head: there is no "
            "final exit to convert. Train a network on it with mess_train --backbone-weights, "
            f"or give a {' or '.join(SEGMENTATION_HEADS)} network in torchvision's layout"
        )
    if num_classes is not None and layout.num_classes != num_classes:
        raise WeightImportError(
            f"{where}: the {layout.name} classifier predicts {layout.num_classes} classes, but "
            f"the label set has {num_classes}; convert it with the label set it was trained with"
        )
    try:
        backbone = BackboneSpec(
            layout.backbone, layout.base_width, output_stride, input_mean, input_std
        )
        spec = ModelSpec(backbone, layout.num_classes, layout.final_head())
    except ModelError as err:
        raise WeightImportError(f"cannot import {where}: {err}") from err
    template = _template(spec, "backbone.", "final_head.")
    imported = _match(
        state, template, layout, with_head=True, where=where, target=layout.describe()
    )
    return ImportedNetwork(spec=spec, state=imported, layout=layout)


def supported_architectures() -> str:
    names = ", ".join(BACKBONES.names())
    return f"ResNets ({names}), and DeepLabV3 or FCN on one of them (torchvision's layout)"


# ------------------------------------------------------------------------------------------
# Matching keys and shapes
# ------------------------------------------------------------------------------------------


def source_key(key: str, layout: SourceLayout) -> str:
    """The source file's name of a MESSNet state key."""
    head_rules = _HEAD_RULES.get(layout.head or "", ())
    for rules, prefix in ((_BACKBONE_RULES, layout.prefix), (head_rules, "")):
        for pattern, replacement in rules:
            renamed, count = pattern.subn(replacement, key, count=1)
            if count:
                return prefix + renamed
    raise WeightImportError(f"MESSNet weight {key!r} has no counterpart in {layout.name}")


def _template(spec: ModelSpec, *prefixes: str) -> dict[str, torch.Size]:
    """Shapes of the MESSNet weights to fill, built without allocating them."""
    with torch.device("meta"):
        state = MESSNet(spec).state_dict()
    return {key: value.shape for key, value in state.items() if key.startswith(prefixes)}


def _match(
    state: Mapping[str, Tensor],
    template: Mapping[str, torch.Size],
    layout: SourceLayout,
    *,
    with_head: bool,
    where: str,
    target: str,
) -> dict[str, Tensor]:
    """The source tensors renamed to MESSNet keys; every disagreement reported at once."""
    expected = {source_key(key, layout): key for key in template}
    ignored = layout.ignored_prefixes(with_head)
    missing = [
        src for src, key in expected.items() if src not in state and not key.endswith(_BATCH_COUNT)
    ]
    unexpected = [key for key in state if key not in expected and not key.startswith(ignored)]
    mismatched = [
        f"{src} has shape {list(state[src].shape)}, expected {list(template[key])}"
        for src, key in expected.items()
        if src in state and state[src].shape != template[key]
    ]
    if missing or unexpected or mismatched:
        lines = [
            f"{where} does not fit {target}: the file looks like {layout.describe()}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected and {len(mismatched)} "
            "mis-shaped tensor(s)"
        ]
        lines += _section("missing", missing)
        lines += _section("unexpected", unexpected)
        lines += _section("shape mismatch", mismatched)
        lines.append(f"  (left out on purpose: {', '.join(p + '*' for p in ignored)})")
        raise WeightImportError("\n".join(lines))
    imported: dict[str, Tensor] = {}
    for src, key in expected.items():
        tensor = state.get(src)
        if tensor is None:  # a batch count the source did not save; it changes no output
            imported[key] = torch.zeros((), dtype=torch.long)
        elif tensor.is_floating_point():
            imported[key] = tensor.detach().to(torch.float32).contiguous()
        else:
            imported[key] = tensor.detach().clone()
    return imported


def _section(title: str, items: list[str]) -> list[str]:
    return [f"  {title}: {item}" for item in items]


# ------------------------------------------------------------------------------------------
# Reading the architecture
# ------------------------------------------------------------------------------------------


def _blocks_in_stage(state: Mapping[str, Tensor], prefix: str, stage: int) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}layer{stage}\.(\d+)\.")
    indices = [int(m.group(1)) for key in state if (m := pattern.match(key))]
    return max(indices) + 1 if indices else 0


def _preset_name(bottleneck: bool, layers: tuple[int, ...]) -> str | None:
    for name, preset in _presets():
        if preset.layers == layers and (preset.block.expansion == 4) == bottleneck:
            return name
    return None


def _presets() -> Iterable[tuple[str, ResNetPreset]]:
    for name in BACKBONES.names():
        preset = BACKBONES.get(name)
        if isinstance(preset, ResNetPreset):
            yield name, preset


def _preset_table() -> str:
    return ", ".join(
        f"{name} ({preset.block.__name__} {list(preset.layers)})" for name, preset in _presets()
    )


def _with_head(layout: SourceLayout, state: Mapping[str, Tensor], where: str) -> SourceLayout:
    """The layout with the segmentation head read from the ``classifier.*`` shapes."""
    classifier = state.get("classifier.4.weight")
    if "classifier.0.convs.0.0.weight" in state:
        head = "deeplabv3"
        width = state.get("classifier.0.project.0.weight")
    elif "classifier.0.weight" in state and state["classifier.0.weight"].ndim == 4:
        head = "fcn"
        width = state["classifier.0.weight"]
    else:
        keys = sorted(key for key in state if key.startswith("classifier."))
        raise WeightImportError(
            f"{where} holds a {layout.backbone} backbone with a head that is neither "
            f"torchvision's DeepLabHead nor its FCNHead (keys {_listed(keys)}); "
            f"supported: {supported_architectures()}"
        )
    channels = int(width.shape[0]) if width is not None else 0
    classes = int(classifier.shape[0]) if classifier is not None and classifier.ndim == 4 else 0
    return SourceLayout(
        backbone=layout.backbone,
        base_width=layout.base_width,
        prefix=layout.prefix,
        head=head,
        head_channels=channels,
        num_classes=classes,
    )


def _guess(state: Mapping[str, Tensor]) -> str:
    """A best guess at a foreign architecture from its key names, for the error message."""
    keys = list(state)

    def has(text: str) -> bool:
        return any(text in key for key in keys)

    if has("encoder.") and (has("decoder.") or has("segmentation_head.")):
        guess = (
            "a segmentation_models_pytorch model; save its ResNet encoder alone "
            "(torch.save(model.encoder.state_dict(), path)) to use it as a backbone"
        )
    elif any(key.startswith("backbone.") for key in keys) and has("classifier.cbr"):
        guess = "torchvision's LR-ASPP (a MobileNetV3 backbone)"
    elif any(re.match(r"^backbone\.\d+\.", key) for key in keys):
        guess = "a torchvision segmentation network on a MobileNetV3 backbone"
    elif any(key.startswith("features.") for key in keys):
        guess = "an image classifier of another family (VGG, MobileNet, EfficientNet, DenseNet)"
    elif has("patch_embed") or has("blocks.0.attn"):
        guess = "a vision transformer"
    else:
        guess = "an architecture this importer does not know"
    return f"{guess} ({len(keys)} tensors, first keys: {_listed(keys)})"


def _listed(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def _all_tensors(data: Mapping[Any, Any]) -> bool:
    return all(isinstance(value, Tensor) for value in data.values())
