"""``mess_demo`` (``make demo``): the node on the bundled model, a camera and a load change.

What happens, in about 30 seconds after the model has loaded:

1. ``segmentation_node`` and ``synthetic_camera`` start as child processes on a
   domain of their own, discovery limited to this machine.
2. A few seconds of warm-up. Without ``--deadline-ms`` the demo then sets
   ``deadline.deadline_ms`` at run time (a parameter change like ``ros2 param
   set``) to 1.3 x the 90th percentile of the warm-up engine time, so the
   deepest exit fits while the machine is idle.
3. Half-way, busy-looping processes start as a background load. The demo
   measures the share of the CPU used by processes other than the node and
   publishes it on ``system_load`` five times a second; the node's deadline
   policy uses it to predict slower stages and leaves earlier.
4. Masks are scored against the camera's ground truth by stamp; every
   ``exit_info`` is recorded. All children are stopped by PID (SIGINT, then
   SIGKILL), also when something fails, and a summary is printed and written
   with plots to ``reports/demo/``.

With ``--cameras N`` (N > 1) the node serves N synthetic cameras at once
(``cameras.names`` ``cam0`` ... ``camN-1``, one camera process each in the
namespace of its name, scenes of different seeds): one model and one
inference thread for all of them, and the summary counts every camera
together and then each alone.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psutil
from sensor_msgs.msg import Image

from mess_ros.common.metrics import confusion_matrix
from mess_ros.common.stamps import header_stamp_ns
from mess_ros.console import add_debug_option, console_main
from mess_ros.data.labels import SYNTHETIC_LABELS
from mess_ros.errors import MessError
from mess_ros.package_files import command_line_file, package_data_file
from mess_ros.ros import qos
from mess_ros.ros.client import FrameTrace, NodeClient
from mess_ros.ros.conversions import image_to_array
from mess_ros.ros.demo_report import (
    PHASES,
    DemoSummary,
    FrameRecord,
    format_summary,
    summarize_phase,
    write_report,
)
from mess_ros.ros.errors import DemoError, RosError
from mess_ros.ros.processes import (
    ManagedProcess,
    ProcessSet,
    default_domain_id,
    parameter_override,
    python_module_argv,
    ros_environment,
    sigterm_as_interrupt,
    start_node,
)
from mess_ros.runtime.contention import CpuShareMonitor
from mess_ros.runtime.scheduling import freeze_heap

LOAD_PERIOD_S: Final = 0.2
START_TIMEOUT_S: Final = 300.0
DRAIN_S: Final = 1.0
AUTO_DEADLINE_FACTOR: Final = 1.3
BUSY_LOOP: Final = "while True:\n    pass\n"


@dataclass(frozen=True)
class DemoOptions:
    duration_s: float = 30.0
    warmup_s: float = 4.0
    rate_hz: float = 15.0
    height: int = 480
    width: int = 640
    seed: int = 2
    model: str = ""
    params_file: str = ""
    overrides: tuple[str, ...] = ()
    deadline_ms: float = 0.0
    policy: str = ""
    load_at: float = 0.5
    load_processes: int = 0
    out_dir: Path = Path("reports/demo")
    domain_id: int = 0
    cameras: int = 1

    @property
    def camera_names(self) -> list[str]:
        """``cameras.names`` of the node: none for one camera (the plain topics)."""
        return [f"cam{i}" for i in range(self.cameras)] if self.cameras > 1 else []


class DemoRecorder:
    """The demo's consumer: follows the camera's frames through the node, scores, reports load.

    Masks are judged where a robot would judge them, at this subscriber: a
    frame meets its deadline when its mask arrives here by ``stamp +
    deadline`` (one that never arrives misses). Every frame the camera
    published is known by its ground truth, so frames the node never
    answered are counted too.
    """

    def __init__(
        self, domain_id: int, num_classes: int, node_pid: int, cameras: Sequence[str] = ()
    ) -> None:
        self.client = NodeClient(
            domain_id, name="mess_demo", track_all=True, on_mask=self._on_mask, cameras=cameras
        )
        node = self.client.node
        for camera in cameras or [""]:
            node.create_subscription(
                Image,
                f"{camera}/mask_gt" if camera else "mask_gt",
                functools.partial(self._on_gt, camera),
                qos.output_qos(depth=30),
            )
        self.cameras = list(cameras)
        self.num_classes = num_classes
        self.phase = "warmup"
        self.t0_ns: int | None = None
        self.loads: list[tuple[float, float]] = []
        self.confusion = {
            phase: np.zeros((num_classes, num_classes), dtype=np.int64)
            for phase in ("warmup", "idle", "loaded", "done")
        }
        self.scored = dict.fromkeys(self.confusion, 0)
        # Per camera, over the measured phases (idle and loaded).
        self.camera_confusion = {
            camera: np.zeros((num_classes, num_classes), dtype=np.int64) for camera in cameras
        }
        self.camera_scored = dict.fromkeys(cameras, 0)
        self.unscorable = 0
        self._lock = threading.Lock()
        self._phase_of_stamp: dict[tuple[str, int], str] = {}
        self._pending_masks: dict[tuple[str, int], npt.NDArray[np.uint8]] = {}
        self._pending_gt: dict[tuple[str, int], npt.NDArray[np.uint8]] = {}
        self._monitor = CpuShareMonitor(process=psutil.Process(node_pid))
        self._monitor.others_share()
        node.create_timer(LOAD_PERIOD_S, self._report_load)

    def close(self) -> None:
        self.client.close()

    @property
    def masks_received(self) -> int:
        return sum(t.answered for t in self.client.traces())

    def now_s(self) -> float:
        return 0.0 if self.t0_ns is None else (time.time_ns() - self.t0_ns) / 1e9

    def records(self, deadline_ms: float) -> list[FrameRecord]:
        """Every frame the camera published since the start, judged against ``deadline_ms``."""
        with self._lock:
            phases = dict(self._phase_of_stamp)
        origin = self.t0_ns or 0
        records = []
        for trace in sorted(self.client.traces(), key=lambda t: t.stamp_ns):
            phase = phases.get((trace.camera, trace.stamp_ns))
            if phase is None:
                continue  # a mask whose ground truth never came: not a frame of the camera's
            info = trace.exit_info
            latency_ms = math.nan if trace.end_to_end_ms is None else trace.end_to_end_ms
            records.append(
                FrameRecord(
                    t_s=(trace.stamp_ns - origin) / 1e9,
                    phase=phase,
                    exit_id=info.exit_id if info is not None else "",
                    exit_index=info.exit_index if info is not None else -1,
                    num_exits=info.num_exits if info is not None else 0,
                    measured_ms=info.measured_ms if info is not None else math.nan,
                    end_to_end_ms=latency_ms,
                    predicted_ms=info.predicted_ms if info is not None else math.nan,
                    met_deadline=trace.met(deadline_ms) if deadline_ms > 0 else None,
                    load=info.load if info is not None else None,
                    dropped=not trace.answered,
                    infeasible=info is not None and info.infeasible,
                    camera=trace.camera,
                )
            )
        return records

    @property
    def policy(self) -> str:
        return next((t.exit_info.policy for t in self._reports()), "")

    @property
    def device(self) -> str:
        return next((t.exit_info.hardware_id for t in self._reports()), "")

    def _reports(self) -> list[Any]:
        return [t for t in reversed(self.client.traces()) if t.exit_info is not None]

    # --- callbacks (the client's spin thread) --------------------------------------------

    def _on_gt(self, camera: str, msg: Image) -> None:
        stamp = header_stamp_ns(msg)
        self.client.expect(stamp, camera)
        key = (camera, stamp)
        with self._lock:
            if self.t0_ns is None:
                self.t0_ns = stamp
            self._phase_of_stamp[key] = self.phase
            self._pending_gt[key] = np.array(image_to_array(msg), dtype=np.uint8)
            self._score(key)

    def _on_mask(self, trace: FrameTrace, msg: Image) -> None:
        key = (trace.camera, trace.stamp_ns)
        with self._lock:
            self._pending_masks[key] = np.array(image_to_array(msg), dtype=np.uint8)
            self._score(key)

    def _score(self, key: tuple[str, int]) -> None:
        if key in self._pending_masks and key in self._pending_gt:
            pred, gt = self._pending_masks.pop(key), self._pending_gt.pop(key)
            phase = self._phase_of_stamp.get(key, self.phase)
            try:
                confusion = confusion_matrix(gt, pred, self.num_classes)
            except ValueError:
                self.unscorable += 1
            else:
                self.confusion[phase] += confusion
                self.scored[phase] += 1
                camera = key[0]
                if camera in self.camera_confusion and phase in ("idle", "loaded"):
                    self.camera_confusion[camera] += confusion
                    self.camera_scored[camera] += 1
        # Ground truth of frames the node dropped never gets a mask: forget old entries.
        horizon = key[1] - 10_000_000_000
        for pending in (self._pending_gt, self._pending_masks):
            for old in [k for k in pending if k[1] < horizon]:
                del pending[old]

    def _report_load(self) -> None:
        """Share of the CPU used by everything but the node: what competes with it."""
        try:
            load = self._monitor.others_share()
        except psutil.Error:
            return
        if load is None:
            return
        self.client.publish_load(load)
        if self.t0_ns is not None:
            self.loads.append((self.now_s(), load))


def _wait_for_first_mask(recorder: DemoRecorder, node: ManagedProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if recorder.client.wait_until(lambda: recorder.masks_received > 0, 1.0):
            return
        node.check_running("start-up")
    raise DemoError(f"no mask within {timeout_s:.0f} s; node output:\n{node.tail()}")


def _auto_deadline_ms(records: Sequence[FrameRecord]) -> float:
    """1.3 x the 90th percentile of the warm-up's stamp-to-mask time at this subscriber."""
    times = [r.end_to_end_ms for r in records if math.isfinite(r.end_to_end_ms)]
    if not times:
        raise DemoError("no mask arrived during the warm-up; cannot choose a deadline")
    return round(AUTO_DEADLINE_FACTOR * float(np.percentile(times, 90)), 1)


def node_overrides(options: DemoOptions) -> list[str]:
    """The ``--set`` parameters as typed, then what the demo's own options decide."""
    overrides = list(options.overrides)
    if options.model:
        overrides.append(parameter_override("engine.model_path", command_line_file(options.model)))
    if options.policy:
        overrides.append(parameter_override("policy.name", options.policy))
    if options.deadline_ms > 0:
        overrides.append(parameter_override("deadline.deadline_ms", options.deadline_ms))
    if options.camera_names:
        overrides.append(parameter_override("cameras.names", list(options.camera_names)))
    return overrides


def camera_argv(options: DemoOptions, camera: str = "", index: int = 0) -> list[str]:
    """The synthetic camera ``index``; a named one runs in the namespace of its name."""
    argv = python_module_argv(
        "mess_ros.ros.synthetic_camera",
        "--rate",
        f"{options.rate_hz:g}",
        "--height",
        str(options.height),
        "--width",
        str(options.width),
        "--seed",
        str(options.seed + index),
    )
    if camera:
        argv += ["--frame-id", f"{camera}_optical_frame", "--ros-args", "-r", f"__ns:=/{camera}"]
    return argv


@dataclass(frozen=True)
class DemoRun:
    """The outcome of :func:`run_demo`: the summary and the data behind the plots."""

    summary: DemoSummary
    records: list[FrameRecord]
    loads: list[tuple[float, float]]


def run_demo(options: DemoOptions, log: Callable[[str], None] = print) -> DemoRun:
    """Run the whole demo; every process it starts is stopped before this returns."""
    env = ros_environment(options.domain_id)
    env.setdefault("OMP_NUM_THREADS", str(psutil.cpu_count() or 1))
    params_file = Path(options.params_file or package_data_file("config/default.yaml"))
    logs = options.out_dir / "logs"
    recorder: DemoRecorder | None = None
    load_started_s: float | None = None
    deadline_ms, source = options.deadline_ms, "set on the command line"
    hogs = options.load_processes or psutil.cpu_count() or 1
    with sigterm_as_interrupt(), ProcessSet() as processes:
        try:
            log(
                f"starting segmentation_node and synthetic_camera on ROS domain {options.domain_id}"
            )
            node = start_node(
                params_file,
                options.domain_id,
                logs / "node.log",
                overrides=node_overrides(options),
                extra_env={"OMP_NUM_THREADS": env["OMP_NUM_THREADS"]},
                processes=processes,
            )
            cameras = options.camera_names
            recorder = DemoRecorder(
                options.domain_id, SYNTHETIC_LABELS.num_classes, node.pid, cameras
            )
            for index, camera in enumerate(cameras or [""]):
                name = f"synthetic_camera_{camera}" if camera else "synthetic_camera"
                argv = camera_argv(options, camera, index)
                processes.start(name, argv, env, logs / f"{name.replace('synthetic_', '')}.log")
            log("waiting for the node to load and profile the model ...")
            _wait_for_first_mask(recorder, node, START_TIMEOUT_S)
            freeze_heap()  # arrival times are taken in Python: no long collection in between
            log(f"first mask received; warming up for {options.warmup_s:g} s")
            time.sleep(options.warmup_s)
            if deadline_ms <= 0:
                deadline_ms = _auto_deadline_ms(recorder.records(0.0))
                source = f"{AUTO_DEADLINE_FACTOR} x p90 of the warm-up, set at run time"
                reason = recorder.client.set_parameters({"deadline.deadline_ms": deadline_ms})
                if reason:
                    raise DemoError(
                        f"the node refused deadline.deadline_ms={deadline_ms}: {reason}"
                    )
            log(f"deadline {deadline_ms:.1f} ms ({source}); running for {options.duration_s:g} s")
            recorder.phase = "idle"
            start = time.monotonic()
            load_at = start + options.load_at * options.duration_s
            end = start + options.duration_s
            while time.monotonic() < end:
                if load_started_s is None and options.load_at < 1.0 and time.monotonic() >= load_at:
                    for i in range(hogs):
                        processes.start(
                            f"cpu_load_{i}",
                            [sys.executable, "-c", BUSY_LOOP],
                            env,
                            logs / f"cpu_load_{i}.log",
                        )
                    recorder.phase = "loaded"
                    load_started_s = recorder.now_s()
                    log(f"background load: {hogs} busy processes from t = {load_started_s:.1f} s")
                time.sleep(0.1)
                node.check_running("the demo")
            recorder.phase = "done"
            time.sleep(DRAIN_S)
        finally:
            processes.stop_all()
            if recorder is not None:
                recorder.close()
    assert recorder is not None
    records = recorder.records(deadline_ms)
    summary = _summary(
        options, recorder, records, deadline_ms, source, load_started_s, hogs, processes.exit_codes
    )
    return DemoRun(summary, records, list(recorder.loads))


def _summary(
    options: DemoOptions,
    recorder: DemoRecorder,
    records: Sequence[FrameRecord],
    deadline_ms: float,
    source: str,
    load_started_s: float | None,
    hogs: int,
    exit_codes: dict[str, int],
) -> DemoSummary:
    measured = [r for r in records if r.phase in PHASES]
    phases = [
        summarize_phase(
            name,
            [r for r in measured if r.phase == name],
            recorder.confusion[name],
            recorder.scored[name],
        )
        for name in PHASES
        if any(r.phase == name for r in measured)
    ]
    overall = summarize_phase(
        "all",
        measured,
        recorder.confusion["idle"] + recorder.confusion["loaded"],
        recorder.scored["idle"] + recorder.scored["loaded"],
    )
    cameras = [
        summarize_phase(
            camera,
            [r for r in measured if r.camera == camera],
            recorder.camera_confusion[camera],
            recorder.camera_scored[camera],
        )
        for camera in recorder.cameras
    ]
    return DemoSummary(
        duration_s=options.duration_s,
        rate_hz=options.rate_hz,
        frames_published=sum(r.phase in PHASES for r in records),
        masks_received=sum(r.phase in PHASES and not r.dropped for r in records),
        warmup_masks=sum(r.phase == "warmup" and not r.dropped for r in records),
        deadline_ms=deadline_ms,
        deadline_source=source,
        load_started_s=load_started_s,
        load_processes=hogs if load_started_s is not None else 0,
        policy=recorder.policy or options.policy or "unknown",
        device=recorder.device or "unknown",
        phases=phases,
        overall=overall,
        exit_codes=exit_codes,
        cameras=cameras,
    )


def _parse_options(argv: Sequence[str]) -> DemoOptions:
    defaults = DemoOptions()
    parser = argparse.ArgumentParser(
        prog="mess_demo",
        description="Run segmentation_node on a synthetic camera with a load change midway.",
    )
    parser.add_argument("--duration", type=float, default=defaults.duration_s, help="seconds")
    parser.add_argument("--warmup", type=float, default=defaults.warmup_s, help="seconds")
    parser.add_argument("--rate", type=float, default=defaults.rate_hz, help="camera Hz")
    parser.add_argument("--height", type=int, default=defaults.height, help="camera rows")
    parser.add_argument("--width", type=int, default=defaults.width, help="camera columns")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="scene seed")
    parser.add_argument("--model", default="", help="checkpoint (default: the bundled model)")
    parser.add_argument("--params-file", default="", help="default: config/default.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="node parameter override, as ros2 run -p (repeatable)",
    )
    parser.add_argument(
        "--deadline-ms",
        type=float,
        default=0.0,
        help="frame deadline; 0 chooses one from the warm-up and sets it at run time",
    )
    parser.add_argument("--policy", default="", help="exit policy (default: the file's)")
    parser.add_argument(
        "--load-at",
        type=float,
        default=defaults.load_at,
        help="fraction of --duration when the background load starts (1 or more: never)",
    )
    parser.add_argument(
        "--load-processes", type=int, default=0, help="busy processes (default: one per CPU)"
    )
    parser.add_argument(
        "--cameras",
        type=int,
        default=defaults.cameras,
        help="synthetic cameras, all served by the one node (cameras.names cam0, cam1 ...)",
    )
    parser.add_argument("--out", type=Path, default=defaults.out_dir, help="report folder")
    parser.add_argument(
        "--domain-id",
        type=int,
        help="ROS domain of the demo's processes (default: ROS_DOMAIN_ID, else one in 1..101)",
    )
    add_debug_option(parser)
    args = parser.parse_args(list(argv))
    if args.domain_id is None:
        try:
            args.domain_id = default_domain_id()
        except RosError as err:
            parser.error(str(err))
    if args.duration <= 0 or args.rate <= 0 or args.warmup < 0:
        parser.error("--duration and --rate must be positive, --warmup not negative")
    if args.cameras < 1:
        parser.error(f"--cameras must be 1 or more, got {args.cameras}")
    if not 0 <= args.domain_id <= 232:
        parser.error("--domain-id must be in 0..232")
    for item in args.overrides:
        if ":=" not in item:
            parser.error(f"--set expects NAME:=VALUE, got {item!r}")
    return DemoOptions(
        duration_s=args.duration,
        warmup_s=args.warmup,
        rate_hz=args.rate,
        height=args.height,
        width=args.width,
        seed=args.seed,
        model=args.model,
        params_file=args.params_file,
        overrides=tuple(args.overrides),
        deadline_ms=args.deadline_ms,
        policy=args.policy,
        load_at=args.load_at,
        load_processes=args.load_processes,
        out_dir=args.out,
        domain_id=args.domain_id,
        cameras=args.cameras,
    )


@console_main("mess_demo")
def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point: 0 on success, 1 when the demo could not complete."""
    options = _parse_options(sys.argv[1:] if argv is None else argv)
    try:
        run = run_demo(options)
    except KeyboardInterrupt:
        print("mess_demo: interrupted; every process it started was stopped", file=sys.stderr)
        return 130
    except MessError as err:
        print(f"mess_demo: {err}", file=sys.stderr)
        return 1
    print()
    print(format_summary(run.summary))
    written = write_report(options.out_dir, run.summary, run.records, run.loads)
    print(f"\nreport: {written[1]} (figures and summary.json beside it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
