"""``mess_train`` and ``mess_convert``: train or convert a MESS network into a run directory.

Examples::

    mess_train --preset default --out runs/default
    mess_train --preset tiny --out runs/try --mode naive_joint --device cpu
    mess_train --config my.yaml --out runs/cityscapes --device cuda --amp bf16
    mess_train --config my.yaml --backbone-weights resnet50.pth --out runs/r50
    mess_train --out runs/default --resume
    torchrun --nproc_per_node 2 -m mess_ros.train.cli --preset default --out runs/ddp
    mess_convert deeplabv3_resnet50.pth --config my.yaml --out runs/dlv3
    mess_convert runs/single_exit --out runs/converted

A ``--config`` YAML overrides the chosen preset key by key (nested dataset
and backbone settings too). ``--resume`` continues a run with the config it
was started with (``<out>/config.yaml``); only where it runs (``--device``,
``--amp``, ``--workers``) may change. ``--backbone-weights`` starts the
backbone from a ResNet state dict in torchvision's layout and takes its
depth and width from the file. ``mess_convert`` keeps a given network's
backbone and final head frozen and trains only the exit heads (stage 2);
see :mod:`mess_ros.train.convert`. User mistakes (bad paths, bad configs, a
missing GPU) end with exit code 2 and one message, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mess_ros.console import add_debug_option, console_main
from mess_ros.errors import MessError
from mess_ros.model.backbones import OUTPUT_STRIDES, Triple
from mess_ros.model.importing import inspect_weights
from mess_ros.normalization import IMAGENET_MEAN, IMAGENET_STD
from mess_ros.train.config import (
    CONVERT_MODE,
    PRESETS,
    TRAIN_MODES,
    TrainConfig,
    load_config,
    preset,
)
from mess_ros.train.convert import TORCHVISION_OUTPUT_STRIDE, conversion_config, read_source
from mess_ros.train.device import AMP_MODES
from mess_ros.train.errors import TrainError
from mess_ros.train.rundir import RunDir
from mess_ros.train.trainer import train

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mess_train",
        description="Train a multi-exit segmentation network (two-stage MESS training or a "
        "baseline) and write checkpoint, config, metrics and calibration cache to --out.",
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), help="base configuration (default: default)"
    )
    parser.add_argument("--config", type=Path, help="YAML file overriding the preset")
    parser.add_argument("--mode", choices=TRAIN_MODES, help="two_stage (the method) or a baseline")
    parser.add_argument(
        "--backbone-weights",
        type=Path,
        help="ResNet state dict (torchvision layout, e.g. ImageNet-pretrained) the backbone "
        "starts from; its depth and width replace the config's",
    )
    _add_run_options(parser)
    parser.add_argument("--stage1-steps", type=int, help="steps of stage 1 (or of the baseline)")
    parser.add_argument("--stage2-steps", type=int, help="steps of stage 2 (0 skips it)")
    _add_session_options(parser)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--workers", type=int, help="data-loading worker processes")


def _add_session_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last saved step"
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        help="run at most this many steps now, save, and stop (continue with --resume)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_debug_option(parser)


# Command-line options that override the config field of the same name.
_OVERRIDES = (
    "mode",
    "device",
    "amp",
    "seed",
    "stage1_steps",
    "stage2_steps",
    "batch_size",
    "workers",
)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: preset, then YAML, then command-line overrides (or the saved one)."""
    if args.resume:
        _check_resume(args, ("preset", "config", "backbone_weights"))
        config = RunDir(args.out).saved_config()
    else:
        config = preset(args.preset or "default")
        if args.config is not None:
            config = load_config(args.config, base=config)
        if args.backbone_weights is not None:
            config = _with_backbone_weights(config, args.backbone_weights)
    return _overridden(config, args, _OVERRIDES)


def _check_resume(args: argparse.Namespace, options: Sequence[str]) -> None:
    given = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name) is not None]
    if given:
        msg = (
            "--resume continues with the run's own config.yaml; "
            f"do not pass {' or '.join(given)} with it"
        )
        raise TrainError(msg)


def _overridden(config: TrainConfig, args: argparse.Namespace, names: Sequence[str]) -> TrainConfig:
    changes = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if changes:
        config = dataclasses.replace(config, **changes)
        config.validate("command line")
    return config


def _with_backbone_weights(config: TrainConfig, path: Path) -> TrainConfig:
    """The config with its backbone taken from a weights file (depth and width from the file)."""
    layout = inspect_weights(path)
    backbone = dataclasses.replace(
        config.backbone, name=layout.backbone, base_width=layout.base_width
    )
    print(
        f"backbone {backbone.name} (base width {backbone.base_width}, output stride "
        f"{backbone.output_stride}) starts from {path}: {layout.describe()}"
    )
    return dataclasses.replace(config, backbone=backbone, backbone_weights=str(path))


@console_main("mess_train")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _run("mess_train", args, resolve_config)


def _run(
    program: str,
    args: argparse.Namespace,
    resolve: Callable[[argparse.Namespace], TrainConfig],
) -> int:
    """Resolve the config, train, and print the outcome (shared by mess_train and mess_convert)."""
    if args.max_steps is not None and args.max_steps < 1:
        print(f"{program}: error: --max-steps must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = resolve(args)
        result = train(
            config,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            max_steps=args.max_steps,
        )
    except MessError as err:
        print(f"{program}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"{program}: interrupted; continue with: {program} --out {args.out} --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if not result.finished:
        print(f"paused after --max-steps; continue with: {program} --out {args.out} --resume")
        return 0
    if result.metrics is not None:
        print(format_metrics(result.metrics))
    print(f"run written to {result.run_dir}")
    return 0


# --------------------------------------------------------------------------------------------
# mess_convert
# --------------------------------------------------------------------------------------------

# Command-line options of mess_convert that override the config field of the same name.
_CONVERT_OVERRIDES = (
    "device",
    "amp",
    "seed",
    "stage2_steps",
    "batch_size",
    "workers",
    "input_hw",
)


def build_convert_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mess_convert",
        description="Turn an existing segmentation network into a multi-exit one: keep its "
        "backbone and final head frozen, train the candidate exit heads (stage 2) on a dataset, "
        "and write checkpoint, config, metrics and calibration cache to --out.",
    )
    parser.add_argument(
        "source",
        type=Path,
        nargs="?",
        help="torchvision DeepLabV3/FCN state dict, or a mess_ros checkpoint or run directory "
        "(e.g. a single-exit run)",
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory to write")
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="base configuration: data, head pool, stage 2 (default: a mess_ros source's own "
        "training config, else default)",
    )
    parser.add_argument("--config", type=Path, help="YAML file overriding the base (datasets ...)")
    parser.add_argument(
        "--labels",
        help="label set of a folder dataset, by name or JSON file (both splits)",
    )
    parser.add_argument(
        "--input-hw", type=int, nargs=2, metavar=("HEIGHT", "WIDTH"), help="network input size"
    )
    network = parser.add_argument_group("a torchvision file (mess_ros sources record their own)")
    network.add_argument(
        "--output-stride",
        type=int,
        choices=OUTPUT_STRIDES,
        help="output stride the network was built with (torchvision's builders: 8)",
    )
    for statistic, meaning, default in (
        ("mean", "mean", IMAGENET_MEAN),
        ("std", "standard deviation", IMAGENET_STD),
    ):
        network.add_argument(
            f"--input-{statistic}",
            type=float,
            nargs=3,
            metavar=("R", "G", "B"),
            help=f"per-channel {meaning} of [0, 1] RGB the weights expect (default {default})",
        )
    _add_run_options(parser)
    parser.add_argument("--stage2-steps", type=int, help="steps of stage 2 (the exit heads)")
    _add_session_options(parser)
    return parser


_SOURCE_OPTIONS = ("source", "preset", "config", "labels", "input_hw", "output_stride")
_STATISTICS_OPTIONS = ("output_stride", "input_mean", "input_std")


def resolve_conversion(args: argparse.Namespace) -> TrainConfig:
    """The conversion's config: the source network on the base's data and head pool."""
    if args.resume:
        _check_resume(args, (*_SOURCE_OPTIONS, "input_mean", "input_std"))
        config = RunDir(args.out).saved_config()
        if config.mode != CONVERT_MODE:
            raise TrainError(
                f"{str(args.out)!r} holds a {config.mode} run, not a conversion; "
                f"continue it with mess_train --out {args.out} --resume"
            )
        return _overridden(config, args, _CONVERT_OVERRIDES)
    if args.source is None:
        raise TrainError("give the network to convert (a weights file or a mess_ros run)")
    source = read_source(
        args.source,
        output_stride=args.output_stride or TORCHVISION_OUTPUT_STRIDE,
        input_mean=_triple(args.input_mean, IMAGENET_MEAN),
        input_std=_triple(args.input_std, IMAGENET_STD),
    )
    if source.from_mess_ros and any(getattr(args, o) is not None for o in _STATISTICS_OPTIONS):
        raise TrainError(
            f"{', '.join('--' + o.replace('_', '-') for o in _STATISTICS_OPTIONS)} describe a "
            f"torchvision file; {args.source} is a mess_ros network, which records its own"
        )
    if args.preset is not None or source.config is None:
        base = preset(args.preset or "default")
    else:
        base = source.config
    if args.config is not None:
        base = load_config(args.config, base=base)
    if args.labels is not None:
        base = dataclasses.replace(
            base,
            dataset=dataclasses.replace(base.dataset, labels=args.labels),
            val_dataset=dataclasses.replace(base.val_dataset, labels=args.labels),
        )
    config = _overridden(conversion_config(base, source, args.source), args, _CONVERT_OVERRIDES)
    backbone = config.backbone
    print(f"source network: {source.description}")
    print(
        f"  output stride {backbone.output_stride}, input normalised with mean "
        f"{list(backbone.input_mean)} and std {list(backbone.input_std)}; "
        f"{config.stage2_steps} stage-2 steps of {len(config.head_pool)} head(s) at every "
        f"candidate point, input {config.input_hw[0]}x{config.input_hw[1]}"
    )
    return config


def _triple(values: list[float] | None, default: Triple) -> Triple:
    return (values[0], values[1], values[2]) if values is not None else default


@console_main("mess_convert")
def convert_main(argv: Sequence[str] | None = None) -> int:
    args = build_convert_parser().parse_args(argv)
    if args.input_hw is not None:
        args.input_hw = tuple(args.input_hw)
    return _run("mess_convert", args, resolve_conversion)


def format_metrics(metrics: dict[str, Any]) -> str:
    """Per-exit mIoU table (overall and per difficulty) as printed at the end of training."""
    exits: dict[str, Any] = metrics["exits"]
    levels = list(metrics.get("images_per_difficulty", {}))
    width = max(len("exit"), *(len(exit_id) for exit_id in exits))
    header = f"{'exit':<{width}}  {'mIoU':>6}" + "".join(f"  {level:>6}" for level in levels)
    lines = [f"validation mIoU (%) on {metrics['num_images']} images", header]
    for exit_id, values in exits.items():
        cells = [_percent(values["miou"])]
        cells += [_percent(values["miou_per_difficulty"].get(level)) for level in levels]
        lines.append(f"{exit_id:<{width}}  " + "  ".join(f"{cell:>6}" for cell in cells))
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{100 * value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
