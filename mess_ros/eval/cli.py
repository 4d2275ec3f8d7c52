"""``mess_evaluate``: replay a bag offline or through the node, write a report.

Exit statuses and error lines are those of :mod:`mess_ros.eval.cli_common`.
The live replay belongs to the ROS layer, which calls this command with it
(:mod:`mess_ros.ros.evaluate`, the installed ``mess_evaluate``); this
module never imports ROS, so offline evaluation works where ROS is not
installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.console import add_debug_option
from mess_ros.data.labels import LabelSet, get_label_set
from mess_ros.errors import MessError
from mess_ros.eval.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    Parser,
    fail,
    parse,
)
from mess_ros.eval.errors import EvalError, LiveError
from mess_ros.eval.offline import OfflineOptions, evaluate_offline
from mess_ros.eval.report import ground_truth_notes, markdown_summary, write_report
from mess_ros.eval.results import Evaluation
from mess_ros.eval.runs import RunSpec, build_runs

LiveReplay = Callable[[argparse.Namespace, list[RunSpec], LabelSet, dict[str, str]], Evaluation]
"""``--live``: replays the bag through the node and scores its masks (the parsed arguments,
the configurations, the label set, the topics); given by the ROS layer."""


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
        parameter_file.read(args.params_file, node_name=args.node_name)
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


def _evaluate(args: argparse.Namespace, live: LiveReplay | None) -> Evaluation:
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
    if live is None:
        raise EvalError(
            "--live replays the bag through the node and needs ROS 2: run the installed "
            "mess_evaluate (mess_ros.ros.evaluate)"
        )
    return live(args, specs, _live_labels(args, specs), topics)


def evaluate_command(argv: Sequence[str] | None = None, live: LiveReplay | None = None) -> int:
    """``mess_evaluate BAG --out DIR [--model M] [--params-file P] [--compare ...] [--live]``.

    ``live`` runs ``--live`` (without it, ``--live`` is refused with the reason).
    """
    parser = _evaluate_parser()
    args = parse(parser, argv)
    if isinstance(args, int):
        return args
    prog = parser.prog
    try:
        evaluation = _evaluate(args, live)
        files = write_report(evaluation, args.out)
    except LiveError as err:
        return fail(prog, err, EXIT_FAILED)
    except MessError as err:
        return fail(prog, err, EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return fail(prog, KeyboardInterrupt("interrupted"), EXIT_INTERRUPTED)
    summary = markdown_summary(evaluation)
    table = summary.split("## Configurations", 1)[1].split("##", 1)[0].strip()
    print(table)
    print(f"\nreport: {files.markdown} (plots and {files.json.name} in {files.directory})")
    for note in ground_truth_notes(evaluation):
        print(f"{prog}: warning: ground truth: {note}", file=sys.stderr)
    problem = strict_problem(evaluation) if args.strict else None
    if problem is not None:
        return fail(
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
