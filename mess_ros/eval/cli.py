"""Command lines: ``mess_evaluate`` (replay a bag, write a report) and ``mess_bag`` (make a bag).

Both return an exit status instead of raising: 0 on success, 2 when the
input is wrong (missing or corrupt bag, unknown topic, invalid parameter
file, bad option), 1 when a live run fails (the node did not start or
stopped answering), 130 on Ctrl-C. Errors are one clear sentence on stderr,
never a traceback, because the people reading them are running a robot,
not debugging this package.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Final

from mess_ros.config import SegmentationConfig
from mess_ros.console import add_debug_option, console_main
from mess_ros.data.datasets import DatasetSpec, SegmentationDataset, build_dataset
from mess_ros.data.errors import DataError
from mess_ros.data.labels import LabelSet, get_label_set
from mess_ros.data.sample import Sample
from mess_ros.errors import MessError
from mess_ros.eval.bags import (
    DEFAULT_CAMERA_INFO_TOPIC,
    DEFAULT_CAMERA_TOPIC,
    DEFAULT_GT_TOPIC,
    STORAGE_NAMES,
    BagWriteOptions,
    write_bag,
)
from mess_ros.eval.errors import EvalError, LiveError
from mess_ros.eval.messages import IMAGE_FORMATS
from mess_ros.eval.offline import OfflineOptions, evaluate_offline
from mess_ros.eval.report import ground_truth_notes, markdown_summary, write_report
from mess_ros.eval.results import Evaluation
from mess_ros.eval.runs import RunSpec, build_runs

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_INTERRUPTED: Final = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors with exit status 2 and no usage dump (usage is in --help)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parsed arguments, or the status argparse would exit with (--help: 0, bad option: 2).

    Returning the status keeps the entry points callable from Python without
    a SystemExit to catch.
    """
    try:
        return parser.parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else EXIT_BAD_INPUT


def _fail(prog: str, err: BaseException, status: int) -> int:
    print(f"{prog}: error: {err}", file=sys.stderr)
    return status


# ---------------------------------------------------------------------------------------------
# mess_evaluate


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mess_evaluate",
        description=(
            "Replay a rosbag through the segmentation engine (offline, in this process) or the "
            "running node (--live) and write a report (report.json, report.md, PNG plots)."
        ),
    )
    parser.add_argument("bag", type=Path, help="bag directory or .db3/.mcap file")
    parser.add_argument("--out", type=Path, required=True, help="report directory")
    parser.add_argument("--model", help="checkpoint (.pt); default: the params file's or bundled")
    parser.add_argument("--params-file", type=Path, help="ROS 2 parameter file of the node")
    parser.add_argument("--node-name", help="entry of the parameter file to use (default: /**)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (overrides the parameter file)")
    parser.add_argument(
        "--compare",
        nargs="+",
        metavar="POLICY[@DEADLINE_MS]",
        default=[],
        help="configurations to compare on the same frames, e.g. final@60 hybrid@60 hybrid@40",
    )
    parser.add_argument(
        "--realtime",
        action="store_true",
        help="offline: simulate the recorded rate, dropping frames that arrive while busy",
    )
    parser.add_argument("--max-frames", type=int, help="evaluate only the first N frames")
    parser.add_argument("--examples", type=int, default=6, help="frames in the example strip")
    parser.add_argument("--camera-topic", help="camera topic (default: the only image topic)")
    parser.add_argument("--gt-topic", help="ground-truth topic (default: recognised by name)")
    parser.add_argument("--no-gt", action="store_true", help="ignore any ground truth in the bag")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail (status 2) when ground truth cannot be scored: class ids outside the label "
        "set, or undecodable or wrongly sized ground truth (the report is still written)",
    )
    parser.add_argument("--load-topic", help="system load topic (default: .../system_load)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    live = parser.add_argument_group("live replay through the node")
    live.add_argument("--live", action="store_true", help="play the bag to the node over DDS")
    live.add_argument("--rate", type=float, default=1.0, help="multiple of the recorded rate")
    live.add_argument(
        "--clock",
        action="store_true",
        help="keep recorded stamps and publish /clock (the node runs with use_sim_time)",
    )
    live.add_argument(
        "--node-running",
        action="store_true",
        help="use the node already running (else one is started per configuration)",
    )
    live.add_argument("--node", default="segmentation_node", help="node name")
    live.add_argument("--namespace", default="", help="namespace of the node's topics")
    live.add_argument("--domain-id", type=int, help="ROS_DOMAIN_ID (default: own one / env)")
    live.add_argument(
        "--labels", help="label set name when --node-running and no model is known here"
    )
    live.add_argument(
        "--startup-timeout", type=float, default=120.0, help="seconds to wait for the node"
    )
    add_debug_option(parser)
    return parser


def _base_config(args: argparse.Namespace) -> SegmentationConfig:
    """The parameter file (or defaults) with the command line's overrides, validated."""
    base = (
        SegmentationConfig.from_yaml(args.params_file, node_name=args.node_name)
        if args.params_file is not None
        else SegmentationConfig()
    )
    overrides: dict[str, str] = {}
    if args.model is not None:
        model = Path(args.model).expanduser()
        if not model.is_file():
            raise EvalError(f"model {model} does not exist; expected a checkpoint file (.pt)")
        overrides["engine.model_path"] = str(model.resolve())
    if args.device is not None:
        overrides["engine.device"] = args.device
    return SegmentationConfig.from_parameters(overrides, base) if overrides else base


def _live_labels(args: argparse.Namespace, specs: Sequence[RunSpec]) -> LabelSet:
    """The label set masks are scored with: the model's, or the one named with --labels."""
    if args.labels:
        return get_label_set(args.labels)
    from mess_ros.model import load_checkpoint
    from mess_ros.runtime.engine import resolve_model_path

    checkpoint = load_checkpoint(resolve_model_path(specs[0].config.engine.model_path))
    return LabelSet.from_dict(checkpoint.labels)


def _evaluate(args: argparse.Namespace) -> Evaluation:
    if args.max_frames is not None and args.max_frames <= 0:
        raise EvalError(f"--max-frames must be positive, got {args.max_frames}")
    if args.examples < 0:
        raise EvalError(f"--examples must be >= 0, got {args.examples}")
    if args.live and args.realtime:
        raise EvalError("--realtime is for offline runs; a live replay is always in real time")
    specs = build_runs(_base_config(args), args.compare)
    topics = {
        "camera_topic": args.camera_topic,
        "gt_topic": "" if args.no_gt else args.gt_topic,
        "load_topic": args.load_topic,
    }
    if not args.live:
        options = OfflineOptions(
            realtime=args.realtime,
            progress=not args.quiet,
            examples=args.examples,
            max_frames=args.max_frames,
        )
        return evaluate_offline(args.bag, specs, options, **topics)
    from mess_ros.eval.live import LiveOptions, evaluate_live

    live_options = LiveOptions(
        rate=args.rate,
        clock=args.clock,
        start_node=not args.node_running,
        node_name=args.node,
        namespace=args.namespace,
        domain_id=args.domain_id,
        startup_timeout_s=args.startup_timeout,
        examples=args.examples,
        max_frames=args.max_frames,
        progress=not args.quiet,
        log_dir=args.out / "node_logs",
    )
    labels = _live_labels(args, specs)
    return evaluate_live(args.bag, specs, labels, live_options, **topics)


@console_main("mess_evaluate")
def evaluate_main(argv: Sequence[str] | None = None) -> int:
    """``mess_evaluate BAG --out DIR [--model M] [--params-file P] [--compare ...] [--live]``."""
    parser = _evaluate_parser()
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    prog = parser.prog
    try:
        evaluation = _evaluate(args)
        files = write_report(evaluation, args.out)
    except LiveError as err:
        return _fail(prog, err, EXIT_FAILED)
    except MessError as err:
        return _fail(prog, err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return _fail(prog, KeyboardInterrupt("interrupted"), EXIT_INTERRUPTED)
    summary = markdown_summary(evaluation)
    table = summary.split("## Configurations", 1)[1].split("##", 1)[0].strip()
    print(table)
    print(f"\nreport: {files.markdown} (plots and {files.json.name} in {files.directory})")
    for note in ground_truth_notes(evaluation):
        print(f"{prog}: warning: ground truth: {note}", file=sys.stderr)
    problem = strict_problem(evaluation) if args.strict else None
    if problem is not None:
        return _fail(
            prog, EvalError(f"--strict: {problem} (report written for inspection)"), EXIT_BAD_INPUT
        )
    return EXIT_OK


def strict_problem(evaluation: Evaluation) -> str | None:
    """Why ``--strict`` fails this evaluation: ground truth that could not be scored."""
    invalid = max((run.invalid_gt for run in evaluation.runs), default=0)
    unusable = int(evaluation.read.get("bad_gt_total", 0))
    if not invalid and not unusable:
        return None
    labels = evaluation.labels
    return (
        f"{invalid} frames have ground-truth class ids outside label set '{labels.name}' and "
        f"{unusable} frames have unusable ground truth on "
        f"{evaluation.topics.get('ground_truth')}"
    )


# ---------------------------------------------------------------------------------------------
# mess_bag


def _bag_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
def bag_main(argv: Sequence[str] | None = None) -> int:
    """``mess_bag --dataset synthetic --num-images 50 --rate 15 --out demo.mcap``."""
    parser = _bag_parser()
    args = _parse(parser, argv)
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
        return _fail(prog, err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return _fail(prog, KeyboardInterrupt("interrupted"), EXIT_INTERRUPTED)
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
