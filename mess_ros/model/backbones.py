"""ResNet backbones written in plain torch, split into named residual blocks.

There is no CPU torchvision to borrow from, and a multi-exit network needs
more than a feature extractor anyway: every residual block is a candidate
exit point, so the backbone is kept as a stem plus an ordered, named list of
blocks that the runtime can execute one segment at a time. Output stride 8 or
16 replaces the stride of the last stages with dilation, as DeepLabV3 does,
so that late exits and the final head see denser feature maps.

Images arrive normalised with the ImageNet statistics (the product's one
preprocessing). Weights trained with other statistics record theirs in the
spec, and the backbone converts its input on entry (:class:`Renormalize`),
so that every path that runs the network (training, calibration, the engine)
feeds it what its weights expect.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from mess_ros.model.errors import ModelError, checks
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD
from mess_ros.registry import Registry

Triple = tuple[float, float, float]

OUTPUT_STRIDES = (8, 16, 32)
"""Output strides a backbone can be built for; 32 is the classification ResNet."""

STEM_STRIDE = 4
"""The stem (7x7 stride-2 convolution and stride-2 max pooling) downsamples by 4."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build; stored in checkpoints to rebuild the exact network.

    ``input_mean`` and ``input_std`` are the per-channel statistics (RGB in
    [0, 1]) the weights were trained to receive. They are written out only
    when they differ from the ImageNet ones, so that specs, and the
    fingerprints of models made before the fields existed, stay unchanged.
    """

    name: str = "resnet18"
    base_width: int = 64
    output_stride: int = 16
    input_mean: Triple = IMAGENET_MEAN
    input_std: Triple = IMAGENET_STD

    def __post_init__(self) -> None:
        BACKBONES.get(checks.string(self.name, "backbone name", non_empty=True))
        checks.integer(self.base_width, "backbone base_width", minimum=1)
        checks.integer(self.output_stride, "backbone output_stride")
        if self.output_stride not in OUTPUT_STRIDES:
            allowed = ", ".join(str(s) for s in OUTPUT_STRIDES)
            raise ModelError(
                f"backbone output_stride must be one of {allowed}, got {self.output_stride}"
            )
        # Lists from YAML or JSON become tuples, so that equal specs compare and hash equal.
        object.__setattr__(self, "input_mean", _channel_values(self.input_mean, "input_mean"))
        object.__setattr__(self, "input_std", _channel_values(self.input_std, "input_std"))
        if min(self.input_std) <= 0:
            raise ModelError(f"backbone input_std must be > 0 per channel, got {self.input_std}")

    @property
    def imagenet_normalized(self) -> bool:
        """Whether the weights expect exactly what the product's preprocessing gives."""
        return (self.input_mean, self.input_std) == (IMAGENET_MEAN, IMAGENET_STD)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "base_width": self.base_width,
            "output_stride": self.output_stride,
        }
        if not self.imagenet_normalized:
            data["input_mean"] = list(self.input_mean)
            data["input_std"] = list(self.input_std)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        data = checks.mapping(data, "backbone spec")
        optional = {"base_width", "output_stride", "input_mean", "input_std"}
        checks.keys(data, "backbone spec", {"name"}, optional)
        return cls(**dict(data))


def _channel_values(value: object, what: str) -> Triple:
    """Three finite numbers (R, G, B) as a tuple of floats."""
    if isinstance(value, list | tuple) and len(value) == 3:
        numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
        if len(numbers) == 3 and all(math.isfinite(v) for v in numbers):
            return (float(numbers[0]), float(numbers[1]), float(numbers[2]))
    raise ModelError(f"backbone {what} must be three finite numbers (R, G, B), got {value!r}")


@dataclass(frozen=True)
class PointInfo:
    """A candidate point: the output of one residual block.

    ``stride`` is the nominal downsampling factor (input size / feature size);
    with odd input sizes the feature map is rounded up at each stride-2 step.
    """

    name: str
    stride: int
    channels: int


def _conv3x3(in_channels: int, out_channels: int, stride: int, dilation: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size=3,
        stride=stride,
        padding=dilation,
        dilation=dilation,
        bias=False,
    )


class ResidualBlock(nn.Module):
    """Common shape of BasicBlock and Bottleneck so that presets can use either.

    ``first_dilation`` is the dilation of the block's first 3x3 convolution:
    the first block of a dilated stage keeps the previous stage's dilation
    there, which avoids gridding artefacts where the stride used to be.
    """

    expansion: ClassVar[int] = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int, dilation: int, first_dilation: int
    ) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU(inplace=True)

    def shortcut(self, x: Tensor) -> Tensor:
        if self.downsample is None:
            return x
        identity: Tensor = self.downsample(x)
        return identity


class BasicBlock(ResidualBlock):
    """Two 3x3 convolutions (ResNet-10/18/34)."""

    expansion: ClassVar[int] = 1

    def __init__(
        self, in_channels: int, planes: int, stride: int, dilation: int, first_dilation: int
    ) -> None:
        super().__init__(in_channels, planes, stride, dilation, first_dilation)
        self.conv1 = _conv3x3(in_channels, planes, stride, first_dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + self.shortcut(x)
        activated: Tensor = self.relu(out)
        return activated


class Bottleneck(ResidualBlock):
    """1x1 reduce, 3x3 (carrying the stride, as ResNet v1.5), 1x1 expand (ResNet-50/101)."""

    expansion: ClassVar[int] = 4

    def __init__(
        self, in_channels: int, planes: int, stride: int, dilation: int, first_dilation: int
    ) -> None:
        super().__init__(in_channels, planes, stride, dilation, first_dilation)
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, first_dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out)) + self.shortcut(x)
        activated: Tensor = self.relu(out)
        return activated


class Renormalize(nn.Module):
    """Turns an ImageNet-normalised image into the normalisation the weights were trained with.

    ``(x * s0 + m0 - m) / s`` per channel, with (m0, s0) the ImageNet statistics
    and (m, s) the weights' own; folded into one multiply and one add. The
    factors are buffers that follow the model's device and dtype but are not
    saved: the spec holds the statistics.
    """

    scale: Tensor
    shift: Tensor

    def __init__(self, mean: Triple, std: Triple) -> None:
        super().__init__()
        scale = [s0 / s for s0, s in zip(IMAGENET_STD, std, strict=True)]
        shift = [(m0 - m) / s for m0, m, s in zip(IMAGENET_MEAN, mean, std, strict=True)]
        self.register_buffer("scale", torch.tensor(scale).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", torch.tensor(shift).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class Backbone(nn.Module):
    """A stem and named blocks, executable block range by block range.

    The runtime stops after any exit, so the backbone must run in pieces
    without recomputing anything: :meth:`run` executes blocks ``first`` to
    ``last`` (indices into :attr:`points`) on a feature map.
    """

    def __init__(
        self,
        stem: nn.Module,
        blocks: Sequence[tuple[PointInfo, nn.Module]],
        renormalize: Renormalize | None = None,
    ) -> None:
        super().__init__()
        if not blocks:
            raise ModelError("a backbone needs at least one block")
        self.renormalize = renormalize
        self.stem = stem
        self.blocks = nn.ModuleDict({info.name: block for info, block in blocks})
        self.points: tuple[PointInfo, ...] = tuple(info for info, _ in blocks)

    def enter(self, image: Tensor) -> Tensor:
        """The stem's output for an ImageNet-normalised image."""
        if self.renormalize is not None:
            image = self.renormalize(image)
        features: Tensor = self.stem(image)
        return features

    def run(self, x: Tensor, first: int, last: int) -> Tensor:
        """Run blocks ``first..last`` (inclusive) on ``x``; ``first == -1`` starts at the stem."""
        if first < 0:
            x = self.enter(x)
            first = 0
        block: nn.Module
        for block in islice(self.blocks.values(), first, last + 1):
            x = block(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x, -1, len(self.points) - 1)


def _init_weights(modules: Iterator[nn.Module]) -> None:
    """He initialisation for ReLU networks trained from scratch (no ImageNet weights here)."""
    for module in modules:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


@dataclass(frozen=True)
class ResNetPreset:
    """A ResNet depth: its block type and the number of blocks in each of the four stages."""

    block: type[ResidualBlock]
    layers: tuple[int, int, int, int]

    def __call__(self, spec: BackboneSpec) -> Backbone:
        width = spec.base_width
        stem = nn.Sequential(
            nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        blocks: list[tuple[PointInfo, nn.Module]] = []
        in_channels = width
        stride_so_far = STEM_STRIDE
        dilation = 1
        for stage, num_blocks in enumerate(self.layers, start=1):
            planes = width * 2 ** (stage - 1)
            stride = 1 if stage == 1 else 2
            previous_dilation = dilation
            if stride_so_far * stride > spec.output_stride:
                # Keep the resolution and widen the receptive field instead (DeepLabV3).
                dilation *= stride
                stride = 1
            stride_so_far *= stride
            for index in range(num_blocks):
                block = self.block(
                    in_channels,
                    planes,
                    stride=stride if index == 0 else 1,
                    dilation=dilation,
                    first_dilation=previous_dilation if index == 0 else dilation,
                )
                in_channels = planes * self.block.expansion
                info = PointInfo(f"layer{stage}_{index}", stride_so_far, in_channels)
                blocks.append((info, block))
        renormalize = (
            None if spec.imagenet_normalized else Renormalize(spec.input_mean, spec.input_std)
        )
        backbone = Backbone(stem, blocks, renormalize)
        _init_weights(backbone.modules())
        return backbone


class BackboneFactory(Protocol):
    """What the BACKBONES registry holds: something that builds a backbone from its spec."""

    def __call__(self, spec: BackboneSpec) -> Backbone: ...


BACKBONES: Registry[BackboneFactory] = Registry("backbone", ModelError)
BACKBONES.register("resnet10")(ResNetPreset(BasicBlock, (1, 1, 1, 1)))
BACKBONES.register("resnet18")(ResNetPreset(BasicBlock, (2, 2, 2, 2)))
BACKBONES.register("resnet34")(ResNetPreset(BasicBlock, (3, 4, 6, 3)))
BACKBONES.register("resnet50")(ResNetPreset(Bottleneck, (3, 4, 6, 3)))
BACKBONES.register("resnet101")(ResNetPreset(Bottleneck, (3, 4, 23, 3)))


def build_backbone(spec: BackboneSpec) -> Backbone:
    """Build the backbone named by ``spec`` with freshly initialised weights."""
    return BACKBONES.get(spec.name)(spec)
