"""Compute cost (MACs) and size (parameters) of each backbone segment and head.

Latency must be measured on the robot, but MACs are known before: the
deployment search uses them as a prior and to sanity-check profiles, and the
table shows where a multi-exit network spends its work. MACs are counted for
convolutions, linear layers and batch norm (one multiply-add per output
element) through forward hooks on a real forward pass, so they follow the
actual feature sizes, odd input sizes included. Element-wise operations,
pooling and interpolation are not counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from mess_ros.model.messnet import MESSNet


@dataclass(frozen=True)
class ComplexityRow:
    """MACs and parameters of one backbone segment (block) or one exit head, per image."""

    kind: Literal["segment", "head"]
    name: str
    macs: int
    params: int


def _module_macs(module: nn.Module, output: Tensor) -> int:
    per_image = output.numel() // max(1, output.shape[0])
    if isinstance(module, nn.Conv2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return per_image * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return per_image  # batch norm: one scale-and-shift per element


@contextmanager
def _count_macs(model: nn.Module) -> Iterator[list[int]]:
    """Yield a one-element accumulator that every counted layer adds its MACs to."""
    total = [0]

    def hook(module: nn.Module, _inputs: Any, output: Any) -> None:
        total[0] += _module_macs(module, output)

    counted = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    try:
        yield total
    finally:
        for handle in handles:
            handle.remove()


def _params(parameters: Iterator[nn.Parameter]) -> int:
    return sum(p.numel() for p in parameters)


def model_complexity(model: MESSNet, input_hw: tuple[int, int]) -> list[ComplexityRow]:
    """One "segment" row per block (the first includes the stem), then one "head" row per exit.

    Runs one image of ``input_hw`` through the network stage by stage, in
    eval mode and without gradients; the model's mode is restored afterwards.
    """
    reference = next(model.parameters())
    image = torch.zeros(1, 3, int(input_hw[0]), int(input_hw[1]), device=reference.device)
    image = image.to(reference.dtype)
    was_training = model.training
    model.eval()
    rows: list[ComplexityRow] = []
    features: dict[str, Tensor] = {}
    try:
        with torch.no_grad(), _count_macs(model) as macs:
            previous: str | None = None
            x = image
            for point in model.block_points:
                before = macs[0]
                x = model.forward_backbone(x, previous, point)
                params = _params(model.backbone.blocks[point].parameters())
                if previous is None:
                    params += _params(model.backbone.stem.parameters())
                rows.append(ComplexityRow("segment", point, macs[0] - before, params))
                features[point] = x
                previous = point
            for exit_id in model.exit_ids:
                before = macs[0]
                model.forward_head(exit_id, features[model.exit_point(exit_id)])
                params = _params(model.exit_parameters(exit_id))
                rows.append(ComplexityRow("head", exit_id, macs[0] - before, params))
    finally:
        model.train(was_training)
    return rows


def format_complexity(rows: Sequence[ComplexityRow]) -> str:
    """A plain-text table with GMACs and millions of parameters, and backbone/head totals."""
    name_width = max([len("backbone total"), *(len(r.name) for r in rows)])
    header = f"{'kind':<8} {'name':<{name_width}} {'GMACs':>10} {'M params':>10}"
    lines = [header, "-" * len(header)]

    def line(kind: str, name: str, macs: int, params: int) -> str:
        return f"{kind:<8} {name:<{name_width}} {macs / 1e9:>10.4f} {params / 1e6:>10.4f}"

    lines += [line(r.kind, r.name, r.macs, r.params) for r in rows]
    lines.append("-" * len(header))
    for kind, label in (("segment", "backbone total"), ("head", "heads total")):
        selected = [r for r in rows if r.kind == kind]
        macs = sum(r.macs for r in selected)
        params = sum(r.params for r in selected)
        lines.append(line("", label, macs, params))
    return "\n".join(lines)
