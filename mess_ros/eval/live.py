"""Live evaluation: the bag is played to the segmentation node over DDS.

This measures what a robot would see: frames are published at the recorded
rate (or a multiple of it), the node receives, converts, queues, segments and
publishes exactly as on the robot, and this process takes the ``mask`` and
``exit_info`` it sends back. End-to-end latency is the time from publishing a
frame to receiving its mask, on one clock in one process; a frame without a
mask is a drop; a mask later than the deadline is a miss.

Timing: without ``clock`` each frame is stamped with the wall time at which
it is published (a live camera's stamp), so the node's deadline counts from
that moment. With ``clock`` the recorded stamps are kept and ``/clock`` is
published from the recorded timeline (scaled by ``rate``), which a node
started with ``use_sim_time`` follows, as ``ros2 bag play --clock`` does.

The node is either started here, one process per configuration, with its
parameter file written from the configuration, on its own
``ROS_DOMAIN_ID`` and ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``, and
stopped by PID whatever happens; or it is already running, and each
configuration's run-time parameters are applied through its parameter
service before its pass (engine settings stay as the node was started).

rclpy is imported here and only here in the evaluation package, so the
offline tools work without ROS.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32
from tqdm import tqdm

from mess_ros.common.metrics import ConfusionMatrix
from mess_ros.config import ParameterSpec, SegmentationConfig
from mess_ros.data.labels import LabelSet
from mess_ros.eval.bags import BagFrame, BagReader
from mess_ros.eval.errors import EvalError, FrameError, LiveError
from mess_ros.eval.messages import COMPRESSED_IMAGE_TYPE, decode_mask, restamp
from mess_ros.eval.results import (
    Evaluation,
    ExampleCollector,
    FrameRecord,
    RunResult,
    foreign_ids,
    score_mask,
)
from mess_ros.eval.runs import RunSpec
from mess_ros.ros.processes import default_domain_id

NS_PER_S: Final = 1_000_000_000
NS_PER_MS: Final = 1_000_000
DEFAULT_NODE_NAME: Final = "segmentation_node"

_PARAMETER_TYPES: Final = {
    "bool": Parameter.Type.BOOL,
    "integer": Parameter.Type.INTEGER,
    "double": Parameter.Type.DOUBLE,
    "string": Parameter.Type.STRING,
    "bool_array": Parameter.Type.BOOL_ARRAY,
    "integer_array": Parameter.Type.INTEGER_ARRAY,
    "double_array": Parameter.Type.DOUBLE_ARRAY,
    "string_array": Parameter.Type.STRING_ARRAY,
}


@dataclass(frozen=True)
class LiveOptions:
    """How the bag is played and where the node is.

    ``node_command`` starts the node (the ``segmentation_node`` console
    script of this Python environment by default); ``start_node`` False
    means a node named ``node_name`` is already running in ``domain_id``.
    ``domain_id`` None takes ``ROS_DOMAIN_ID``, or when it is unset, an id
    in 1..101 of this process's own for a started node
    (:func:`~mess_ros.ros.processes.default_domain_id`).
    """

    rate: float = 1.0
    clock: bool = False
    clock_hz: float = 100.0
    start_node: bool = True
    node_command: tuple[str, ...] = ()
    node_name: str = DEFAULT_NODE_NAME
    namespace: str = ""
    domain_id: int | None = None
    startup_timeout_s: float = 120.0
    settle_s: float = 2.0
    examples: int = 6
    max_frames: int | None = None
    progress: bool = True
    log_dir: Path | None = None

    def validate(self) -> None:
        """Refuse impossible options (an :class:`EvalError`: bad input) before anything starts."""
        if not np.isfinite(self.rate) or self.rate <= 0:
            raise EvalError(f"playback rate must be a positive multiple, got {self.rate}")
        if not np.isfinite(self.clock_hz) or self.clock_hz <= 0:
            raise EvalError(f"clock rate must be positive, got {self.clock_hz} Hz")
        if self.domain_id is not None and not 0 <= self.domain_id <= 232:
            raise EvalError(f"ROS_DOMAIN_ID must be in 0..232, got {self.domain_id}")
        if self.startup_timeout_s <= 0 or self.settle_s <= 0:
            raise EvalError("startup and settle timeouts must be positive")

    def topic(self, name: str) -> str:
        """The node's relative topic ``name`` resolved in its namespace."""
        namespace = self.namespace.strip("/")
        return f"/{namespace}/{name}" if namespace else f"/{name}"


def _stamp_ns(msg: Any) -> int:
    return int(msg.header.stamp.sec) * NS_PER_S + int(msg.header.stamp.nanosec)


def _exit_values(msg: DiagnosticArray) -> dict[str, str]:
    if not msg.status:
        return {}
    return {kv.key: kv.value for kv in msg.status[0].values}


def _number(values: dict[str, str], key: str) -> float | None:
    text = values.get(key)
    if text is None or text in ("", "none"):
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return number if np.isfinite(number) else None


def _integer(values: dict[str, str], key: str) -> int | None:
    number = _number(values, key)
    return None if number is None else int(number)


@dataclass
class _Sent:
    """A published frame, kept only as long as its answer may still come."""

    index: int
    size_hw: tuple[int, int]
    gt: np.ndarray | None
    sent_ns: int


@dataclass
class _Output:
    """What came back for one published frame (scored on arrival; no mask is kept)."""

    mask_ns: int | None = None
    confusion: ConfusionMatrix | None = None
    gt_invalid: bool = False
    foreign_ids: tuple[int, ...] = ()
    wrong_size: tuple[int, ...] | None = None
    example: np.ndarray | None = None
    info: dict[str, str] | None = None


@dataclass
class _Pass:
    """One configuration's pass: what was sent and what came back, keyed by stamp.

    Masks are scored against the frame's ground truth as they arrive, so
    memory holds confusion matrices, not masks; a frame's ground truth is
    forgotten once answered or once its answer can no longer be expected.
    """

    labels: LabelSet
    wanted: frozenset[int] = frozenset()
    sent: dict[int, _Sent] = field(default_factory=dict)
    outputs: dict[int, _Output] = field(default_factory=dict)
    last_output_ns: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _unexpired: deque[_Sent] = field(default_factory=deque)

    def _output(self, stamp_ns: int) -> _Output:
        self.last_output_ns = time.monotonic_ns()
        return self.outputs.setdefault(stamp_ns, _Output())

    def on_mask(self, stamp_ns: int, received_ns: int, mask: np.ndarray | None) -> None:
        with self.lock:
            out = self._output(stamp_ns)
            out.mask_ns = received_ns
            frame = self.sent.get(stamp_ns)
            if frame is None or mask is None:
                return
            if mask.shape != frame.size_hw:
                out.wrong_size = tuple(mask.shape)
            elif frame.gt is not None:
                out.confusion = score_mask(self.labels, mask, frame.gt)
                out.gt_invalid = out.confusion is None
                if out.gt_invalid:
                    out.foreign_ids = foreign_ids(self.labels, frame.gt)
            if frame.index in self.wanted:
                out.example = mask
            frame.gt = None

    def on_info(self, stamp_ns: int, info: dict[str, str]) -> None:
        with self.lock:
            self._output(stamp_ns).info = info

    def answered(self, stamp_ns: int) -> bool:
        out = self.outputs.get(stamp_ns)
        if out is None or out.info is None:
            return False
        return out.mask_ns is not None or out.info.get("dropped") == "true"

    def complete(self) -> bool:
        with self.lock:
            return all(self.answered(stamp) for stamp in self.sent)

    def add(self, stamp_ns: int, frame: _Sent) -> None:
        with self.lock:
            self.sent[stamp_ns] = frame
            self._unexpired.append(frame)

    def forget_older_than(self, horizon_ns: int) -> None:
        """Drop the ground truth of frames sent before ``horizon_ns`` (their answer is lost)."""
        with self.lock:
            while self._unexpired and self._unexpired[0].sent_ns < horizon_ns:
                self._unexpired.popleft().gt = None


class _RosLink:
    """This process's ROS side: publishers, subscriptions and a spinning executor."""

    def __init__(self, options: LiveOptions, domain_id: int | None, camera_type: str) -> None:
        self.options = options
        self.context = Context()
        # No rclpy signal handlers: Ctrl-C must reach the caller, who stops the node.
        rclpy.init(
            context=self.context,
            domain_id=domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        try:
            self.node = Node(f"mess_evaluate_{os.getpid()}", context=self.context)
            reliable = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE
            )
            collect = QoSProfile(
                history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE
            )
            image_topic = options.topic("image")
            if camera_type == COMPRESSED_IMAGE_TYPE:
                image_topic += "/compressed"
            self.image_topic = image_topic
            image_type = CompressedImage if camera_type == COMPRESSED_IMAGE_TYPE else Image
            self.image_pub = self.node.create_publisher(image_type, image_topic, reliable)
            self.load_pub = self.node.create_publisher(
                Float32, options.topic("system_load"), reliable
            )
            self.clock_pub = (
                self.node.create_publisher(Clock, "/clock", reliable) if options.clock else None
            )
            self.current: _Pass | None = None
            self.failure: Exception | None = None
            self.node.create_subscription(Image, options.topic("mask"), self._on_mask, collect)
            self.node.create_subscription(
                DiagnosticArray, options.topic("exit_info"), self._on_exit_info, collect
            )
            self.executor = SingleThreadedExecutor(context=self.context)
            self.executor.add_node(self.node)
            self.thread = threading.Thread(target=self._spin, name="mess_live_spin", daemon=True)
            self.thread.start()
        except BaseException:
            rclpy.try_shutdown(context=self.context)
            raise

    def _spin(self) -> None:
        """Run callbacks until closed; a failure is kept for the replay to report, not lost."""
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass
        except Exception as err:
            self.failure = err

    def _on_mask(self, msg: Image) -> None:
        received_ns = time.monotonic_ns()
        current = self.current
        if current is None:
            return
        try:
            mask = decode_mask(msg)
        except FrameError:
            mask = None
        current.on_mask(_stamp_ns(msg), received_ns, mask)

    def _on_exit_info(self, msg: DiagnosticArray) -> None:
        current = self.current
        if current is not None:
            current.on_info(_stamp_ns(msg), _exit_values(msg))

    def node_ready(self, *, clock: bool = False) -> bool:
        """The node subscribes to our images (and /clock) and publishes what we collect."""
        if clock and (self.clock_pub is None or self.clock_pub.get_subscription_count() == 0):
            return False
        return (
            self.image_pub.get_subscription_count() > 0
            and self.node.count_publishers(self.options.topic("mask")) > 0
            and self.node.count_publishers(self.options.topic("exit_info")) > 0
        )

    def publish_clock(self, sim_ns: int) -> None:
        if self.clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(int(sim_ns), NS_PER_S)
            self.clock_pub.publish(msg)

    def set_parameters(self, config: SegmentationConfig, timeout_s: float) -> None:
        """Apply the run-time parameters of ``config`` to the running node, all or none."""
        name = self.options.node_name.strip("/")
        namespace = self.options.namespace.strip("/")
        service = f"/{namespace}/{name}" if namespace else f"/{name}"
        client: Client[Any, Any] = self.node.create_client(
            SetParametersAtomically, f"{service}/set_parameters_atomically"
        )
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                raise LiveError(
                    f"node {service} offers no parameter service within {timeout_s:g} s; is it "
                    "running in this ROS_DOMAIN_ID?"
                )
            request = SetParametersAtomically.Request()
            values = config.to_parameters()
            request.parameters = [
                _parameter(spec, values[spec.name]).to_parameter_msg()
                for spec in config.parameter_specs()
                if not spec.read_only
            ]
            future = client.call_async(request)
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.01)
            response = future.result() if future.done() else None
            if response is None:
                raise LiveError(f"node {service} did not answer the parameter change")
            if not response.result.successful:
                raise LiveError(f"node {service} rejected the parameters: {response.result.reason}")
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        with suppress(Exception):
            self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _parameter(spec: ParameterSpec, value: Any) -> Parameter[Any]:
    return Parameter(spec.name, _PARAMETER_TYPES[spec.type_name], value)


# ---------------------------------------------------------------------------------------------
# The node process


def default_node_command() -> tuple[str, ...]:
    """The ``segmentation_node`` of this environment, or the module run by this interpreter."""
    script = Path(sys.prefix) / "bin" / "segmentation_node"
    if script.is_file():
        return (str(script),)
    return (sys.executable, "-m", "mess_ros.ros.node")


def node_environment(domain_id: int) -> dict[str, str]:
    """The environment a started node runs in: its own domain, discovery kept on this host."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class NodeProcess:
    """A segmentation node started for one configuration; stopped by PID on exit.

    The node's output goes to ``log_path`` so a failure can be explained
    with the node's own words.
    """

    def __init__(
        self,
        command: Sequence[str],
        params_file: Path,
        options: LiveOptions,
        domain_id: int,
        log_path: Path,
    ) -> None:
        ros_args = ["--ros-args", "--params-file", str(params_file)]
        ros_args += ["-r", f"__node:={options.node_name}"]
        if options.namespace.strip("/"):
            ros_args += ["-r", f"__ns:=/{options.namespace.strip('/')}"]
        if options.clock:
            ros_args += ["-p", "use_sim_time:=true"]
        self.command = [*command, *ros_args]
        self.log_path = log_path
        self._log = log_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.command,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=node_environment(domain_id),
                start_new_session=True,
            )
        except OSError as err:
            self._log.close()
            raise LiveError(f"cannot start the node ({' '.join(self.command)}): {err}") from err

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        with suppress(OSError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT (clean shutdown), then SIGTERM, then SIGKILL, to this PID only."""
        try:
            for sig, wait_s in (
                (signal.SIGINT, timeout_s),
                (signal.SIGTERM, 5.0),
                (signal.SIGKILL, 5.0),
            ):
                if self.process.poll() is not None:
                    return
                with suppress(ProcessLookupError):
                    os.kill(self.process.pid, sig)
                with suppress(subprocess.TimeoutExpired):
                    self.process.wait(wait_s)
        finally:
            self._log.close()


# ---------------------------------------------------------------------------------------------
# Replay


def _sleep_until(target_ns: int) -> None:
    while True:
        left = target_ns - time.monotonic_ns()
        if left <= 0:
            return
        time.sleep(min(left / NS_PER_S, 0.05))


# /clock messages sent before each priming frame under simulated time (20 ms apart).
CLOCK_PRIMING_MESSAGES: Final = 10
# A frame not answered this long after it was sent will not be; its ground truth is let go.
ANSWER_HORIZON_S: Final = 30.0


@dataclass
class LiveReplay:
    """Plays frames to a node and turns what comes back into a :class:`RunResult`."""

    link: _RosLink
    options: LiveOptions
    labels: LabelSet
    node: NodeProcess | None = None

    def _check_node(self) -> None:
        """Stop the replay early when the node died or this side stopped receiving."""
        failure = self.link.failure
        if failure is not None:
            raise LiveError(f"receiving the node's answers failed: {failure!r}") from failure
        if self.node is not None and not self.node.alive():
            raise LiveError(
                f"the segmentation node exited with status {self.node.process.returncode}; "
                f"its log ({self.node.log_path}) ends with:\n{self.node.log_tail()}"
            )

    def wait_ready(self, frame: BagFrame, sim_start_ns: int | None) -> None:
        """Wait until the node is discovered and has answered one priming frame.

        Discovery alone does not prove frames flow (matching, the model's
        first run); a frame answered end to end does. Priming frames are
        stamped apart from the replay's (before its first frame under
        ``clock``, where the simulated clock stays at ``sim_start_ns``) and
        are not part of the results.
        """
        deadline = time.monotonic() + self.options.startup_timeout_s
        while not self.link.node_ready(clock=sim_start_ns is not None):
            self._check_node()
            if time.monotonic() > deadline:
                raise LiveError(self._not_ready("was not discovered"))
            time.sleep(0.1)
        probe = _Pass(self.labels)
        self.link.current = probe
        try:
            for attempt in range(1_000_000):
                self._check_node()
                if sim_start_ns is not None:
                    # The node must hold simulated time before the frame arrives.
                    for _ in range(CLOCK_PRIMING_MESSAGES):
                        self.link.publish_clock(sim_start_ns)
                        time.sleep(0.02)
                    stamp = sim_start_ns + attempt
                else:
                    stamp = time.time_ns()
                self.link.image_pub.publish(restamp(frame.message, stamp))
                answer_by = time.monotonic() + 1.0
                while time.monotonic() < answer_by:
                    with probe.lock:
                        if any(out.info is not None for out in probe.outputs.values()):
                            return
                    time.sleep(0.02)
                if time.monotonic() > deadline:
                    break
            raise LiveError(self._not_ready("never answered a frame"))
        finally:
            self.link.current = None

    def _not_ready(self, what: str) -> str:
        text = (
            f"the segmentation node {what} within {self.options.startup_timeout_s:g} s "
            f"(image topic {self.link.image_topic})"
        )
        if self.node is not None:
            text += f"; its log ({self.node.log_path}) ends with:\n{self.node.log_tail()}"
        return text

    def play(
        self, spec: RunSpec, frames: Callable[[], Iterator[BagFrame]], examples: ExampleCollector
    ) -> RunResult:
        """One pass over the frames at the recorded timing; answers matched by stamp."""
        options, link = self.options, self.link
        record = _Pass(self.labels, frozenset(examples.wanted))
        link.current = record
        sent: list[tuple[int, int, int, float | None]] = []  # index, stamp, arrival, load
        origin: tuple[int, int] | None = None  # (wall monotonic, first receive time)
        clock_stop = threading.Event()
        clock_thread: threading.Thread | None = None
        last_load_ns: int | None = None
        horizon_ns = round(max(ANSWER_HORIZON_S, 4 * options.settle_s) * NS_PER_S)
        started = time.perf_counter()
        try:
            for frame in tqdm(
                frames(), disable=not options.progress, unit="frame", desc=f"live {spec.name}"
            ):
                if origin is None:
                    origin = (time.monotonic_ns(), frame.receive_ns)
                    if options.clock:
                        link.publish_clock(frame.receive_ns)
                        clock_thread = threading.Thread(
                            target=self._clock_loop, args=(origin, clock_stop), daemon=True
                        )
                        clock_thread.start()
                wall0, bag0 = origin
                _sleep_until(wall0 + round((frame.receive_ns - bag0) / options.rate))
                self._check_node()
                if frame.load is not None and frame.load_ns != last_load_ns:
                    last_load_ns = frame.load_ns
                    link.load_pub.publish(Float32(data=float(frame.load)))
                stamp = frame.stamp_ns if options.clock else time.time_ns()
                message = frame.message if options.clock else restamp(frame.message, stamp)
                examples.offer_frame(frame.index, frame.image, frame.gt)
                now_ns = time.monotonic_ns()
                record.add(stamp, _Sent(frame.index, frame.size_hw, frame.gt, now_ns))
                link.image_pub.publish(message)
                sent.append((frame.index, stamp, frame.receive_ns - bag0, frame.load))
                record.forget_older_than(now_ns - horizon_ns)
            self._settle(record)
        finally:
            clock_stop.set()
            if clock_thread is not None:
                clock_thread.join()
            link.current = None
        result = RunResult(name=spec.name, parameters=spec.parameters(), labels=self.labels)
        deadline_ms = float(spec.config.deadline.deadline_ms)
        with record.lock:
            for index, stamp, arrival_ns, load in sent:
                out = record.outputs.get(stamp, _Output())
                frame_sent = record.sent[stamp]
                self._add(result, index, stamp, arrival_ns, load, frame_sent, out, deadline_ms)
                if out.example is not None:
                    exit_id = (out.info or {}).get("exit_id")
                    examples.offer_mask(spec.name, index, out.example, exit_id)
        result.wall_s = time.perf_counter() - started
        return result

    def _clock_loop(self, origin: tuple[int, int], stop: threading.Event) -> None:
        wall0, bag0 = origin
        period_s = 1.0 / self.options.clock_hz
        while not stop.is_set():
            elapsed_ns = time.monotonic_ns() - wall0
            self.link.publish_clock(bag0 + round(elapsed_ns * self.options.rate))
            stop.wait(period_s)

    def _settle(self, record: _Pass) -> None:
        """Wait for the last answers: until all came, or nothing new came for ``settle_s``."""
        settle_ns = round(self.options.settle_s * NS_PER_S)
        with record.lock:
            record.last_output_ns = max(record.last_output_ns, time.monotonic_ns())
        while not record.complete():
            with record.lock:
                quiet_ns = time.monotonic_ns() - record.last_output_ns
            if quiet_ns > settle_ns:
                return
            self._check_node()
            time.sleep(0.02)

    @staticmethod
    def _add(
        result: RunResult,
        index: int,
        stamp: int,
        arrival_ns: int,
        load: float | None,
        sent: _Sent,
        out: _Output,
        deadline_ms: float,
    ) -> None:
        info = out.info or {}
        processed = out.mask_ns is not None and info.get("dropped") != "true"
        latency_ms = (out.mask_ns - sent.sent_ns) / NS_PER_MS if out.mask_ns is not None else None
        reason = info.get("reason", "")
        if not processed and not reason:
            reason = "no mask received (replaced while the node was busy, or lost)"
        if out.wrong_size is not None:
            reason = f"mask of shape {out.wrong_size} does not match the {sent.size_hw} frame"
        met = None
        if processed and deadline_ms > 0 and latency_ms is not None:
            met = latency_ms <= deadline_ms
        node_load = _number(info, "load")
        record = FrameRecord(
            index=index,
            stamp_ns=stamp,
            arrival_ms=arrival_ns / NS_PER_MS,
            has_gt=out.confusion is not None or out.gt_invalid,
            processed=processed,
            exit_id=info.get("exit_id") if processed else None,
            exit_index=_integer(info, "exit_index") if processed else None,
            num_exits=_integer(info, "num_exits"),
            confidence=_number(info, "confidence"),
            reason=reason,
            latency_ms=latency_ms if processed else None,
            measured_ms=_number(info, "measured_ms") if processed else None,
            predicted_ms=_number(info, "predicted_ms"),
            deadline_ms=deadline_ms or None,
            met_deadline=met,
            load=node_load if node_load is not None else load,
        )
        result.add_scored(record, out.confusion, gt_invalid=out.gt_invalid, foreign=out.foreign_ids)


# ---------------------------------------------------------------------------------------------
# Entry point


@contextmanager
def _node_for(
    spec: RunSpec,
    options: LiveOptions,
    domain_id: int,
    work_dir: Path,
    compressed: bool,
) -> Iterator[NodeProcess]:
    config = SegmentationConfig.from_parameters(
        {
            "node.image_qos_reliability": "reliable",
            "node.use_compressed": compressed,
        },
        spec.config,
    )
    safe = "".join(c if c.isalnum() else "_" for c in spec.name)
    params_file = work_dir / f"params_{safe}.yaml"
    config.to_yaml(params_file, describe=False)
    command = options.node_command or default_node_command()
    node = NodeProcess(command, params_file, options, domain_id, work_dir / f"node_{safe}.log")
    try:
        yield node
    finally:
        node.stop()


def evaluate_live(
    bag: str | Path,
    specs: Sequence[RunSpec],
    labels: LabelSet,
    options: LiveOptions | None = None,
    *,
    camera_topic: str | None = None,
    gt_topic: str | None = None,
    load_topic: str | None = None,
) -> Evaluation:
    """Play the bag to the node once per configuration and collect what comes back.

    ``labels`` are the model's (for scoring); every pass replays the same
    frames, re-read from the bag so long bags never sit in memory.
    """
    options = options or LiveOptions()
    options.validate()
    if not specs:
        raise EvalError("nothing to evaluate: give at least one configuration")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    started = time.perf_counter()
    domain_id = options.domain_id
    if options.start_node and domain_id is None:
        domain_id = default_domain_id()
    with BagReader(
        bag, camera_topic=camera_topic, gt_topic=gt_topic, load_topic=load_topic
    ) as reader:
        topics = reader.topics
        frame_count = topics.frame_count
        if options.max_frames is not None:
            frame_count = min(frame_count, options.max_frames)
        examples = ExampleCollector(frame_count, options.examples)

        def frames() -> Iterator[BagFrame]:
            return itertools.islice(reader.frames(), options.max_frames)

        stream = reader.frames()
        first = next(stream, None)
        stream.close()
        if first is None:
            raise EvalError(f"bag {bag} has no usable frame on {topics.camera}")
        compressed = topics.camera_type == COMPRESSED_IMAGE_TYPE
        runs: list[RunResult] = []
        link = _RosLink(options, domain_id, topics.camera_type)
        try:
            with tempfile.TemporaryDirectory(prefix="mess_live_") as scratch:
                work_dir = options.log_dir or Path(scratch)
                work_dir.mkdir(parents=True, exist_ok=True)
                for spec in specs:
                    sim_start = first.receive_ns - NS_PER_S if options.clock else None
                    if options.start_node:
                        assert domain_id is not None
                        with _node_for(spec, options, domain_id, work_dir, compressed) as node:
                            replay = LiveReplay(link, options, labels, node)
                            replay.wait_ready(first, sim_start)
                            runs.append(replay.play(spec, frames, examples))
                    else:
                        link.set_parameters(spec.config, options.startup_timeout_s)
                        replay = LiveReplay(link, options, labels)
                        replay.wait_ready(first, sim_start)
                        runs.append(replay.play(spec, frames, examples))
        finally:
            link.close()
        stats = reader.stats
    return Evaluation(
        bag=str(bag),
        mode="live",
        topics=topics.to_dict(),
        labels=labels,
        read=stats.to_dict(),
        runs=runs,
        examples=examples.collected(),
        settings={
            "rate": options.rate,
            "clock": options.clock,
            "started_node": options.start_node,
            "domain_id": domain_id,
            "max_frames": options.max_frames,
            "configurations": [spec.name for spec in specs],
        },
        wall_s=time.perf_counter() - started,
    )
