"""The segmentation pipeline that both node flavours (plain and lifecycle) run.

It is a component held by a node rather than a node subclass, so the plain
node can configure and activate it at once while the lifecycle node maps
the same steps to its transitions.

Topics (relative names, remappable), per camera (the plain names for a
single camera, ``<name>/...`` for each of ``cameras.names``; see
:mod:`mess_ros.ros.camera_stream`):

* in: ``image`` (``sensor_msgs/Image``; or ``<image>/compressed`` with
  ``node.use_compressed``), ``camera_info``;
* out: ``mask`` (``mono8`` class ids, input header copied), ``mask_color``
  (``rgb8``, only while someone subscribes and ``node.publish_color_mask``),
  ``mask_overlay`` (the image blended with the colour mask, ``rgb8``, only while
  someone subscribes and ``node.publish_overlay``), ``mask/camera_info`` (the
  latest camera info scaled to the mask and stamped like it), ``exit_info``
  (see :mod:`mess_ros.ros.diagnostics`);

and once per node: ``system_load`` in (``std_msgs/Float32``, share of the
machine used by others, 0..1), ``labels`` out (the label set, latched; see
:mod:`mess_ros.ros.label_topic`) and ``/diagnostics`` every
``node.diagnostics_period_s`` (the node's status, then one per camera).

A frame's deadline counts from its header stamp (so transport delay counts),
carried over to the monotonic clock through the frame's age on the node's
ROS clock; frames without a usable stamp count from reception.

Threads and why:

* ROS callbacks (images, load, camera info, parameters, timer) run on the
  executor thread and never wait for inference: an image callback converts
  the message (a view or one copy) and drops it into its camera's one-place
  slot.
* one inference thread serves every camera: of the newest frame waiting per
  camera, the scheduler (:mod:`mess_ros.runtime.frame_scheduler`) picks the
  one to run (earliest deadline first) and the deadline its exits plan for,
  which leaves time to the frames waiting behind it. A frame replaced in its
  slot before inference started is counted as a ``stale`` drop; a camera
  that sends nothing, or only malformed frames, holds up no other. Publishing the masks is the
  engine's last stage of the frame (its ``deliver``): it is timed and
  learnt like the network's stages, every deadline decision budgets for
  it, and a deadline counts as met only when the mask has been published.
  ``node.scheduling_policy`` / ``node.scheduling_priority`` are applied to
  the node's threads when this thread starts.
* parameter changes are validated as a whole in the on-set callback (the
  configuration and the engine's plan for it are built, nothing is changed)
  and applied in the post-set callback, once rclpy has committed the new
  values: the engine swaps plans between frames and the node's configuration
  is replaced. A rejected change leaves everything as it was and returns the
  reason to the caller.
"""

from __future__ import annotations

import gc
import math
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, Header, String

from mess_ros.common.stamps import time_ns
from mess_ros.config import ConfigError, ParameterSpec, ParamValue, SegmentationConfig
from mess_ros.data.errors import DECODE_ERRORS, ImageFormatError
from mess_ros.data.image_codec import U8Array
from mess_ros.errors import MessError
from mess_ros.ros import qos
from mess_ros.ros.camera_stream import CameraStream
from mess_ros.ros.conversions import compressed_to_rgb, image_to_rgb
from mess_ros.ros.diagnostics import CameraHealth, exit_info_message, health_message
from mess_ros.ros.errors import NodeStartupError
from mess_ros.ros.frame_slot import LatestFrames
from mess_ros.ros.label_topic import (
    LABEL_PARAMETERS,
    LABELS_TOPIC,
    declare_label_parameters,
    labels_message,
)
from mess_ros.ros.params import (
    anchor_to_sources,
    as_declared_types,
    changed_values,
    check_no_undeclared_overrides,
    declare_parameters,
    parameter_sources,
    undeclared_problem,
)
from mess_ros.ros.reception import ReceptionAwareShare
from mess_ros.ros.stats import (
    DROP_ENGINE_ERROR,
    DROP_INACTIVE,
    DROP_LATE,
    DROP_STALE,
    NodeStatistics,
)
from mess_ros.ros.throttle import WarningThrottle
from mess_ros.runtime.engine import EnginePlan, SegmentationEngine
from mess_ros.runtime.frame_scheduler import FrameScheduler, ScheduleChoice, WaitingFrame
from mess_ros.runtime.scheduling import apply_scheduling, describe, freeze_heap

BAD_INPUT_CAUSES: Final = frozenset(cls.cause for cls in DECODE_ERRORS)
LOAD_REJECTED: Final = "bad_load"
STAMP_UNUSABLE: Final = "stamp_unusable"

_ImageMsg = TypeVar("_ImageMsg", Image, CompressedImage)

# A frame stamped further in the past than this, or in the future by more than
# the skew, comes from a clock this node cannot compare with (a bag replayed
# without --clock): its deadline then counts from reception instead.
MAX_STAMP_AGE_NS: Final = 10_000_000_000
MAX_STAMP_SKEW_NS: Final = 1_000_000_000

WORKER_POLL_S: Final = 0.5
WORKER_JOIN_S: Final = 10.0


@dataclass(frozen=True)
class PendingChange:
    """A validated parameter change between rclpy's on-set and post-set callbacks."""

    updates: dict[str, ParamValue]
    base: SegmentationConfig  # the running configuration it was validated against
    config: SegmentationConfig
    engine: SegmentationEngine | None  # the engine the plan was built for
    plan: EnginePlan | None


@dataclass(frozen=True)
class PendingFrame:
    """A converted frame waiting for the inference thread."""

    stream: int  # index of its camera
    header: Header
    image: U8Array
    received_ns: int  # time.monotonic_ns() when the callback got it
    origin_ns: int  # monotonic instant the frame's time budget starts (its stamp, if usable)

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


def budget_origin_ns(stamp_ns: int, clock_now_ns: int, received_ns: int) -> tuple[int, str | None]:
    """Monotonic instant a frame's deadline counts from, and why the stamp was not used.

    The deadline is meant from capture (the header stamp): transport delay
    eats into the budget like any other. The stamp is on the node's ROS
    clock, the engine on the monotonic clock, so the frame's age on the ROS
    clock is carried over. Unset stamps and stamps from an incomparable
    clock fall back to the reception instant.
    """
    if stamp_ns <= 0:
        return received_ns, "the frame has no stamp"
    age_ns = clock_now_ns - stamp_ns
    if age_ns > MAX_STAMP_AGE_NS or age_ns < -MAX_STAMP_SKEW_NS:
        return received_ns, (
            f"the frame stamp is {age_ns / 1e9:+.1f} s away from this node's clock "
            "(replaying a bag without --clock / use_sim_time?)"
        )
    return received_ns - max(age_ns, 0), None


class SegmentationCore:
    """Parameters, subscriptions, publishers and the inference thread of one node."""

    def __init__(self, node: Node, parameter_files: Sequence[Path] = ()) -> None:
        """``parameter_files``: the ``--params-file`` arguments (rcl does not expose them)."""
        self._node = node
        self._log = node.get_logger()
        self._specs: dict[str, ParameterSpec] = {
            spec.name: spec for spec in SegmentationConfig.parameter_specs()
        }
        sources = parameter_sources(parameter_files, node.get_fully_qualified_name())
        values = declare_parameters(node, list(self._specs.values()))
        check_no_undeclared_overrides(node, list(self._specs.values()), sources)
        try:
            config = SegmentationConfig.from_parameters(values)
            self._config = anchor_to_sources(config, sources)
        except ConfigError as err:
            raise NodeStartupError(f"invalid parameters: {err}") from err
        self._reconfigure_lock = threading.Lock()
        self._engine: SegmentationEngine | None = None
        self._stats = NodeStatistics(bad_input_causes=BAD_INPUT_CAUSES)
        self._throttle = WarningThrottle()
        self._slots: LatestFrames[PendingFrame] | None = None
        self._scheduler = FrameScheduler()
        self._worker: threading.Thread | None = None
        self._streams: list[CameraStream] = []
        self._subscriptions: list[Subscription[Any]] = []
        self._timer: Timer | None = None
        self._labels_pub: Publisher[String] | None = None
        self._health_pub: Publisher[DiagnosticArray] | None = None
        self._status_name = f"{node.get_fully_qualified_name()}: segmentation"
        self._declaring: frozenset[str] = frozenset()  # read-only facts being declared now
        node.add_pre_set_parameters_callback(lambda ps: as_declared_types(ps, self._specs))
        self._pending: dict[int, PendingChange] = {}
        node.add_on_set_parameters_callback(self._validate_parameters)
        node.add_post_set_parameters_callback(self._apply_parameters)

    # --- state ---------------------------------------------------------------------------

    @property
    def config(self) -> SegmentationConfig:
        """The configuration in force (replaced as a whole on every accepted change)."""
        return self._config

    @property
    def statistics(self) -> NodeStatistics:
        return self._stats

    @property
    def active(self) -> bool:
        return self._slots is not None and not self._slots.closed

    @property
    def cameras(self) -> list[str]:
        """The camera names served ("" for the single camera), in stream order."""
        return [stream.name for stream in self._streams]

    @property
    def hardware_id(self) -> str:
        return str(self._engine.device) if self._engine is not None else self._config.engine.device

    # --- lifecycle steps -----------------------------------------------------------------

    def configure(self) -> None:
        """Load the model and create the topics; the node is ready but not processing."""
        # Several cameras: the node's own reception of their frames competes with inference.
        others = ReceptionAwareShare() if len(self._config.cameras.names) > 1 else None
        try:
            self._engine = SegmentationEngine(self._config, others_cpu_share=others)
        except MessError as err:
            raise NodeStartupError(f"the segmentation engine could not be built: {err}") from err
        node, cfg = self._node, self._config.node
        self._health_pub = node.create_publisher(DiagnosticArray, "/diagnostics", qos.output_qos())
        names = self._config.cameras.names or [""]
        self._streams = [
            CameraStream(node, index, name, self._stats, BAD_INPUT_CAUSES)
            for index, name in enumerate(names)
        ]
        for stream in self._streams:
            stream.create_topics(cfg, self._on_image, self._on_compressed)
        self._subscriptions.append(
            node.create_subscription(Float32, "system_load", self._on_load, qos.small_input_qos())
        )
        labels = self._engine.labels
        self._declaring = LABEL_PARAMETERS
        try:
            declare_label_parameters(node, labels)
        finally:
            self._declaring = frozenset()
        self._labels_pub = node.create_publisher(String, LABELS_TOPIC, qos.latched_qos())
        self._labels_pub.publish(labels_message(labels))
        self._timer = node.create_timer(cfg.diagnostics_period_s, self._publish_health)
        self._log.info(
            f"ready: device {self.hardware_id}, backend {self._engine.backend}, "
            f"policy {self._config.policy.name}, "
            f"deadline {self._config.deadline.deadline_ms:g} ms, "
            f"listening on {', '.join(stream.image_topic for stream in self._streams)}"
        )

    def activate(self) -> None:
        """Start the inference thread; frames received from now on are processed."""
        if self._engine is None:
            raise NodeStartupError("activate() before configure(): no engine is loaded")
        if self.active:
            return
        freeze_heap()  # a full collection over the model's objects would stall a frame
        slots: LatestFrames[PendingFrame] = LatestFrames(len(self._streams))
        self._slots = slots
        self._worker = threading.Thread(
            target=self._inference_loop, args=(slots,), name="mess_inference", daemon=True
        )
        self._worker.start()

    def deactivate(self) -> None:
        """Stop the inference thread after its current frame; waiting frames are dropped."""
        slots, worker = self._slots, self._worker
        if slots is not None:
            for frame in slots.close():
                self._streams[frame.stream].stats.frame_dropped(DROP_INACTIVE)
        if worker is not None:
            worker.join(WORKER_JOIN_S)
            if worker.is_alive():
                self._log.warning(
                    f"inference thread still busy after {WORKER_JOIN_S:.0f} s; leaving it"
                )
        self._worker = None

    def cleanup(self) -> None:
        """Destroy topics and release the model (the reverse of :meth:`configure`)."""
        self.deactivate()
        node = self._node
        for stream in self._streams:
            stream.destroy_topics()
        self._streams = []
        for sub in self._subscriptions:
            node.destroy_subscription(sub)
        self._subscriptions.clear()
        if self._timer is not None:
            node.destroy_timer(self._timer)
            self._timer = None
        for pub in (self._health_pub, self._labels_pub):
            if pub is not None:
                node.destroy_publisher(pub)
        self._health_pub = self._labels_pub = None
        self._engine = None
        gc.unfreeze()  # the released model's cycles can be collected again

    # --- callbacks (executor thread; never block) ----------------------------------------

    def _on_image(self, stream: CameraStream, msg: Image) -> None:
        self._receive(stream, msg, image_to_rgb)

    def _on_compressed(self, stream: CameraStream, msg: CompressedImage) -> None:
        self._receive(stream, msg, compressed_to_rgb)

    def _receive(
        self,
        stream: CameraStream,
        msg: _ImageMsg,
        convert: Callable[[_ImageMsg, int], U8Array],
    ) -> None:
        """Count, convert and offer one image; both image flavours differ only in ``convert``."""
        received_ns = time.monotonic_ns()
        stats = stream.stats
        stats.frame_received()
        if not self.active:
            stats.frame_dropped(DROP_INACTIVE)
            return
        try:
            image = convert(msg, self._config.node.max_image_pixels)
        except ImageFormatError as err:
            stats.frame_dropped(err.cause)
            where = f" on {stream.image_topic}" if stream.name else ""
            self._warn(err.cause, f"dropped a malformed image{where} ({err.cause}): {err}")
            return
        self._offer(stream, msg.header, image, received_ns)

    def _offer(
        self, stream: CameraStream, header: Header, image: U8Array, received_ns: int
    ) -> None:
        stamp_ns = time_ns(header.stamp)
        now_ns = self._node.get_clock().now().nanoseconds
        origin_ns, why_not_stamp = budget_origin_ns(stamp_ns, now_ns, received_ns)
        config = self._config
        if why_not_stamp is not None and config.cameras.deadline_ms(
            stream.index, config.deadline.deadline_ms
        ):
            self._warn(STAMP_UNUSABLE, f"deadline counts from reception: {why_not_stamp}")
        slots = self._slots
        if slots is None:
            stream.stats.frame_dropped(DROP_INACTIVE)
            return
        frame = PendingFrame(stream.index, header, image, received_ns, origin_ns)
        stream.arrivals.frame(origin_ns)
        stream.size_hw = frame.size_hw
        replaced = slots.put(stream.index, frame)
        if replaced is not None:
            stream.stats.frame_dropped(DROP_INACTIVE if slots.closed else DROP_STALE)

    def _on_load(self, msg: Float32) -> None:
        load = float(msg.data)
        if not math.isfinite(load) or not 0.0 <= load <= 1.0:
            self._stats.load_rejected()
            self._warn(LOAD_REJECTED, f"ignored system_load {load}: expected a number in 0..1")
            return
        engine = self._engine
        if engine is None:
            return
        try:
            engine.report_load(load)
        except MessError as err:
            self._stats.load_rejected()
            self._warn(LOAD_REJECTED, f"ignored system_load {load}: {err}")
            return
        self._stats.load_accepted(load)

    def _validate_parameters(self, parameters: Sequence[Parameter[Any]]) -> SetParametersResult:
        """On-set callback: accept or refuse the change as a whole; applies nothing."""
        # A list whose commit failed in rclpy never reached post-set: its id may be reused.
        self._pending.pop(id(parameters), None)
        if parameters and all(p.name in self._declaring for p in parameters):
            return SetParametersResult(successful=True)  # the model's label set, declared here
        undeclared = undeclared_problem(parameters, self._node, self._specs)
        if undeclared is not None:
            self._log.warning(f"rejected parameter change: {undeclared}")
            return SetParametersResult(successful=False, reason=undeclared)
        updates = changed_values(parameters, self._specs)
        if not updates:
            return SetParametersResult(successful=True)
        with self._reconfigure_lock:
            try:
                change = self._prepare(updates)
            except ConfigError as err:
                self._log.warning(f"rejected parameter change {updates}: {err}")
                return SetParametersResult(successful=False, reason=str(err))
            # rclpy hands the same list to the post-set callback once the values are committed.
            self._pending[id(parameters)] = change
        return SetParametersResult(successful=True)

    def _apply_parameters(self, parameters: Sequence[Parameter[Any]]) -> None:
        """Post-set callback: the change is committed in rclpy, make it the running one."""
        with self._reconfigure_lock:
            change = self._pending.pop(id(parameters), None)
            if change is None:
                return
            if change.base is not self._config or change.engine is not self._engine:
                # Another change, or a new engine, came in between: validate on top of it.
                try:
                    change = self._prepare(change.updates)
                except ConfigError as err:
                    self._log.error(f"parameters {change.updates} are set but not applied: {err}")
                    return
            if change.engine is not None and change.plan is not None:
                change.engine.commit(change.plan)
            self._config = change.config
        self._log.info(f"parameters changed: {change.updates}")

    def _prepare(self, updates: dict[str, ParamValue]) -> PendingChange:
        """The change validated against the running configuration and engine (lock held)."""
        base, engine = self._config, self._engine
        config = SegmentationConfig.from_parameters(updates, base=base)
        plan = engine.prepare(config) if engine is not None else None
        return PendingChange(updates, base, config, engine, plan)

    def _publish_health(self) -> None:
        publisher = self._health_pub
        if publisher is None:
            return
        config = self._config
        extra = [
            ("device", self.hardware_id),
            ("policy", config.policy.name),
            ("deadline_ms", f"{config.deadline.deadline_ms:g}"),
            ("active", str(self.active).lower()),
        ]
        cameras = []
        if config.cameras.names:
            extra.append(("cameras", ",".join(config.cameras.names)))
            node_name = self._node.get_fully_qualified_name()
            cameras = [
                CameraHealth(
                    f"{node_name}: camera {stream.name}",
                    stream.stats.snapshot(),
                    [
                        ("camera", stream.name),
                        ("image_topic", stream.image_topic),
                        (
                            "deadline_ms",
                            f"{config.cameras.deadline_ms(i, config.deadline.deadline_ms):g}",
                        ),
                        ("priority", str(config.cameras.priority(i))),
                    ],
                )
                for i, stream in enumerate(self._streams)
            ]
        snapshot = self._stats.snapshot()
        publisher.publish(
            health_message(
                self._node.get_clock().now().to_msg(),
                snapshot,
                status_name=self._status_name,
                hardware_id=self.hardware_id,
                extra=extra,
                cameras=cameras,
            )
        )

    def _warn(self, cause: str, message: str) -> None:
        text = self._throttle.filter(cause, message)
        if text is not None:
            self._log.warning(text)

    # --- inference thread ----------------------------------------------------------------

    def _apply_scheduling(self, announce: bool) -> None:
        """Raise the node's threads (torch's workers and DDS's included) to the configured priority.

        Called when the inference thread starts and again after its first
        frame, when torch has created its worker threads.
        """
        node = self._config.node
        warnings = apply_scheduling(node.scheduling_policy, node.scheduling_priority)
        for warning in warnings:
            self._log.warning(warning)
        if (
            announce
            and not warnings
            and (node.scheduling_policy, node.scheduling_priority)
            != (
                "other",
                0,
            )
        ):
            self._log.info(
                f"threads run at {describe(node.scheduling_policy, node.scheduling_priority)}"
            )

    def _inference_loop(self, slots: LatestFrames[PendingFrame]) -> None:
        self._apply_scheduling(announce=True)
        first = True
        while True:
            waiting = slots.wait(WORKER_POLL_S)
            if not waiting:
                if slots.closed:
                    return
                continue
            frame: PendingFrame | None = None
            try:
                config = self._config  # one configuration for the choice and the frame
                choice = self._choose(waiting, config)
                frame = waiting[choice.frame.stream]
                if not slots.take(frame.stream, frame):
                    continue  # replaced by a newer frame of its camera meanwhile: choose again
                self._process(frame, choice, config)
                if first:
                    first = False
                    self._apply_scheduling(announce=False)
            except Exception as err:
                # Whatever one frame does, the node must keep serving the next ones.
                if slots.closed:
                    return
                stats = self._streams[frame.stream].stats if frame is not None else self._stats
                stats.frame_dropped(DROP_ENGINE_ERROR)
                detail = "".join(traceback.format_exception(err))
                self._warn(DROP_ENGINE_ERROR, f"frame failed and was dropped: {err}\n{detail}")

    def _choose(
        self, waiting: dict[int, PendingFrame], config: SegmentationConfig
    ) -> ScheduleChoice:
        """The frame to run next and the deadline its exits plan for.

        Cameras with no frame waiting but one due soon are planned for too.
        """
        cameras, shared_ms = config.cameras, config.deadline.deadline_ms
        now_ns = time.monotonic_ns()
        # A single camera's frame plans for its own deadline: no other frame's cost is needed.
        engine = self._engine if len(self._streams) > 1 else None
        costs: dict[tuple[int, int], float] = {}

        def candidate(
            index: int, origin_ns: int, size_hw: tuple[int, int], received_ns: int
        ) -> WaitingFrame:
            if engine is not None and size_hw not in costs:
                costs[size_hw] = engine.earliest_exit_ms(size_hw)
            deadline_ms = cameras.deadline_ms(index, shared_ms)
            return WaitingFrame(
                stream=index,
                deadline_ns=origin_ns + round(deadline_ms * 1e6) if deadline_ms > 0 else None,
                priority=cameras.priority(index),
                earliest_ms=costs.get(size_hw, 0.0),
                received_ns=received_ns,
            )

        candidates = [
            candidate(i, frame.origin_ns, frame.size_hw, frame.received_ns)
            for i, frame in waiting.items()
        ]
        expected = []
        for stream in self._streams:
            due_ns = stream.arrivals.next_origin_ns(now_ns)
            if stream.index not in waiting and due_ns is not None and stream.size_hw is not None:
                expected.append(candidate(stream.index, due_ns, stream.size_hw, due_ns))
        return self._scheduler.choose(candidates, now_ns, expected)

    def _process(
        self, frame: PendingFrame, choice: ScheduleChoice, config: SegmentationConfig
    ) -> None:
        engine = self._engine
        stream = self._streams[frame.stream]
        if engine is None:
            stream.stats.frame_dropped(DROP_INACTIVE)
            return
        start_ns = time.monotonic_ns()
        changes = engine.thread_changes

        outputs: list[str] = []

        def publish(mask: U8Array) -> None:
            outputs.extend(
                stream.publish_masks(frame.header, frame.image, mask, engine.labels, config.node)
            )

        result = engine.infer(
            frame.image,
            deadline_ns=choice.frame.deadline_ns,
            deliver=publish,
            plan_deadline_ns=choice.plan_deadline_ns,
        )
        if engine.thread_changes != changes and engine.last_thread_change is not None:
            change = engine.last_thread_change
            self._log.info(f"inference on {change.threads} thread(s): {change.reason}")
        # From the frame's stamp (its capture) to the mask published, as a subscriber sees it.
        end_to_end_ms = (result.done_ns - frame.origin_ns) / 1e6
        queue_ms = (start_ns - frame.received_ns) / 1e6
        if result.dropped:
            stream.stats.frame_dropped(DROP_LATE, infeasible=result.infeasible)
        else:
            stream.stats.frame_published(
                result.exit_id,
                result.measured_ms,
                end_to_end_ms,
                result.met_deadline,
                result.infeasible,
            )
        stream.publish_exit_info(
            exit_info_message(
                frame.header,
                result,
                status_name=f"{self._node.get_fully_qualified_name()}: {stream.topic('exit')}",
                hardware_id=self.hardware_id,
                policy=result.policy,
                queue_ms=queue_ms,
                end_to_end_ms=end_to_end_ms,
                camera=stream.name,
                waiting=choice.waiting,
                outputs=outputs,
            )
        )
        # What a frame takes the one inference thread, reports included: what the next reserve.
        self._scheduler.served((time.monotonic_ns() - start_ns) / 1e6)
