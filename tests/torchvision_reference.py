"""torchvision's own model code, the reference the weight import is checked against.

torchvision is a test-only dependency (pinned under "development" in
requirements.txt): the product reads torchvision-layout files without it. Its
0.28.0 release matches torch 2.13, but its compiled operators do not load
against the CPU build of torch, and ``import torchvision`` fails while
registering them (``operator torchvision::nms does not exist``, raised from
``torchvision._meta_registrations``). The ResNet, DeepLabV3 and FCN code the
tests compare with is pure Python and uses none of those operators, so that
one module is replaced by an empty one before torchvision is first imported.
Import torchvision in the tests only through this module.
"""

from __future__ import annotations

import sys
import types

import torch
from torch import nn

sys.modules.setdefault(
    "torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations")
)

import torchvision  # noqa: E402
from torchvision.models import resnet, segmentation  # noqa: E402
from torchvision.models._utils import IntermediateLayerGetter  # noqa: E402

__all__ = [
    "dilated_resnet",
    "randomize_batch_norm",
    "resnet_features",
    "segmentation",
    "small_deeplabv3",
    "torchvision",
]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")


def randomize_batch_norm(model: nn.Module, seed: int) -> nn.Module:
    """Batch-norm statistics and affine parameters away from their initial 0/1.

    With the initial values every batch norm is nearly the identity, and
    weights imported into the wrong batch norm would go unnoticed.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(size, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
                module.weight.copy_(0.5 + torch.rand(size, generator=generator))
                module.bias.copy_(0.2 * torch.randn(size, generator=generator))
    return model.eval()


def dilated_resnet(name: str, output_stride: int, seed: int = 0) -> resnet.ResNet:
    """torchvision's ResNet ``name`` at ``output_stride``, with random weights, in eval mode.

    Bottleneck ResNets use torchvision's ``replace_stride_with_dilation``.
    torchvision refuses dilation in BasicBlock (ResNet-18/34), so those are
    built at stride 32 and their strided stages changed by the same rule: the
    stride-2 convolutions become stride 1, the first block's first 3x3 keeps
    the previous dilation, every other 3x3 takes the stage's new one.
    """
    torch.manual_seed(seed)
    builder = getattr(resnet, name)
    replace = [False, output_stride <= 8, output_stride <= 16]
    if builder is resnet.resnet18 or builder is resnet.resnet34:
        model = builder()
        _dilate_basic_blocks(model, replace)
    else:
        model = builder(replace_stride_with_dilation=replace)
    return randomize_batch_norm(model, seed)


def _dilate_basic_blocks(model: resnet.ResNet, replace: list[bool]) -> None:
    dilation = 1
    stages = (model.layer2, model.layer3, model.layer4)
    for stage, dilate in zip(stages, replace, strict=True):
        if not dilate:
            continue
        previous, dilation = dilation, dilation * 2
        for index, block in enumerate(stage):
            first = previous if index == 0 else dilation
            _set_dilation(block.conv1, first)
            _set_dilation(block.conv2, dilation)
            block.conv1.stride = (1, 1)
            if block.downsample is not None:
                block.downsample[0].stride = (1, 1)


def _set_dilation(conv: nn.Conv2d, dilation: int) -> None:
    conv.dilation = (dilation, dilation)
    conv.padding = (dilation, dilation)


def resnet_features(model: resnet.ResNet, image: torch.Tensor) -> torch.Tensor:
    """The output of ``layer4`` (what a MESSNet backbone returns)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(image))))
    out: torch.Tensor = model.layer4(model.layer3(model.layer2(model.layer1(x))))
    return out


def small_deeplabv3(num_classes: int, seed: int = 0) -> nn.Module:
    """torchvision's DeepLabV3 and DeepLabHead on its smallest ResNet (BasicBlock, one per stage).

    torchvision builds DeepLabV3 only on ResNet-50/101; the same classes
    around a ResNet-10 (stride 32, as BasicBlock cannot dilate there) keep
    pipeline tests quick while every weight still comes from torchvision's
    own modules and key layout. The classifier is centred (no bias, weights
    of zero mean for each class), so that with random weights the predicted
    class still changes across an image instead of one class winning
    everywhere.
    """
    torch.manual_seed(seed)
    backbone = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1])
    head = segmentation.deeplabv3.DeepLabHead(512, num_classes)
    classifier = head[4]
    with torch.no_grad():
        classifier.bias.zero_()
        classifier.weight.sub_(classifier.weight.mean(dim=1, keepdim=True))
    network = segmentation.DeepLabV3(IntermediateLayerGetter(backbone, {"layer4": "out"}), head)
    return randomize_batch_norm(network, seed)
