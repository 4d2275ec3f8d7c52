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
parameter file written from the configuration (:func:`~mess_ros.ros.processes.start_node`:
its own ``ROS_DOMAIN_ID``, discovery on this machine, the large-data DDS
profile) and stopped by PID whatever happens; or it is already running, and
each configuration's run-time parameters are applied through its parameter
service before its pass (engine settings stay as the node was started).
Frames go out through one :class:`~mess_ros.ros.client.NodeClient`, as the
recorded bytes, restamped.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
from sensor_msgs.msg import Image
from tqdm import tqdm

from mess_ros.common.metrics import ConfusionMatrix
from mess_ros.common.stamps import NS_PER_S
from mess_ros.config import SegmentationConfig, parameter_file
from mess_ros.data.labels import LabelSet
from mess_ros.eval.bag_reader import BagFrame, BagReader
from mess_ros.eval.errors import EvalError, FrameError, LiveError
from mess_ros.eval.messages import COMPRESSED_IMAGE_TYPE, decode_mask, restamp
from mess_ros.eval.results import (
    Evaluation,
    ExampleCollector,
    FrameRecord,
    RunResult,
    finite_or_none,
    foreign_ids,
    score_mask,
)
from mess_ros.eval.runs import RunSpec
from mess_ros.ros.client import FrameTrace, NodeClient
from mess_ros.ros.errors import RosError
from mess_ros.ros.processes import (
    NODE_NAME,
    ManagedProcess,
    default_domain_id,
    parameter_override,
    start_node,
)

NS_PER_MS: Final = 1_000_000
# /clock messages sent before each priming frame under simulated time (20 ms apart).
CLOCK_PRIMING_MESSAGES: Final = 10
# A frame not answered this long after it was sent will not be; its ground truth is let go.
ANSWER_HORIZON_S: Final = 30.0
# Masks and reports the client keeps queued while it is busy scoring.
ANSWER_DEPTH: Final = 100


@dataclass(frozen=True)
class LiveOptions:
    """How the bag is played and where the node is.

    ``node_command`` starts the node (``python -m mess_ros.ros.node`` with
    this interpreter by default); ``start_node`` False means a node named
    ``node_name`` is already running in ``domain_id``. ``domain_id`` None
    takes ``ROS_DOMAIN_ID``, or when it is unset, an id in 1..101 of this
    process's own for a started node
    (:func:`~mess_ros.ros.processes.default_domain_id`).
    """

    rate: float = 1.0
    clock: bool = False
    clock_hz: float = 100.0
    start_node: bool = True
    node_command: tuple[str, ...] = ()
    node_name: str = NODE_NAME
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


@dataclass
class _Sent:
    """A published frame's ground truth, kept only as long as its answer may still come."""

    index: int
    size_hw: tuple[int, int]
    gt: np.ndarray | None
    sent_ns: int


@dataclass
class _Score:
    """What one mask was worth (scored on arrival; the mask is kept only as an example)."""

    confusion: ConfusionMatrix | None = None
    gt_invalid: bool = False
    foreign_ids: tuple[int, ...] = ()
    wrong_size: tuple[int, ...] | None = None
    example: np.ndarray | None = None


@dataclass
class _Scorer:
    """Scores one configuration's masks against the ground truth of the frames sent, by stamp.

    Memory holds confusion matrices, not masks; a frame's ground truth is
    forgotten once answered or once its answer can no longer be expected.
    """

    labels: LabelSet
    wanted: frozenset[int] = frozenset()
    sent: dict[int, _Sent] = field(default_factory=dict)
    scores: dict[int, _Score] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _unexpired: deque[_Sent] = field(default_factory=deque)

    def add(self, stamp_ns: int, frame: _Sent) -> None:
        with self.lock:
            self.sent[stamp_ns] = frame
            self._unexpired.append(frame)

    def forget_older_than(self, horizon_ns: int) -> None:
        """Drop the ground truth of frames sent before ``horizon_ns`` (their answer is lost)."""
        with self.lock:
            while self._unexpired and self._unexpired[0].sent_ns < horizon_ns:
                self._unexpired.popleft().gt = None

    def score(self, stamp_ns: int, mask: np.ndarray | None) -> None:
        with self.lock:
            frame = self.sent.get(stamp_ns)
            if frame is None or mask is None:
                return
            score = self.scores.setdefault(stamp_ns, _Score())
            if mask.shape != frame.size_hw:
                score.wrong_size = tuple(mask.shape)
            elif frame.gt is not None:
                score.confusion = score_mask(self.labels, mask, frame.gt)
                score.gt_invalid = score.confusion is None
                if score.gt_invalid:
                    score.foreign_ids = foreign_ids(self.labels, frame.gt)
            if frame.index in self.wanted:
                score.example = mask
            frame.gt = None


def _answered(trace: FrameTrace) -> bool:
    """The node has said all it will about the frame: its report, and its mask unless dropped."""
    info = trace.exit_info
    return info is not None and (trace.answered or info.dropped)


def _sleep_until(target_ns: int) -> None:
    while True:
        left = target_ns - time.monotonic_ns()
        if left <= 0:
            return
        time.sleep(min(left / NS_PER_S, 0.05))


class LiveReplay:
    """Plays frames to a node through its own client and turns the answers into a RunResult.

    ``node`` is the process when it was started here: its death ends the
    replay with its log. Masks are scored as they arrive, on the client's
    spin thread. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        options: LiveOptions,
        labels: LabelSet,
        domain_id: int | None,
        *,
        compressed: bool,
    ) -> None:
        self.options = options
        self.labels = labels
        self.node: ManagedProcess | None = None
        self._scorer: _Scorer | None = None
        self.client = NodeClient(
            domain_id,
            name=f"mess_evaluate_{os.getpid()}",
            node_name=options.node_name,
            namespace=options.namespace,
            image_reliability="reliable",
            image_depth=10,
            compressed=compressed,
            output_depth=ANSWER_DEPTH,
            clock=options.clock,
            on_mask=self._on_mask,
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> LiveReplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_mask(self, trace: FrameTrace, msg: Image) -> None:
        scorer = self._scorer
        if scorer is None:
            return
        try:
            mask = decode_mask(msg)
        except FrameError:
            mask = None
        scorer.score(trace.stamp_ns, mask)

    def _check_node(self) -> None:
        """Stop the replay early when the node died or this side stopped receiving."""
        failure = self.client.failure
        if failure is not None:
            raise LiveError(f"receiving the node's answers failed: {failure!r}") from failure
        if self.node is not None:
            try:
                self.node.check_running("the replay")
            except RosError as err:
                raise LiveError(str(err)) from err

    def wait_ready(self, frame: BagFrame, sim_start_ns: int | None) -> None:
        """Wait until the node is discovered and has answered one priming frame.

        Discovery alone does not prove frames flow (matching, the model's
        first run); a frame answered end to end does. Priming frames are
        stamped apart from the replay's (before its first frame under
        ``clock``, where the simulated clock stays at ``sim_start_ns``) and
        are not part of the results.
        """
        client = self.client
        deadline = time.monotonic() + self.options.startup_timeout_s
        while not client.node_discovered():
            self._check_node()
            if time.monotonic() > deadline:
                raise LiveError(self._not_ready("was not discovered"))
            time.sleep(0.1)
        probes: list[FrameTrace] = []
        try:
            for attempt in itertools.count():
                self._check_node()
                if sim_start_ns is not None:
                    # The node must hold simulated time before the frame arrives.
                    for _ in range(CLOCK_PRIMING_MESSAGES):
                        client.publish_clock(sim_start_ns)
                        time.sleep(0.02)
                    stamp = sim_start_ns + attempt
                else:
                    stamp = time.time_ns()
                probes.append(client.publish_serialized(restamp(frame.message, stamp), stamp))
                if client.wait_until(lambda: any(p.exit_info is not None for p in probes), 1.0):
                    # A later probe still in the node would take its newest-frame slot from the
                    # replay's first frames: let it finish (one replaced by another never does).
                    client.wait_until(
                        lambda: all(p.exit_info is not None for p in probes), self.options.settle_s
                    )
                    return
                if time.monotonic() > deadline:
                    raise LiveError(self._not_ready("never answered a frame"))
        finally:
            client.forget(p.stamp_ns for p in probes)

    def _not_ready(self, what: str) -> str:
        text = (
            f"the segmentation node {what} within {self.options.startup_timeout_s:g} s "
            f"(image topic {self.client.image_pub.topic_name})"
        )
        if self.node is not None:
            text += f"; its log ({self.node.log_path}) ends with:\n{self.node.tail()}"
        return text

    def play(
        self, spec: RunSpec, frames: Callable[[], Iterator[BagFrame]], examples: ExampleCollector
    ) -> RunResult:
        """One pass over the frames at the recorded timing; answers matched by stamp."""
        options, client = self.options, self.client
        scorer = _Scorer(self.labels, frozenset(examples.wanted))
        self._scorer = scorer
        sent: list[tuple[int, FrameTrace, int, float | None]] = []  # index, trace, arrival, load
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
                        client.publish_clock(frame.receive_ns)
                        clock_thread = threading.Thread(
                            target=self._clock_loop, args=(origin, clock_stop), daemon=True
                        )
                        clock_thread.start()
                wall0, bag0 = origin
                _sleep_until(wall0 + round((frame.receive_ns - bag0) / options.rate))
                self._check_node()
                if frame.load is not None and frame.load_ns != last_load_ns:
                    last_load_ns = frame.load_ns
                    client.publish_load(frame.load)
                stamp = frame.stamp_ns if options.clock else time.time_ns()
                message = frame.message if options.clock else restamp(frame.message, stamp)
                examples.offer_frame(frame.index, frame.image, frame.gt)
                now_ns = time.monotonic_ns()
                scorer.add(stamp, _Sent(frame.index, frame.size_hw, frame.gt, now_ns))
                trace = client.publish_serialized(message, stamp)
                sent.append((frame.index, trace, frame.receive_ns - bag0, frame.load))
                scorer.forget_older_than(now_ns - horizon_ns)
            self._settle([trace for _, trace, _, _ in sent])
        finally:
            clock_stop.set()
            if clock_thread is not None:
                clock_thread.join()
            self._scorer = None
        result = RunResult(name=spec.name, parameters=spec.parameters(), labels=self.labels)
        deadline_ms = float(spec.config.deadline.deadline_ms)
        with scorer.lock:
            for index, trace, arrival_ns, load in sent:
                score = scorer.scores.get(trace.stamp_ns, _Score())
                size_hw = scorer.sent[trace.stamp_ns].size_hw
                record = _record(index, trace, arrival_ns, load, size_hw, score, deadline_ms)
                result.add_scored(
                    record, score.confusion, gt_invalid=score.gt_invalid, foreign=score.foreign_ids
                )
                if score.example is not None:
                    exit_id = trace.exit_info.exit_id if trace.exit_info is not None else None
                    examples.offer_mask(spec.name, index, score.example, exit_id)
        client.forget(trace.stamp_ns for _, trace, _, _ in sent)
        result.wall_s = time.perf_counter() - started
        return result

    def _clock_loop(self, origin: tuple[int, int], stop: threading.Event) -> None:
        wall0, bag0 = origin
        period_s = 1.0 / self.options.clock_hz
        while not stop.is_set():
            elapsed_ns = time.monotonic_ns() - wall0
            self.client.publish_clock(bag0 + round(elapsed_ns * self.options.rate))
            stop.wait(period_s)

    def _settle(self, traces: Sequence[FrameTrace]) -> None:
        """Wait for the last answers: until all came, or nothing new came for ``settle_s``."""
        settle_ns = round(self.options.settle_s * NS_PER_S)
        quiet_from_ns = time.monotonic_ns()
        while not all(_answered(trace) for trace in traces):
            if time.monotonic_ns() - max(quiet_from_ns, self.client.last_arrival_ns) > settle_ns:
                return
            self._check_node()
            time.sleep(0.02)


def _record(
    index: int,
    trace: FrameTrace,
    arrival_ns: int,
    load: float | None,
    size_hw: tuple[int, int],
    score: _Score,
    deadline_ms: float,
) -> FrameRecord:
    """One frame's line of the results, from what came back for it."""
    info = trace.exit_info
    processed = trace.answered and not (info is not None and info.dropped)
    latency_ms = None
    if trace.mask_monotonic_ns is not None and trace.sent_monotonic_ns is not None:
        latency_ms = (trace.mask_monotonic_ns - trace.sent_monotonic_ns) / NS_PER_MS
    reason = info.reason if info is not None else ""
    if not processed and not reason:
        reason = "no mask received (replaced while the node was busy, or lost)"
    if score.wrong_size is not None:
        reason = f"mask of shape {score.wrong_size} does not match the {size_hw} frame"
    met = None
    if processed and deadline_ms > 0 and latency_ms is not None:
        met = latency_ms <= deadline_ms
    exit_id = exit_index = measured_ms = None
    if info is not None and processed:
        exit_id, exit_index = info.exit_id, info.exit_index
        measured_ms = finite_or_none(info.measured_ms)
    node_load = finite_or_none(info.load) if info is not None else None
    return FrameRecord(
        index=index,
        stamp_ns=trace.stamp_ns,
        arrival_ms=arrival_ns / NS_PER_MS,
        has_gt=score.confusion is not None or score.gt_invalid,
        processed=processed,
        exit_id=exit_id,
        exit_index=exit_index,
        num_exits=info.num_exits if info is not None else None,
        confidence=finite_or_none(info.confidence) if info is not None else None,
        reason=reason,
        latency_ms=latency_ms if processed else None,
        measured_ms=measured_ms,
        predicted_ms=finite_or_none(info.predicted_ms) if info is not None else None,
        deadline_ms=deadline_ms or None,
        met_deadline=met,
        load=node_load if node_load is not None else load,
    )


# ---------------------------------------------------------------------------------------------
# Entry point


@contextmanager
def _node_for(
    spec: RunSpec, options: LiveOptions, domain_id: int, work_dir: Path, compressed: bool
) -> Iterator[ManagedProcess]:
    """The node for one configuration, with a parameter file written from it; always stopped."""
    config = SegmentationConfig.from_parameters(
        {
            "node.image_qos_reliability": "reliable",
            "node.use_compressed": compressed,
        },
        spec.config,
    )
    safe = "".join(c if c.isalnum() else "_" for c in spec.name)
    params_file = work_dir / f"params_{safe}.yaml"
    parameter_file.write(config, params_file, describe=False)
    try:
        node = start_node(
            params_file,
            domain_id,
            work_dir / f"node_{safe}.log",
            overrides=[parameter_override("use_sim_time", True)] if options.clock else (),
            node_name=options.node_name,
            namespace=options.namespace,
            program=options.node_command,
        )
    except RosError as err:
        raise LiveError(str(err)) from err
    try:
        yield node
    finally:
        node.stop()


def _configure_running_node(
    client: NodeClient, config: SegmentationConfig, timeout_s: float
) -> None:
    """Give the running node a configuration's run-time parameters, all or none."""
    try:
        reason = client.set_configuration(config, timeout_s)
    except RosError as err:
        raise LiveError(f"node {client.node_path}: {err}") from err
    if reason:
        raise LiveError(f"node {client.node_path} rejected the parameters: {reason}")


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
        with (
            LiveReplay(options, labels, domain_id, compressed=compressed) as replay,
            tempfile.TemporaryDirectory(prefix="mess_live_") as scratch,
        ):
            work_dir = options.log_dir or Path(scratch)
            work_dir.mkdir(parents=True, exist_ok=True)
            for spec in specs:
                sim_start = first.receive_ns - NS_PER_S if options.clock else None
                if options.start_node:
                    assert domain_id is not None
                    with _node_for(spec, options, domain_id, work_dir, compressed) as node:
                        replay.node = node
                        replay.wait_ready(first, sim_start)
                        runs.append(replay.play(spec, frames, examples))
                else:
                    _configure_running_node(replay.client, spec.config, options.startup_timeout_s)
                    replay.wait_ready(first, sim_start)
                    runs.append(replay.play(spec, frames, examples))
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
