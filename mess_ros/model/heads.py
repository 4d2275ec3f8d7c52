"""Exit heads: a small parametrised space of segmentation heads, registered by name.

The deployment search chooses, per robot, which head architecture sits at
each exit, so heads are described by a :class:`HeadSpec` whose canonical name
("fcn_c64_k2_d1") is what configs, checkpoints and parameter files carry.
Every head maps a feature map to logits at the same resolution: upsampling
is left to the single chosen output (see :mod:`mess_ros.model.outputs`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mess_ros.model.errors import ModelError, checks
from mess_ros.registry import Registry

_PARAM_LETTERS = {"channels": "c", "depth": "k", "dilation": "d"}
_PARAM_DEFAULTS = {"channels": 0, "depth": 1, "dilation": 1}
_NUMBER = re.compile(r"[1-9][0-9]*")

DEEPLAB_CONTEXT_PX = (96, 192, 288)
"""Image-space reach of the DeepLabV3 ASPP branches: rates 6/12/18 at output stride 16."""

ASPP_LITE_CONTEXT_PX = (48, 96)
"""Image-space reach of the two dilated branches of the light ASPP head."""

TORCHVISION_ASPP_RATES = (12, 24, 36)
"""Dilation rates of torchvision's ``DeepLabHead``, the same at every stride."""


def scaled_rates(context_px: Sequence[int], stride: int) -> tuple[int, ...]:
    """Dilation rates that reach the same image distance at any feature stride.

    DeepLabV3 doubles its ASPP rates when the output stride halves; expressing
    the reach in input pixels does that for every exit point, whose strides
    range from 4 to 32.
    """
    return tuple(max(1, round(px / stride)) for px in context_px)


@dataclass(frozen=True)
class HeadSpec:
    """An exit head architecture and its parameters.

    Parameters an architecture does not use must stay at their defaults, so
    that every spec has exactly one name and ``HeadSpec.parse(s.name) == s``.
    """

    arch: str
    channels: int = 0
    depth: int = 1
    dilation: int = 1

    def __post_init__(self) -> None:
        head_cls = EXIT_HEADS.get(checks.string(self.arch, "head arch", non_empty=True))
        for param, default in _PARAM_DEFAULTS.items():
            value = checks.integer(getattr(self, param), f"{self.arch} head {param}")
            if param in head_cls.params:
                checks.integer(value, f"{self.arch} head {param}", minimum=1)
            elif value != default:
                raise ModelError(
                    f"{self.arch} head has no {param} parameter; leave it at {default}, got {value}"
                )

    @property
    def name(self) -> str:
        head_cls = EXIT_HEADS.get(self.arch)
        parts = [head_cls.token]
        parts += [f"{_PARAM_LETTERS[p]}{getattr(self, p)}" for p in head_cls.params]
        return "_".join(parts)

    @classmethod
    def parse(cls, name: str) -> HeadSpec:
        """Inverse of :attr:`name`; a ModelError lists the accepted forms."""
        token, *parts = str(name).split("_")
        by_token = {EXIT_HEADS.get(arch).token: arch for arch in EXIT_HEADS.names()}
        arch = by_token.get(token)
        if arch is not None:
            params = EXIT_HEADS.get(arch).params
            values: dict[str, int] = {}
            if len(parts) == len(params):
                for param, part in zip(params, parts, strict=True):
                    letter = _PARAM_LETTERS[param]
                    if part[:1] == letter and _NUMBER.fullmatch(part[1:]):
                        values[param] = int(part[1:])
            if len(parts) == len(values) == len(params):
                return cls(arch, **values)
        raise ModelError(f"bad exit head name {name!r}; expected one of: {head_name_forms()}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "channels": self.channels,
            "depth": self.depth,
            "dilation": self.dilation,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeadSpec:
        data = checks.mapping(data, "head spec")
        checks.keys(data, "head spec", {"arch"}, {"channels", "depth", "dilation"})
        return cls(**dict(data))


def head_name_forms() -> str:
    """The name pattern of every registered head, for error messages."""
    forms = []
    for arch in EXIT_HEADS.names():
        head_cls = EXIT_HEADS.get(arch)
        parts = [head_cls.token]
        parts += [f"{_PARAM_LETTERS[p]}<{p}>" for p in head_cls.params]
        forms.append("_".join(parts))
    return ", ".join(forms)


class ExitHead(nn.Module):
    """Base class of registered heads.

    ``token`` starts the canonical name and ``params`` lists, in name order,
    the HeadSpec fields the architecture uses. ``stride`` is the feature
    stride at the attachment point, used to scale dilation rates.
    """

    token: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: HeadSpec, in_channels: int, num_classes: int, stride: int) -> None:
        super().__init__()
        self.spec = spec


EXIT_HEADS: Registry[type[ExitHead]] = Registry("exit head", ModelError)


def _conv_bn_relu(
    in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1
) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=dilation * (kernel_size // 2),
            dilation=dilation,
            bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ImagePooling(nn.Module):
    """Global context branch of ASPP, broadcast back to the feature size.

    Our heads give it a bias instead of batch norm: normalising a 1x1 map
    over a batch of one (small-batch training, a single calibration image) is
    undefined. ``batch_norm`` gives torchvision's layout (bias-free
    convolution, batch norm), which imported DeepLabV3 weights need; frozen
    or in eval mode it is well defined at any batch size.
    """

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=not batch_norm)
        self.norm = nn.BatchNorm2d(out_channels) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 1)
        out: Tensor = self.conv(pooled)
        if self.norm is not None:
            out = self.norm(out)
        out = torch.relu(out)
        # Upsampling a 1x1 map is a broadcast; expanding avoids the interpolation kernel.
        return out.expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, dilated 3x3 branches, image pooling, projection."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int],
        pooling_norm: bool = False,
    ) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, rate) for rate in rates]
        self.branches = nn.ModuleList(branches)
        self.pooling = ImagePooling(in_channels, out_channels, batch_norm=pooling_norm)
        self.project = _conv_bn_relu(out_channels * (len(branches) + 1), out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pooling(x))
        out: Tensor = self.project(torch.cat(outs, dim=1))
        return out


@EXIT_HEADS.register("linear")
class LinearHead(ExitHead):
    """A 1x1 convolution classifier: the cheapest exit, used at every point in stage 1."""

    token: ClassVar[str] = "linear"
    params: ClassVar[tuple[str, ...]] = ()

    def __init__(self, spec: HeadSpec, in_channels: int, num_classes: int, stride: int) -> None:
        super().__init__(spec, in_channels, num_classes, stride)
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(x)
        return out


@EXIT_HEADS.register("fcn")
class FCNHead(ExitHead):
    """``depth`` 3x3 conv-bn-relu blocks of ``channels`` (dilated by ``dilation``), then 1x1."""

    token: ClassVar[str] = "fcn"
    params: ClassVar[tuple[str, ...]] = ("channels", "depth", "dilation")

    def __init__(self, spec: HeadSpec, in_channels: int, num_classes: int, stride: int) -> None:
        super().__init__(spec, in_channels, num_classes, stride)
        layers = [
            _conv_bn_relu(in_channels if i == 0 else spec.channels, spec.channels, 3, spec.dilation)
            for i in range(spec.depth)
        ]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(spec.channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.features(x))
        return out


@EXIT_HEADS.register("aspp_lite")
class ASPPLiteHead(ExitHead):
    """A light ASPP (1x1, two dilated 3x3, image pooling) of few channels, then 1x1.

    It gives an early exit the global context that a 1x1 or FCN head lacks,
    at a fraction of the final head's cost.
    """

    token: ClassVar[str] = "aspplite"
    params: ClassVar[tuple[str, ...]] = ("channels",)

    def __init__(self, spec: HeadSpec, in_channels: int, num_classes: int, stride: int) -> None:
        super().__init__(spec, in_channels, num_classes, stride)
        rates = scaled_rates(ASPP_LITE_CONTEXT_PX, stride)
        self.aspp = ASPP(in_channels, spec.channels, rates)
        self.classifier = nn.Conv2d(spec.channels, num_classes, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.aspp(x))
        return out


@EXIT_HEADS.register("deeplabv3")
class DeepLabV3Head(ExitHead):
    """The DeepLabV3 head: full ASPP (rates scaled for the stride), 3x3 conv, classifier."""

    token: ClassVar[str] = "deeplabv3"
    params: ClassVar[tuple[str, ...]] = ("channels",)
    dropout_p: ClassVar[float] = 0.1
    pooling_norm: ClassVar[bool] = False

    def __init__(self, spec: HeadSpec, in_channels: int, num_classes: int, stride: int) -> None:
        super().__init__(spec, in_channels, num_classes, stride)
        self.aspp = ASPP(in_channels, spec.channels, self.rates(stride), self.pooling_norm)
        self.dropout = nn.Dropout(self.dropout_p)
        self.refine = _conv_bn_relu(spec.channels, spec.channels, 3)
        self.classifier = nn.Conv2d(spec.channels, num_classes, kernel_size=1)

    @staticmethod
    def rates(stride: int) -> tuple[int, ...]:
        return scaled_rates(DEEPLAB_CONTEXT_PX, stride)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.refine(self.dropout(self.aspp(x))))
        return out


@EXIT_HEADS.register("deeplabv3_tv")
class TorchvisionDeepLabHead(DeepLabV3Head):
    """torchvision's ``DeepLabHead``, so that its trained weights compute what they did there.

    The same modules in the same order as :class:`DeepLabV3Head`, with
    torchvision's choices where the two differ: fixed rates 12/24/36 (at
    output stride 8, the rates our head scales to as well), batch norm in the
    image-pooling branch, and dropout 0.5 after the projection. In eval mode
    dropout does nothing, so only the first two change the output.
    """

    token: ClassVar[str] = "deeplabv3tv"
    dropout_p: ClassVar[float] = 0.5
    pooling_norm: ClassVar[bool] = True

    @staticmethod
    def rates(stride: int) -> tuple[int, ...]:
        return TORCHVISION_ASPP_RATES


def build_head(spec: HeadSpec, in_channels: int, num_classes: int, stride: int) -> ExitHead:
    """Build the head described by ``spec`` for features of ``in_channels`` at ``stride``."""
    return EXIT_HEADS.get(spec.arch)(spec, in_channels, num_classes, stride)


def default_head_pool(channels: int) -> list[HeadSpec]:
    """A candidate head space spanning cost and context, for stage 2 and the search.

    From cheapest to richest: a 1x1 classifier, one FCN block, two dilated
    FCN blocks (wider receptive field), and the light ASPP (global context).
    """
    channels = checks.integer(channels, "head pool channels", minimum=1)
    return [
        HeadSpec("linear"),
        HeadSpec("fcn", channels=channels, depth=1, dilation=1),
        HeadSpec("fcn", channels=channels, depth=2, dilation=2),
        HeadSpec("aspp_lite", channels=channels),
    ]
