"""Deadlines as a robot sees them: masks measured at a subscriber in another process, under load.

``segmentation_node`` runs in its own process on its own ROS domain (discovery
limited to this machine, the large-data Fast DDS profile). This script is the
camera and the consumer, in a second process whose threads run at raised
priority (``--client-niceness``), so that what it measures is the node and
not its own starvation: it publishes 640x480 ``rgb8`` frames of synthetic
scenes at 15 Hz, stamped on the system clock, and subscribes ``mask`` and
``exit_info``. A frame **misses** when its mask reaches this subscriber later
than ``stamp + deadline``, or never.

The deadline is 0.7 x the median end-to-end latency (stamp to mask received)
of the ``final`` policy, measured once at the start of the run on an idle
machine, so the baseline cannot meet it while earlier exits can.

Each configuration runs for ``--seconds`` (90) after a warm-up that is not
counted. During the middle third a real CPU hog (``bench/cpu_hog.py``, one
busy process per core, by default multiplying matrices) occupies the
machine; its measured share is published on ``system_load`` every 100 ms, and
0.0 outside that third, as a robot's load monitor would. Configurations:

* ``final``: the single-exit baseline (nearly every frame misses);
* ``hybrid``: the first confident exit that fits the deadline, load reported;
* ``hybrid, load ignored``: the same with ``deadline.use_load`` false;

each once with the node at default priority and once at the priority the
README recommends (``node.scheduling_priority`` = ``--recommended-niceness``).
Printed per run: misses overall, outside and during the hog, the share of
frames no exit could have saved (``infeasible`` in ``exit_info``), mean exit
index, threads used and the subscriber's latency percentiles. Targets (with
the recommended priority): ``hybrid`` with load misses at most 1 % outside
the hog and 3 % during it, and never more than with the load ignored;
``final`` misses nearly all frames.

    python bench/deadline_e2e.py [--seconds 90] [--rate 15] [--priorities default,recommended]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file (python bench/deadline_e2e.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib
import numpy as np
from tqdm import tqdm

from bench._common import (
    REPORT_DIR,
    BenchError,
    HogProcess,
    environment,
    percent,
    print_target,
    run_main,
    write_json,
)
from mess_ros.package_files import package_data_file
from mess_ros.ros.client import FrameStream, FrameTrace, NodeClient
from mess_ros.ros.processes import (
    ManagedProcess,
    parameter_override,
    sigterm_as_interrupt,
    start_node,
)
from mess_ros.ros.synthetic_camera import render_pool
from mess_ros.runtime.scheduling import apply_scheduling, freeze_heap

matplotlib.use("Agg")
import matplotlib.pyplot as plt

NAME: Final = "deadline_e2e"
HOG: Final = Path(__file__).with_name("cpu_hog.py")
SCENE_SEED: Final = 2  # the held-out "test" seed of the synthetic scenes
SCENES: Final = 24
START_TIMEOUT_S: Final = 300.0
LOAD_PERIOD_S: Final = 0.1
DRAIN_S: Final = 1.0
MAX_OUTSIDE_MISS: Final = 0.01
MAX_DURING_MISS: Final = 0.03
MIN_FINAL_MISS: Final = 0.9


@dataclass(frozen=True)
class Variant:
    """One node configuration of the comparison."""

    label: str
    policy: str
    use_load: bool


VARIANTS: Final = (
    Variant("final", "final", True),
    Variant("hybrid", "hybrid", True),
    Variant("hybrid, load ignored", "hybrid", False),
)


@dataclass
class RunResult:
    """What the subscriber saw in one run of one configuration."""

    label: str
    policy: str
    use_load: bool
    priority: str
    niceness: int
    frames: int
    answered: int
    misses: int
    misses_outside: int
    frames_outside: int
    misses_during: int
    frames_during: int
    infeasible: int
    mean_exit_index: float
    single_thread_frames: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    timeline: list[tuple[float, float, bool, int]] = field(default_factory=list)

    def rate(self, misses: int, frames: int) -> float:
        return misses / frames if frames else math.nan

    @property
    def miss_rate(self) -> float:
        return self.rate(self.misses, self.frames)

    @property
    def outside_rate(self) -> float:
        return self.rate(self.misses_outside, self.frames_outside)

    @property
    def during_rate(self) -> float:
        return self.rate(self.misses_during, self.frames_during)


# --------------------------------------------------------------------------------------------
# Processes: the node and the hog
# --------------------------------------------------------------------------------------------


class Hog(HogProcess):
    """``cpu_hog.py`` in a child process, reporting the share of the cores it takes."""

    def __init__(self, kind: str, workers: int) -> None:
        argv = [sys.executable, str(HOG), "--kind", kind, "--period-ms", "100"]
        if workers:
            argv += ["--workers", str(workers)]
        super().__init__(argv)


@contextmanager
def running_node(
    params_file: Path, overrides: dict[str, Any], domain_id: int, log_path: Path
) -> Iterator[tuple[ManagedProcess, NodeClient]]:
    """The node with ``overrides``, a client on its domain; both always stopped, by PID."""
    settings = [parameter_override(name, value) for name, value in overrides.items()]
    node = start_node(params_file, domain_id, log_path, overrides=settings)
    client: NodeClient | None = None
    try:
        client = NodeClient(domain_id, name="mess_deadline_e2e")
        yield node, client
    finally:
        node.stop()
        if client is not None:
            client.close()


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


def stream(
    camera: FrameStream, seconds: float, node: ManagedProcess, label: str, progress: bool
) -> list[FrameTrace]:
    frames = []
    end = time.monotonic() + seconds
    with tqdm(total=round(seconds), desc=label, unit="s", disable=not progress) as bar:
        while (now := time.monotonic()) < end:
            frames.append(camera.tick())
            bar.n = min(round(seconds - (end - now)), round(seconds))
            bar.refresh()
            node.check_running(label)
    time.sleep(DRAIN_S)
    return frames


def calibrate_deadline_ms(args: argparse.Namespace, domain_id: int) -> tuple[float, float]:
    """Median end-to-end latency of ``final`` on the idle machine, and the deadline from it."""
    overrides = {"policy.name": "final", "deadline.deadline_ms": 0.0}
    log_path = args.log_dir / "calibration.log"
    with running_node(args.params_file, overrides, domain_id, log_path) as (node, client):
        camera = FrameStream(client, args.frames, args.rate)
        camera.until_answered(node, START_TIMEOUT_S)
        stream(camera, args.warmup, node, "calibration warm-up", args.progress)
        frames = stream(camera, args.calibration_seconds, node, "calibration", args.progress)
    latencies = [ms for t in frames if (ms := t.end_to_end_ms) is not None]
    if len(latencies) < 10:
        raise BenchError(f"only {len(latencies)} masks came back during the calibration")
    median_ms = float(np.median(latencies))
    return median_ms, round(args.deadline_factor * median_ms, 2)


def run_variant(
    args: argparse.Namespace,
    variant: Variant,
    priority: str,
    deadline_ms: float,
    domain_id: int,
) -> RunResult:
    niceness = args.recommended_niceness if priority == "recommended" else 0
    overrides = {
        "policy.name": variant.policy,
        "deadline.deadline_ms": deadline_ms,
        "deadline.use_load": variant.use_load,
        "node.scheduling_priority": niceness,
    }
    tag = f"{variant.label} ({priority})"
    log = (
        args.log_dir / f"{variant.policy}_{'load' if variant.use_load else 'noload'}_{priority}.log"
    )
    hog: Hog | None = None
    with running_node(args.params_file, overrides, domain_id, log) as (node, client):
        camera = FrameStream(client, args.frames, args.rate)
        camera.until_answered(node, START_TIMEOUT_S)
        stream(camera, args.warmup, node, f"{tag} warm-up", args.progress)
        client.forget(t.stamp_ns for t in client.traces())
        third = args.seconds / 3
        start = time.monotonic()
        load_at = start
        frames: list[FrameTrace] = []
        hog_window: tuple[int, int] = (0, 0)
        try:
            with tqdm(
                total=round(args.seconds), desc=tag, unit="s", disable=not args.progress
            ) as bar:
                while (elapsed := time.monotonic() - start) < args.seconds:
                    if hog is None and third <= elapsed < 2 * third:
                        hog = Hog(args.hog_kind, args.hog_workers)
                        hog_window = (time.time_ns(), hog_window[1])
                    if hog is not None and elapsed >= 2 * third:
                        hog.stop()
                        hog = None
                        hog_window = (hog_window[0], time.time_ns())
                    if time.monotonic() >= load_at:
                        client.publish_load(hog.load if hog is not None else 0.0)
                        load_at += LOAD_PERIOD_S
                    frames.append(camera.tick())
                    bar.n = min(round(elapsed), round(args.seconds))
                    bar.refresh()
                    node.check_running(tag)
        finally:
            if hog is not None:
                hog.stop()
                hog_window = (hog_window[0], time.time_ns())
        time.sleep(DRAIN_S)
    return summarize(variant, priority, niceness, frames, deadline_ms, hog_window)


def summarize(
    variant: Variant,
    priority: str,
    niceness: int,
    frames: Sequence[FrameTrace],
    deadline_ms: float,
    hog_window: tuple[int, int],
) -> RunResult:
    start, end = hog_window
    during = [start <= t.stamp_ns < end for t in frames]
    missed = [not t.met(deadline_ms) for t in frames]
    reports = [t.exit_info for t in frames if t.exit_info is not None]
    latencies = np.array([ms for t in frames if (ms := t.end_to_end_ms) is not None])
    origin = frames[0].stamp_ns if frames else 0
    timeline = [
        (
            (t.stamp_ns - origin) / 1e9,
            math.nan if t.end_to_end_ms is None else t.end_to_end_ms,
            bool(t.exit_info is not None and t.exit_info.infeasible),
            t.exit_info.exit_index if t.exit_info is not None else -1,
        )
        for t in frames
    ]
    served = [r for r in reports if not r.dropped]
    return RunResult(
        label=variant.label,
        policy=variant.policy,
        use_load=variant.use_load,
        priority=priority,
        niceness=niceness,
        frames=len(frames),
        answered=sum(t.answered for t in frames),
        misses=sum(missed),
        misses_outside=sum(m and not d for m, d in zip(missed, during, strict=True)),
        frames_outside=sum(not d for d in during),
        misses_during=sum(m and d for m, d in zip(missed, during, strict=True)),
        frames_during=sum(during),
        infeasible=sum(r.infeasible for r in reports),
        mean_exit_index=float(np.mean([r.exit_index for r in served])) if served else math.nan,
        single_thread_frames=sum(r.threads == 1 for r in served),
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies.size else math.nan,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies.size else math.nan,
        latency_p99_ms=float(np.percentile(latencies, 99)) if latencies.size else math.nan,
        timeline=timeline,
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def print_table(results: Sequence[RunResult], deadline_ms: float) -> None:
    print(f"\nmisses at the subscriber, deadline {deadline_ms:.1f} ms:")
    header = (
        f"{'configuration':<22} {'priority':<12} {'frames':>6} {'all':>8} {'outside':>8} "
        f"{'hog':>8} {'infeas.':>8} {'exit':>5} {'1-thr':>6} {'p50 ms':>7} {'p95 ms':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.label:<22} {r.priority:<12} {r.frames:>6} {percent(r.miss_rate):>8} "
            f"{percent(r.outside_rate):>8} {percent(r.during_rate):>8} "
            f"{percent(r.rate(r.infeasible, r.frames)):>8} {r.mean_exit_index:>5.2f} "
            f"{percent(r.rate(r.single_thread_frames, r.answered)):>6} "
            f"{r.latency_p50_ms:>7.1f} {r.latency_p95_ms:>7.1f}"
        )


def check_targets(results: Sequence[RunResult]) -> None:
    by_key = {(r.label, r.priority): r for r in results}
    for priority in ("recommended", "default"):
        final = by_key.get(("final", priority))
        hybrid = by_key.get(("hybrid", priority))
        ignored = by_key.get(("hybrid, load ignored", priority))
        if final is not None:
            print_target(
                f"final misses nearly all ({priority})",
                final.miss_rate >= MIN_FINAL_MISS,
                f"{percent(final.miss_rate).strip()} (target >= {MIN_FINAL_MISS:.0%})",
            )
        if hybrid is None:
            continue
        if priority == "recommended":
            print_target(
                "hybrid with load, outside the hog",
                hybrid.outside_rate <= MAX_OUTSIDE_MISS,
                f"{percent(hybrid.outside_rate).strip()} (target <= {MAX_OUTSIDE_MISS:.0%})",
            )
            print_target(
                "hybrid with load, during the hog",
                hybrid.during_rate <= MAX_DURING_MISS,
                f"{percent(hybrid.during_rate).strip()} (target <= {MAX_DURING_MISS:.0%})",
            )
        if ignored is not None:
            print_target(
                f"reporting the load never makes it worse ({priority})",
                hybrid.misses <= ignored.misses,
                f"{hybrid.misses} misses with the load, {ignored.misses} with it ignored",
            )


def plot(results: Sequence[RunResult], deadline_ms: float, path: Path, seconds: float) -> None:
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 2.2 * len(results)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, r in zip(axes, results, strict=True):
        t = np.array([p[0] for p in r.timeline])
        latency = np.array([p[1] for p in r.timeline])
        infeasible = np.array([p[2] for p in r.timeline], dtype=bool)
        ax.axvspan(seconds / 3, 2 * seconds / 3, color="0.9", label="CPU hog")
        ax.plot(t, latency, ".", ms=2, color="tab:blue", label="mask at subscriber")
        ax.plot(t[infeasible], latency[infeasible], "x", ms=4, color="tab:red", label="infeasible")
        lost = np.isnan(latency)
        ax.plot(t[lost], np.full(lost.sum(), deadline_ms), "|", color="k", label="no mask")
        ax.axhline(deadline_ms, color="tab:red", lw=1, ls="--", label="deadline")
        ax.set_ylabel("ms")
        ax.set_ylim(0, 3 * deadline_ms)
        ax.set_title(
            f"{r.label}, {r.priority} priority: misses {percent(r.miss_rate).strip()} "
            f"(hog {percent(r.during_rate).strip()})",
            fontsize=9,
        )
    axes[0].legend(loc="upper right", fontsize=7, ncol=5)
    axes[-1].set_xlabel("s since the first counted frame")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


# --------------------------------------------------------------------------------------------


def parse_args_extra(args: argparse.Namespace) -> None:
    height, _, width = args.size_text.partition("x")
    if not (height.isdigit() and width.isdigit()):
        raise BenchError(f"--size must be HEIGHTxWIDTH, got {args.size_text!r}")
    args.size = (int(height), int(width))
    args.priority_list = [p for p in args.priorities.split(",") if p]
    unknown = set(args.priority_list) - {"default", "recommended"}
    if unknown or not args.priority_list:
        raise BenchError(f"--priorities takes default and/or recommended, got {args.priorities!r}")
    if not 0 <= args.domain_id <= 101:
        raise BenchError(f"--domain-id must be in 0..101, got {args.domain_id}")
    args.params_file = Path(args.params_file or package_data_file("config/default.yaml"))
    args.log_dir = args.out.parent / f"{NAME}_logs"
    args.progress = not args.no_progress
    args.frames = [image for image, _ in render_pool(SCENES, args.size, seed=SCENE_SEED)]


def main(args: argparse.Namespace) -> int:
    parse_args_extra(args)
    warnings = apply_scheduling("other", args.client_niceness)
    for warning in warnings:
        print(f"warning: the measuring client keeps its priority: {warning}", file=sys.stderr)
    freeze_heap()  # arrival times are taken in Python: no long collection in between
    print(
        f"{NAME}: {args.size[1]}x{args.size[0]} rgb8 at {args.rate:g} Hz, {args.seconds:g} s per "
        f"run (hog in the middle third: {args.hog_kind}), node parameters {args.params_file}"
    )
    with sigterm_as_interrupt():
        median_ms, deadline_ms = calibrate_deadline_ms(args, args.domain_id)
        print(
            f"final policy, idle: median end-to-end {median_ms:.1f} ms -> deadline "
            f"{deadline_ms:.1f} ms ({args.deadline_factor:g} x)"
        )
        results = [
            run_variant(args, variant, priority, deadline_ms, args.domain_id)
            for priority in args.priority_list
            for variant in VARIANTS
        ]
    print_table(results, deadline_ms)
    print()
    check_targets(results)
    data = {
        "environment": environment("cpu"),
        "settings": {
            "size_hw": list(args.size),
            "rate_hz": args.rate,
            "seconds": args.seconds,
            "hog": args.hog_kind,
            "client_niceness": args.client_niceness,
            "recommended_niceness": args.recommended_niceness,
            "params_file": str(args.params_file),
        },
        "final_median_ms": median_ms,
        "deadline_ms": deadline_ms,
        "runs": [
            {**{k: v for k, v in asdict(r).items() if k != "timeline"}, "miss_rate": r.miss_rate}
            for r in results
        ],
    }
    write_json(args.out, data)
    plot(results, deadline_ms, args.out.with_suffix(".png"), args.seconds)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"bench/{NAME}.py",
        description="Deadline misses seen by a subscriber in another process, under a CPU hog.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--params-file", default="", help="node parameters (config/default.yaml)")
    parser.add_argument("--seconds", type=float, default=90.0, help="counted seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="uncounted seconds per run")
    parser.add_argument("--calibration-seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=15.0, help="camera frames per second")
    parser.add_argument("--size", dest="size_text", default="480x640", help="HEIGHTxWIDTH")
    parser.add_argument("--deadline-factor", type=float, default=0.7)
    parser.add_argument("--priorities", default="default,recommended")
    parser.add_argument("--recommended-niceness", type=int, default=-10)
    parser.add_argument(
        "--client-niceness", type=int, default=-15, help="of this measuring process"
    )
    parser.add_argument("--hog-kind", choices=("spin", "matmul"), default="matmul")
    parser.add_argument("--hog-workers", type=int, default=0, help="0 = one per core")
    parser.add_argument(
        "--domain-id",
        type=int,
        default=int(os.environ.get("ROS_DOMAIN_ID", "") or 10 + os.getpid() % 80),
        help="ROS domain of the node and this client (0..101)",
    )
    parser.add_argument("--out", type=Path, default=REPORT_DIR / f"{NAME}.json")
    parser.add_argument("--no-progress", action="store_true")
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
