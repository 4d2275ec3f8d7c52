"""ResNet backbones written in plain torch, split into named residual blocks.

There is no CPU torchvision to borrow from, and a multi-exit network needs
more than a feature extractor anyway: every residual block is a candidate
exit point, so the backbone is kept as a stem plus an ordered, named list of
blocks that the runtime can execute one segment at a time. Output stride 8 or
16 replaces the stride of the last stages with dilation, as DeepLabV3 does,
so that late exits and the final head see denser feature maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, ClassVar, Protocol

from torch import Tensor, nn

from mess_ros.model._validate import check_keys, require_int, require_mapping, require_str
from mess_ros.model.errors import ModelError
from mess_ros.registry import Registry

OUTPUT_STRIDES = (8, 16, 32)
"""Output strides a backbone can be built for; 32 is the classification ResNet."""

STEM_STRIDE = 4
"""The stem (7x7 stride-2 convolution and stride-2 max pooling) downsamples by 4."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to build; stored in checkpoints to rebuild the exact network."""

    name: str = "resnet18"
    base_width: int = 64
    output_stride: int = 16

    def __post_init__(self) -> None:
        BACKBONES.get(require_str(self.name, "backbone name"))
        require_int(self.base_width, "backbone base_width", minimum=1)
        require_int(self.output_stride, "backbone output_stride")
        if self.output_stride not in OUTPUT_STRIDES:
            allowed = ", ".join(str(s) for s in OUTPUT_STRIDES)
            raise ModelError(
                f"backbone output_stride must be one of {allowed}, got {self.output_stride}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_width": self.base_width,
            "output_stride": self.output_stride,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BackboneSpec:
        data = require_mapping(data, "backbone spec")
        check_keys(data, "backbone spec", {"name"}, {"base_width", "output_stride"})
        return cls(**dict(data))


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


class Backbone(nn.Module):
    """A stem and named blocks, executable block range by block range.

    The runtime stops after any exit, so the backbone must run in pieces
    without recomputing anything: :meth:`run` executes blocks ``first`` to
    ``last`` (indices into :attr:`points`) on a feature map.
    """

    def __init__(self, stem: nn.Module, blocks: Sequence[tuple[PointInfo, nn.Module]]) -> None:
        super().__init__()
        if not blocks:
            raise ModelError("a backbone needs at least one block")
        self.stem = stem
        self.blocks = nn.ModuleDict({info.name: block for info, block in blocks})
        self.points: tuple[PointInfo, ...] = tuple(info for info, _ in blocks)

    def run(self, x: Tensor, first: int, last: int) -> Tensor:
        """Run blocks ``first..last`` (inclusive) on ``x``; ``first == -1`` starts at the stem."""
        if first < 0:
            x = self.stem(x)
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
        backbone = Backbone(stem, blocks)
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
