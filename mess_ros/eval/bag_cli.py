"""``mess_bag``: write a dataset as a rosbag2 bag that looks like a camera recorded it.

Synthetic scenes, image/mask folders or a Cityscapes layout become a camera
topic, a ground-truth topic and camera_info at a given rate
(:func:`~mess_ros.eval.bag_writer.write_bag`). Exit statuses and error lines
are those of :mod:`mess_ros.eval.cli_common`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from mess_ros.console import add_debug_option, console_main
from mess_ros.data.datasets import DatasetSpec, SegmentationDataset, build_dataset
from mess_ros.data.errors import DataError
from mess_ros.data.sample import Sample
from mess_ros.errors import MessError
from mess_ros.eval.bag_writer import (
    DEFAULT_CAMERA_INFO_TOPIC,
    DEFAULT_CAMERA_TOPIC,
    DEFAULT_GT_TOPIC,
    STORAGE_NAMES,
    BagWriteOptions,
    write_bag,
)
from mess_ros.eval.cli_common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK, Parser, fail, parse
from mess_ros.eval.errors import EvalError
from mess_ros.eval.messages import IMAGE_FORMATS


def _bag_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mess_bag",
        description=(
            "Write a dataset (synthetic scenes, image/mask folders, Cityscapes) as a rosbag2 bag "
            "with a camera topic, a ground-truth topic and camera_info, at a given rate."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, help="output .mcap/.db3 file or dir")
    parser.add_argument(
        "--dataset", default="synthetic", choices=("synthetic", "folder", "cityscapes")
    )
    parser.add_argument("--path", default="", help="dataset root (folder, cityscapes)")
    parser.add_argument("--split", default="test", help="split (synthetic: seeds 0/1/2)")
    parser.add_argument("--num-images", type=int, help="frames (synthetic: 50; files: all)")
    parser.add_argument("--height", type=int, default=256, help="synthetic image height")
    parser.add_argument("--width", type=int, default=512, help="synthetic image width")
    parser.add_argument("--seed", type=int, help="synthetic seed (default: the split's)")
    parser.add_argument("--difficulty", help="synthetic level: easy, medium, hard (default mixed)")
    parser.add_argument("--labels", default="", help="folder datasets: label set name or JSON")
    parser.add_argument("--rate", type=float, default=15.0, help="frames per second")
    parser.add_argument(
        "--format",
        default="rgb8",
        choices=IMAGE_FORMATS,
        help="image encoding (jpeg/png: CompressedImage)",
    )
    parser.add_argument(
        "--storage", default="mcap", choices=tuple(STORAGE_NAMES), help="for a directory output"
    )
    parser.add_argument("--camera-topic", default=DEFAULT_CAMERA_TOPIC)
    parser.add_argument("--gt-topic", default=DEFAULT_GT_TOPIC)
    parser.add_argument("--no-gt", action="store_true", help="write no ground-truth topic")
    parser.add_argument("--camera-info-topic", default=DEFAULT_CAMERA_INFO_TOPIC)
    parser.add_argument("--no-camera-info", action="store_true", help="write no camera_info")
    parser.add_argument("--frame-id", default="camera", help="header frame_id")
    parser.add_argument("--force", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_debug_option(parser)
    return parser


def _samples(dataset: SegmentationDataset, failures: list[str]) -> Iterator[Sample]:
    """Every sample that can be read; unreadable files are listed, not fatal."""
    for index in range(len(dataset)):
        try:
            yield dataset[index]
        except DataError as err:
            failures.append(f"sample {index}: {err}")


@console_main("mess_bag")
def main(argv: Sequence[str] | None = None) -> int:
    """``mess_bag --dataset synthetic --num-images 50 --rate 15 --out demo.mcap``."""
    parser = _bag_parser()
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    prog = parser.prog
    failures: list[str] = []
    try:
        num_images = args.num_images
        if num_images is None:
            num_images = 50 if args.dataset == "synthetic" else 0
        if num_images < 0:
            raise EvalError(f"--num-images must be >= 0, got {num_images}")
        spec = DatasetSpec.from_dict(
            {
                "kind": args.dataset,
                "path": args.path,
                "split": args.split,
                "num_images": num_images,
                "height": args.height,
                "width": args.width,
                "seed": args.seed,
                "difficulty": args.difficulty,
                "labels": args.labels,
            }
        )
        dataset = build_dataset(spec)
        options = BagWriteOptions(
            rate_hz=args.rate,
            image_format=args.format,
            camera_topic=args.camera_topic,
            gt_topic="" if args.no_gt else args.gt_topic,
            camera_info_topic="" if args.no_camera_info else args.camera_info_topic,
            frame_id=args.frame_id,
            storage=args.storage,
            overwrite=args.force,
        )
        summary = write_bag(
            args.out,
            _samples(dataset, failures),
            options,
            total=len(dataset),
            progress=not args.quiet,
        )
    except MessError as err:
        return fail(prog, err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(prog, KeyboardInterrupt("interrupted"), EXIT_INTERRUPTED)
    skipped = sum(summary.skipped.values()) + len(failures)
    topics = ", ".join(f"{role} {name}" for role, name in summary.topics.items())
    print(
        f"wrote {summary.frames} frames ({summary.duration_s:.1f} s at {args.rate:g} Hz) to "
        f"{summary.path}: {topics}"
    )
    if skipped:
        reasons = [f"{reason}: {count}" for reason, count in summary.skipped.items()]
        print(f"skipped {skipped} samples: " + "; ".join(reasons + failures), file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
