"""``mess_evaluate`` as installed: the bag evaluation command, with ``--live`` through the node.

The command itself lives in :mod:`mess_ros.eval.cli` and never imports ROS;
the replay through a running node is ROS's part, so it is handed in from
here. ROS is imported only when ``--live`` is asked for: offline evaluation
runs where ROS is not installed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from mess_ros.console import console_main
from mess_ros.data.labels import LabelSet
from mess_ros.eval.cli import evaluate_command
from mess_ros.eval.errors import LiveError
from mess_ros.eval.results import Evaluation
from mess_ros.eval.runs import RunSpec


def replay_live(
    args: argparse.Namespace, specs: list[RunSpec], labels: LabelSet, topics: dict[str, str]
) -> Evaluation:
    """The bag played to the node at ``--rate``, its masks scored as they arrive."""
    try:
        from mess_ros.ros.live_replay import LiveOptions, evaluate_live
    except ImportError as err:
        msg = f"--live needs ROS 2 (rclpy and the sensor_msgs messages) in this Python: {err}"
        raise LiveError(msg) from err
    options = LiveOptions(
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
    return evaluate_live(args.bag, specs, labels, options, **topics)


@console_main("mess_evaluate")
def main(argv: Sequence[str] | None = None) -> int:
    """The installed ``mess_evaluate``."""
    return evaluate_command(argv, live=replay_live)
