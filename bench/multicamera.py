"""Several cameras, one accelerator: one multi-camera node against one node per camera.

For each camera count of ``--cameras`` (1, 2, 3), this script is the cameras
and the consumer at once, in its own process (at raised priority,
``--client-niceness``, so that it measures the nodes and not its own
starvation): every camera publishes 640x480 ``rgb8`` frames of synthetic
scenes (its own pool, its own seed) at ``--rate`` (10 Hz), all cameras
triggered together as on a rig with a common trigger, stamped on the system
clock, and this process subscribes every camera's ``mask`` and
``exit_info``. A frame **misses** when its mask reaches this subscriber later
than ``stamp + --deadline-ms``, or never.

Two set-ups serve the same topics (``cam<i>/image``, ``cam<i>/mask``, ...),
one after the other in the same run, with the same node parameters
(``config/default.yaml``: the ``hybrid`` policy and the bundled model):

* ``one node``: one ``segmentation_node`` with ``cameras.names`` [cam0, ...]:
  one model, one inference thread, the exit-aware scheduler;
* ``per camera``: one ``segmentation_node`` per camera, each in the namespace
  ``/cam<i>``, each with its own model, competing for the same cores.

Measured over ``--seconds`` after a warm-up that is not counted: misses,
mIoU of the received masks against the scenes' ground truth (every second
pixel of every second row), the exits taken (mean exit index, histogram),
and the CPU time (user + system, every thread) of the node process(es)
divided by the masks received. Targets at 3 cameras: the one node misses at
most 2 % of the frames and takes at least 30 % less CPU time per mask than
the nodes per camera, at an mIoU no more than 0.5 points below theirs.

    python -m bench.multicamera [--cameras 1,2,3] [--seconds 60] [--deadline-ms 100]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

if not __package__:  # run as a file (python bench/multicamera.py): the package lives one level up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib
import numpy as np
import numpy.typing as npt
import psutil
from sensor_msgs.msg import Image
from tqdm import tqdm

from bench._common import (
    REPORT_DIR,
    BenchError,
    environment,
    percent,
    print_target,
    run_main,
    write_json,
)
from mess_ros.common.metrics import confusion_matrix, mean_iou
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.package_files import package_data_file
from mess_ros.ros.client import FrameTrace, NodeClient, TickGrid
from mess_ros.ros.conversions import image_to_array
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

NAME: Final = "multicamera"
SCENE_SEED: Final = 2  # the held-out "test" seed of the synthetic scenes; camera i adds 100 i
SCENES: Final = 20
START_TIMEOUT_S: Final = 300.0
DRAIN_S: Final = 1.0
SCORE_STRIDE: Final = 2
SETUPS: Final = ("one node", "per camera")
MAX_MISS: Final = 0.02
MIN_CPU_SAVING: Final = 0.30
MIOU_TOLERANCE: Final = 0.005


@dataclass
class RunResult:
    """What the subscriber saw of one set-up serving one number of cameras."""

    setup: str
    cameras: int
    frames: int
    answered: int
    misses: int
    infeasible: int
    miou: float
    mean_exit_index: float
    exits: dict[str, int]
    cpu_s: float
    rss_mib: float
    latency_p50_ms: float
    latency_p95_ms: float
    per_camera_misses: list[int] = field(default_factory=list)

    @property
    def miss_rate(self) -> float:
        return self.misses / self.frames if self.frames else math.nan

    @property
    def cpu_ms_per_mask(self) -> float:
        return 1e3 * self.cpu_s / self.answered if self.answered else math.nan


# --------------------------------------------------------------------------------------------
# Cameras and scoring
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CameraPool:
    """One camera's prebuilt frames and their ground truth (subsampled for scoring)."""

    name: str
    images: list[Image]
    truths: list[npt.NDArray[np.uint8]]


def camera_pools(count: int, size_hw: tuple[int, int]) -> list[CameraPool]:
    pools = []
    for index in tqdm(range(count), desc="rendering scenes", unit="camera"):
        name = f"cam{index}"
        frames = render_pool(
            SCENES, size_hw, seed=SCENE_SEED + 100 * index, frame_id=f"{name}_optical_frame"
        )
        truths = [
            np.ascontiguousarray(image_to_array(gt)[::SCORE_STRIDE, ::SCORE_STRIDE])
            for _, gt in frames
        ]
        pools.append(CameraPool(name, [image for image, _ in frames], truths))
    return pools


class Scorer:
    """Confusion of every mask this subscriber receives, against the frame's ground truth."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._lock = threading.Lock()
        self._truths: dict[tuple[str, int], npt.NDArray[np.uint8]] = {}
        self._confusion: dict[tuple[str, int], npt.NDArray[np.int64]] = {}

    def expect(self, trace: FrameTrace, truth: npt.NDArray[np.uint8]) -> None:
        with self._lock:
            self._truths[(trace.camera, trace.stamp_ns)] = truth

    def on_mask(self, trace: FrameTrace, msg: Image) -> None:
        key = (trace.camera, trace.stamp_ns)
        with self._lock:
            truth = self._truths.pop(key, None)
        if truth is None:
            return
        mask = image_to_array(msg)[::SCORE_STRIDE, ::SCORE_STRIDE]
        confusion = confusion_matrix(truth, mask, self.num_classes)
        with self._lock:
            self._confusion[key] = confusion

    def miou(self, traces: Sequence[FrameTrace]) -> float:
        with self._lock:
            parts = [self._confusion.get((t.camera, t.stamp_ns)) for t in traces]
        found = [p for p in parts if p is not None]
        return mean_iou(np.sum(found, axis=0)) if found else math.nan


# --------------------------------------------------------------------------------------------
# Nodes
# --------------------------------------------------------------------------------------------


@contextmanager
def running_nodes(
    args: argparse.Namespace, setup: str, cameras: Sequence[str]
) -> Iterator[list[ManagedProcess]]:
    """The node(s) of ``setup``; always stopped by PID, also on failure."""
    overrides: dict[str, Any] = {"deadline.deadline_ms": args.deadline_ms}
    if args.threads:
        overrides["engine.num_threads"] = args.threads
    tag = setup.replace(" ", "_")

    def start(log: Path, namespace: str = "", more: dict[str, Any] | None = None) -> ManagedProcess:
        settings = [parameter_override(k, v) for k, v in {**overrides, **(more or {})}.items()]
        return start_node(
            args.params_file, args.domain_id, log, overrides=settings, namespace=namespace
        )

    with ExitStack() as stack:
        nodes: list[ManagedProcess] = []
        if setup == "one node":
            log = args.log_dir / f"{tag}_{len(cameras)}.log"
            nodes.append(start(log, more={"cameras.names": list(cameras)}))
        else:
            for camera in cameras:
                log = args.log_dir / f"{tag}_{len(cameras)}_{camera}.log"
                nodes.append(start(log, namespace=camera))
        for node in nodes:
            stack.callback(node.stop)
        yield nodes


def check_alive(nodes: Sequence[ManagedProcess]) -> None:
    for node in nodes:
        if not node.alive():
            raise BenchError(f"{node.name} exited:\n{node.tail()}")


def cpu_seconds(nodes: Sequence[ManagedProcess]) -> float:
    total = 0.0
    for node in nodes:
        times = psutil.Process(node.pid).cpu_times()
        total += times.user + times.system
    return total


def rss_mib(nodes: Sequence[ManagedProcess]) -> float:
    return sum(psutil.Process(node.pid).memory_info().rss for node in nodes) / 2**20


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


class Rig:
    """All cameras publishing together on a fixed grid (missed ticks are skipped, not bunched)."""

    def __init__(
        self, client: NodeClient, pools: Sequence[CameraPool], scorer: Scorer, rate_hz: float
    ) -> None:
        self.client = client
        self.pools = pools
        self.scorer = scorer
        self.grid = TickGrid(rate_hz)
        self.ticks = 0

    def tick(self) -> list[FrameTrace]:
        self.grid.wait()
        traces = []
        for pool in self.pools:
            index = self.ticks % len(pool.images)
            trace = self.client.publish_image(pool.images[index], camera=pool.name)
            self.scorer.expect(trace, pool.truths[index])
            traces.append(trace)
        self.ticks += 1
        return traces


def wait_until_serving(rig: Rig, nodes: Sequence[ManagedProcess]) -> None:
    """Publish until every camera has had a mask back (models loaded, topics matched)."""
    start = time.monotonic()
    while True:
        served = {t.camera for t in rig.client.traces() if t.answered}
        if served >= {pool.name for pool in rig.pools}:
            return
        if time.monotonic() - start > START_TIMEOUT_S:
            tails = "\n".join(node.tail() for node in nodes)
            raise BenchError(f"cameras without a mask after {START_TIMEOUT_S:.0f} s:\n{tails}")
        check_alive(nodes)
        rig.tick()


def stream(
    rig: Rig, seconds: float, nodes: Sequence[ManagedProcess], label: str, bar: bool
) -> list[FrameTrace]:
    traces: list[FrameTrace] = []
    end = time.monotonic() + seconds
    with tqdm(total=round(seconds), desc=label, unit="s", disable=not bar) as progress:
        while (now := time.monotonic()) < end:
            traces += rig.tick()
            progress.n = min(round(seconds - (end - now)), round(seconds))
            progress.refresh()
            check_alive(nodes)
    return traces


def run_setup(
    args: argparse.Namespace, setup: str, pools: Sequence[CameraPool], domain_id: int
) -> RunResult:
    cameras = [pool.name for pool in pools]
    label = f"{setup}, {len(cameras)} camera{'s' if len(cameras) > 1 else ''}"
    scorer = Scorer(SYNTHETIC_LABELS.num_classes)
    with running_nodes(args, setup, cameras) as nodes:
        client = NodeClient(
            domain_id, name="mess_multicamera_bench", cameras=cameras, on_mask=scorer.on_mask
        )
        try:
            rig = Rig(client, pools, scorer, args.rate)
            wait_until_serving(rig, nodes)
            stream(rig, args.warmup, nodes, f"{label} warm-up", args.progress)
            for camera in cameras:
                client.forget((t.stamp_ns for t in client.traces()), camera)
            cpu_start = cpu_seconds(nodes)
            traces = stream(rig, args.seconds, nodes, label, args.progress)
            time.sleep(DRAIN_S)
            cpu_s = cpu_seconds(nodes) - cpu_start
            memory = rss_mib(nodes)
        finally:
            client.close()
    return summarize(setup, cameras, traces, scorer, cpu_s, memory, args.deadline_ms)


def summarize(
    setup: str,
    cameras: Sequence[str],
    traces: Sequence[FrameTrace],
    scorer: Scorer,
    cpu_s: float,
    memory_mib: float,
    deadline_ms: float,
) -> RunResult:
    missed = [not t.met(deadline_ms) for t in traces]
    reports = [t.exit_info for t in traces if t.exit_info is not None and t.answered]
    served = [r for r in reports if not r.dropped]
    latencies = np.array([ms for t in traces if (ms := t.end_to_end_ms) is not None])
    return RunResult(
        setup=setup,
        cameras=len(cameras),
        frames=len(traces),
        answered=sum(t.answered for t in traces),
        misses=sum(missed),
        infeasible=sum(r.infeasible for r in reports),
        miou=scorer.miou(traces),
        mean_exit_index=float(np.mean([r.exit_index for r in served])) if served else math.nan,
        exits=dict(Counter(r.exit_id for r in served).most_common()),
        cpu_s=cpu_s,
        rss_mib=memory_mib,
        latency_p50_ms=float(np.percentile(latencies, 50)) if latencies.size else math.nan,
        latency_p95_ms=float(np.percentile(latencies, 95)) if latencies.size else math.nan,
        per_camera_misses=[
            sum(m for m, t in zip(missed, traces, strict=True) if t.camera == camera)
            for camera in cameras
        ],
    )


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def print_table(results: Sequence[RunResult], deadline_ms: float) -> None:
    print(f"\nat the subscriber, deadline {deadline_ms:g} ms after each frame's stamp:")
    header = (
        f"{'cameras':>7} {'set-up':<11} {'frames':>6} {'misses':>8} {'infeas.':>7} "
        f"{'mIoU':>6} {'exit':>5} {'CPU ms/mask':>11} {'RSS MiB':>8} {'p50 ms':>7} "
        f"{'p95 ms':>7}  misses per camera"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.cameras:>7} {r.setup:<11} {r.frames:>6} {percent(r.miss_rate):>8} "
            f"{r.infeasible:>7} {100 * r.miou:>6.2f} {r.mean_exit_index:>5.2f} "
            f"{r.cpu_ms_per_mask:>11.1f} {r.rss_mib:>8.0f} {r.latency_p50_ms:>7.1f} "
            f"{r.latency_p95_ms:>7.1f}  {r.per_camera_misses}"
        )
    print(
        "exit: mean index of the exit taken (0 = earliest); CPU: user + system time of the "
        "node process(es) over the masks received"
    )


def check_targets(results: Sequence[RunResult]) -> None:
    by_key = {(r.setup, r.cameras): r for r in results}
    counts = sorted({r.cameras for r in results})
    for count in counts:
        one, per = by_key.get(("one node", count)), by_key.get(("per camera", count))
        if one is None or per is None:
            continue
        saving = 1.0 - one.cpu_ms_per_mask / per.cpu_ms_per_mask
        print(
            f"{count} camera(s): one node {saving:+.1%} less CPU per mask than one per camera, "
            f"mIoU {100 * (one.miou - per.miou):+.2f} points, "
            f"misses {percent(one.miss_rate).strip()} vs {percent(per.miss_rate).strip()}"
        )
    final = max(counts)
    one, per = by_key.get(("one node", final)), by_key.get(("per camera", final))
    if final != 3 or one is None or per is None:
        print("(the targets are set at 3 cameras)")
        return
    saving = 1.0 - one.cpu_ms_per_mask / per.cpu_ms_per_mask
    print_target(
        "one node, 3 cameras: misses",
        one.miss_rate <= MAX_MISS,
        f"{percent(one.miss_rate).strip()} (target <= {MAX_MISS:.0%})",
    )
    print_target(
        "one node vs one per camera, 3 cameras: CPU time per mask",
        saving >= MIN_CPU_SAVING,
        f"{one.cpu_ms_per_mask:.1f} vs {per.cpu_ms_per_mask:.1f} ms, {saving:.1%} less "
        f"(target >= {MIN_CPU_SAVING:.0%})",
    )
    print_target(
        "one node vs one per camera, 3 cameras: mIoU",
        one.miou >= per.miou - MIOU_TOLERANCE,
        f"{100 * one.miou:.2f} vs {100 * per.miou:.2f} % "
        f"(target: no more than {100 * MIOU_TOLERANCE:.1f} points below)",
    )


def plot(results: Sequence[RunResult], path: Path) -> None:
    counts = sorted({r.cameras for r in results})
    panels: tuple[tuple[str, Callable[[RunResult], float]], ...] = (
        ("misses %", lambda r: 100 * r.miss_rate),
        ("CPU ms per mask", lambda r: r.cpu_ms_per_mask),
        ("mIoU %", lambda r: 100 * r.miou),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(12, 3.4))
    width = 0.38
    for ax, (title, value) in zip(axes, panels, strict=True):
        for offset, setup in zip((-width / 2, width / 2), SETUPS, strict=True):
            values = [
                next((value(r) for r in results if (r.setup, r.cameras) == (setup, n)), math.nan)
                for n in counts
            ]
            ax.bar(np.arange(len(counts)) + offset, values, width, label=setup)
        ax.set_xticks(np.arange(len(counts)), [str(n) for n in counts])
        ax.set_xlabel("cameras")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
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
    try:
        args.camera_counts = sorted({int(n) for n in args.cameras.split(",") if n.strip()})
    except ValueError as err:
        raise BenchError(f"--cameras takes counts like 1,2,3, got {args.cameras!r}") from err
    if not args.camera_counts or min(args.camera_counts) < 1:
        raise BenchError(f"--cameras takes counts of 1 or more, got {args.cameras!r}")
    if not 0 <= args.domain_id <= 101:
        raise BenchError(f"--domain-id must be in 0..101, got {args.domain_id}")
    if args.deadline_ms <= 0 or args.rate <= 0 or args.seconds <= 0:
        raise BenchError("--deadline-ms, --rate and --seconds must be positive")
    args.params_file = Path(args.params_file or package_data_file("config/default.yaml"))
    args.log_dir = args.out.parent / f"{NAME}_logs"
    args.progress = not args.no_progress


def main(args: argparse.Namespace) -> int:
    parse_args_extra(args)
    for warning in apply_scheduling("other", args.client_niceness):
        print(f"warning: the measuring client keeps its priority: {warning}", file=sys.stderr)
    print(
        f"{NAME}: {args.size[1]}x{args.size[0]} rgb8 at {args.rate:g} Hz per camera, cameras "
        f"triggered together, deadline {args.deadline_ms:g} ms, {args.seconds:g} s per run, "
        f"node parameters {args.params_file}"
        + (f", engine.num_threads {args.threads}" if args.threads else "")
    )
    pools = camera_pools(max(args.camera_counts), args.size)
    freeze_heap()  # arrival times are taken in Python: no long collection in between
    results = []
    with sigterm_as_interrupt():
        for count in args.camera_counts:
            for setup in SETUPS:
                results.append(run_setup(args, setup, pools[:count], args.domain_id))
    print_table(results, args.deadline_ms)
    print()
    check_targets(results)
    data = {
        "environment": environment("cpu"),
        "settings": {
            "size_hw": list(args.size),
            "rate_hz": args.rate,
            "deadline_ms": args.deadline_ms,
            "seconds": args.seconds,
            "warmup_s": args.warmup,
            "client_niceness": args.client_niceness,
            "threads": args.threads,
            "params_file": str(args.params_file),
        },
        "runs": [
            {
                **asdict(r),
                "miss_rate": r.miss_rate,
                "cpu_ms_per_mask": r.cpu_ms_per_mask,
            }
            for r in results
        ],
    }
    write_json(args.out, data)
    plot(results, args.out.with_suffix(".png"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"bench/{NAME}.py",
        description="One node for several cameras against one node per camera, at a subscriber.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--params-file", default="", help="node parameters (config/default.yaml)")
    parser.add_argument("--cameras", default="1,2,3", help="camera counts to run")
    parser.add_argument("--seconds", type=float, default=60.0, help="counted seconds per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="uncounted seconds per run")
    parser.add_argument("--rate", type=float, default=10.0, help="frames per second per camera")
    parser.add_argument("--deadline-ms", type=float, default=100.0, help="after each stamp")
    parser.add_argument("--size", dest="size_text", default="480x640", help="HEIGHTxWIDTH")
    parser.add_argument(
        "--threads", type=int, default=0, help="engine.num_threads of every node (0: the file's)"
    )
    parser.add_argument(
        "--client-niceness", type=int, default=-15, help="of this measuring process"
    )
    parser.add_argument(
        "--domain-id",
        type=int,
        default=int(os.environ.get("ROS_DOMAIN_ID", "") or 10 + os.getpid() % 80),
        help="ROS domain of the nodes and this client (0..101)",
    )
    parser.add_argument("--out", type=Path, default=REPORT_DIR / f"{NAME}.json")
    parser.add_argument("--no-progress", action="store_true")
    return parser


if __name__ == "__main__":
    sys.exit(run_main(main, build_parser()))
