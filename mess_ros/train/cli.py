"""``mess_train``: train a MESS network into a run directory.

Examples::

    mess_train --preset default --out runs/default
    mess_train --preset tiny --out runs/try --mode naive_joint --device cpu
    mess_train --config my.yaml --out runs/cityscapes --device cuda --amp bf16
    mess_train --out runs/default --resume
    torchrun --nproc_per_node 2 -m mess_ros.train.cli --preset default --out runs/ddp

A ``--config`` YAML overrides the chosen preset key by key (nested dataset
and backbone settings too). ``--resume`` continues a run with the config it
was started with (``<out>/config.yaml``); only where it runs (``--device``,
``--amp``, ``--workers``) may change. User mistakes (bad paths, bad configs,
a missing GPU) end with exit code 2 and one message, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mess_ros.console import add_debug_option, console_main
from mess_ros.errors import MessError
from mess_ros.train.config import MODES, PRESETS, TrainConfig, load_config, preset
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
    parser.add_argument("--mode", choices=MODES, help="two_stage (the method) or a baseline")
    parser.add_argument("--device", help="cpu, cuda or cuda:N")
    parser.add_argument("--amp", choices=AMP_MODES, help="mixed precision on CUDA")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--stage1-steps", type=int, help="steps of stage 1 (or of the baseline)")
    parser.add_argument("--stage2-steps", type=int, help="steps of stage 2 (0 skips it)")
    parser.add_argument("--batch-size", type=int, help="global batch size")
    parser.add_argument("--workers", type=int, help="data-loading worker processes")
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
    return parser


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
        if args.preset is not None or args.config is not None:
            msg = (
                "--resume continues with the run's own config.yaml; "
                "do not pass --preset or --config with it"
            )
            raise TrainError(msg)
        config = RunDir(args.out).saved_config()
    else:
        config = preset(args.preset or "default")
        if args.config is not None:
            config = load_config(args.config, base=config)
    changes = {name: getattr(args, name) for name in _OVERRIDES if getattr(args, name) is not None}
    if changes:
        config = dataclasses.replace(config, **changes)
        config.validate("command line")
    return config


@console_main("mess_train")
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_steps is not None and args.max_steps < 1:
        print("mess_train: error: --max-steps must be >= 1", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = resolve_config(args)
        result = train(
            config,
            args.out,
            resume=args.resume,
            progress=not args.no_progress,
            max_steps=args.max_steps,
        )
    except MessError as err:
        print(f"mess_train: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(
            f"mess_train: interrupted; continue with: mess_train --out {args.out} --resume",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if not result.finished:
        print(f"paused after --max-steps; continue with: mess_train --out {args.out} --resume")
        return 0
    if result.metrics is not None:
        print(format_metrics(result.metrics))
    print(f"run written to {result.run_dir}")
    return 0


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
