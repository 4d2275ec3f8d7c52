"""The segmentation pipeline that both node flavours (plain and lifecycle) run.

It is a component held by a node rather than a node subclass, so the plain
node can configure and activate it at once while the lifecycle node maps
the same steps to its transitions.

Topics (relative names, remappable):

* in: ``image`` (``sensor_msgs/Image``; or ``<image>/compressed`` with
  ``node.use_compressed``), ``camera_info``, ``system_load`` (``std_msgs/Float32``,
  share of the machine used by others, 0..1);
* out: ``mask`` (``mono8`` class ids, input header copied), ``mask_color``
  (``rgb8``, only while someone subscribes and ``node.publish_color_mask``),
  ``mask/camera_info`` (the latest camera info scaled to the mask and stamped
  like it), ``exit_info`` (see :mod:`mess_ros.ros.diagnostics`) and
  ``/diagnostics`` every ``node.diagnostics_period_s``.

A frame's deadline counts from its header stamp (so transport delay counts),
carried over to the monotonic clock through the frame's age on the node's
ROS clock; frames without a usable stamp count from reception.

Threads and why:

* ROS callbacks (images, load, camera info, parameters, timer) run on the
  executor thread and never wait for inference: an image callback converts
  the message (a view or one copy) and drops it into a one-place slot.
* one inference thread takes the newest frame from the slot, runs the
  engine and publishes. A frame replaced in the slot before inference
  started is counted as a ``stale`` drop. Publishing the masks is the
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
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32, Header

from mess_ros.common.stamps import time_ns
from mess_ros.config import ConfigError, ParameterSpec, ParamValue, SegmentationConfig
from mess_ros.data.errors import DECODE_ERRORS, ImageFormatError
from mess_ros.data.image_codec import U8Array
from mess_ros.errors import MessError
from mess_ros.ros import qos
from mess_ros.ros.conversions import (
    compressed_to_rgb,
    image_to_rgb,
    mask_to_image,
    rgb_to_image,
    scale_camera_info,
)
from mess_ros.ros.diagnostics import exit_info_message, health_message
from mess_ros.ros.errors import NodeStartupError
from mess_ros.ros.frame_slot import LatestSlot
from mess_ros.ros.params import (
    anchor_to_sources,
    as_declared_types,
    changed_values,
    check_no_undeclared_overrides,
    declare_parameters,
    parameter_sources,
    undeclared_problem,
)
from mess_ros.ros.stats import (
    DROP_ENGINE_ERROR,
    DROP_INACTIVE,
    DROP_LATE,
    DROP_STALE,
    NodeStatistics,
)
from mess_ros.ros.throttle import WarningThrottle
from mess_ros.runtime.engine import EnginePlan, SegmentationEngine, SegmentationResult
from mess_ros.runtime.scheduling import apply_scheduling, describe

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

    header: Header
    image: U8Array
    received_ns: int  # time.monotonic_ns() when the callback got it
    origin_ns: int  # monotonic instant the frame's time budget starts (its stamp, if usable)


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
        self._slot: LatestSlot[PendingFrame] | None = None
        self._worker: threading.Thread | None = None
        self._camera_info: CameraInfo | None = None
        self._subscriptions: list[Subscription[Any]] = []
        self._timer: Timer | None = None
        self._mask_pub: Publisher[Image] | None = None
        self._color_pub: Publisher[Image] | None = None
        self._info_pub: Publisher[CameraInfo] | None = None
        self._exit_pub: Publisher[DiagnosticArray] | None = None
        self._health_pub: Publisher[DiagnosticArray] | None = None
        self._status_name = f"{node.get_fully_qualified_name()}: segmentation"
        self._exit_status_name = f"{node.get_fully_qualified_name()}: exit"
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
        return self._slot is not None and not self._slot.closed

    @property
    def hardware_id(self) -> str:
        return str(self._engine.device) if self._engine is not None else self._config.engine.device

    # --- lifecycle steps -----------------------------------------------------------------

    def configure(self) -> None:
        """Load the model and create the topics; the node is ready but not processing."""
        try:
            self._engine = SegmentationEngine(self._config)
        except MessError as err:
            raise NodeStartupError(f"the segmentation engine could not be built: {err}") from err
        node, cfg = self._node, self._config.node
        out = qos.output_qos()
        self._mask_pub = node.create_publisher(Image, "mask", out)
        self._color_pub = node.create_publisher(Image, "mask_color", out)
        self._info_pub = node.create_publisher(CameraInfo, "mask/camera_info", out)
        self._exit_pub = node.create_publisher(DiagnosticArray, "exit_info", out)
        self._health_pub = node.create_publisher(DiagnosticArray, "/diagnostics", out)
        image_qos = qos.image_qos(cfg.image_qos_reliability, cfg.image_qos_depth)
        if cfg.use_compressed:
            topic = node.resolve_topic_name("image") + "/compressed"
            self._subscriptions.append(
                node.create_subscription(CompressedImage, topic, self._on_compressed, image_qos)
            )
        else:
            self._subscriptions.append(
                node.create_subscription(Image, "image", self._on_image, image_qos)
            )
        small = qos.small_input_qos()
        self._subscriptions.append(
            node.create_subscription(Float32, "system_load", self._on_load, small)
        )
        self._subscriptions.append(
            node.create_subscription(CameraInfo, "camera_info", self._on_camera_info, small)
        )
        self._timer = node.create_timer(cfg.diagnostics_period_s, self._publish_health)
        self._log.info(
            f"ready: device {self.hardware_id}, backend {self._engine.backend}, "
            f"policy {self._config.policy.name}, "
            f"deadline {self._config.deadline.deadline_ms:g} ms, "
            f"listening on {self._subscriptions[0].topic_name}"
        )

    def activate(self) -> None:
        """Start the inference thread; frames received from now on are processed."""
        if self._engine is None:
            raise NodeStartupError("activate() before configure(): no engine is loaded")
        if self.active:
            return
        slot: LatestSlot[PendingFrame] = LatestSlot()
        self._slot = slot
        self._worker = threading.Thread(
            target=self._inference_loop, args=(slot,), name="mess_inference", daemon=True
        )
        self._worker.start()

    def deactivate(self) -> None:
        """Stop the inference thread after its current frame; waiting frames are dropped."""
        slot, worker = self._slot, self._worker
        if slot is not None and slot.close() is not None:
            self._stats.frame_dropped(DROP_INACTIVE)
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
        for sub in self._subscriptions:
            node.destroy_subscription(sub)
        self._subscriptions.clear()
        if self._timer is not None:
            node.destroy_timer(self._timer)
            self._timer = None
        for pub in (self._mask_pub, self._color_pub, self._info_pub, self._exit_pub):
            if pub is not None:
                node.destroy_publisher(pub)
        if self._health_pub is not None:
            node.destroy_publisher(self._health_pub)
        self._mask_pub = self._color_pub = self._info_pub = None
        self._exit_pub = self._health_pub = None
        self._engine = None

    # --- callbacks (executor thread; never block) ----------------------------------------

    def _on_image(self, msg: Image) -> None:
        self._receive(msg, image_to_rgb)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._receive(msg, compressed_to_rgb)

    def _receive(self, msg: _ImageMsg, convert: Callable[[_ImageMsg, int], U8Array]) -> None:
        """Count, convert and offer one image; both image flavours differ only in ``convert``."""
        received_ns = time.monotonic_ns()
        self._stats.frame_received()
        if not self.active:
            self._stats.frame_dropped(DROP_INACTIVE)
            return
        try:
            image = convert(msg, self._config.node.max_image_pixels)
        except ImageFormatError as err:
            self._drop_bad_input(err)
            return
        self._offer(msg.header, image, received_ns)

    def _drop_bad_input(self, err: ImageFormatError) -> None:
        self._stats.frame_dropped(err.cause)
        self._warn(err.cause, f"dropped a malformed image ({err.cause}): {err}")

    def _offer(self, header: Header, image: U8Array, received_ns: int) -> None:
        stamp_ns = time_ns(header.stamp)
        now_ns = self._node.get_clock().now().nanoseconds
        origin_ns, why_not_stamp = budget_origin_ns(stamp_ns, now_ns, received_ns)
        if why_not_stamp is not None and self._config.deadline.deadline_ms > 0:
            self._warn(STAMP_UNUSABLE, f"deadline counts from reception: {why_not_stamp}")
        slot = self._slot
        if slot is None:
            self._stats.frame_dropped(DROP_INACTIVE)
            return
        replaced = slot.put(PendingFrame(header, image, received_ns, origin_ns))
        if replaced is not None:
            self._stats.frame_dropped(DROP_INACTIVE if slot.closed else DROP_STALE)

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

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _validate_parameters(self, parameters: Sequence[Parameter[Any]]) -> SetParametersResult:
        """On-set callback: accept or refuse the change as a whole; applies nothing."""
        # A list whose commit failed in rclpy never reached post-set: its id may be reused.
        self._pending.pop(id(parameters), None)
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
        snapshot = self._stats.snapshot()
        publisher.publish(
            health_message(
                self._node.get_clock().now().to_msg(),
                snapshot,
                status_name=self._status_name,
                hardware_id=self.hardware_id,
                extra=extra,
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

    def _inference_loop(self, slot: LatestSlot[PendingFrame]) -> None:
        self._apply_scheduling(announce=True)
        first = True
        while True:
            frame = slot.take(WORKER_POLL_S)
            if frame is None:
                if slot.closed:
                    return
                continue
            try:
                self._process(frame)
                if first:
                    first = False
                    self._apply_scheduling(announce=False)
            except Exception as err:
                # Whatever one frame does, the node must keep serving the next ones.
                if slot.closed:
                    return
                self._stats.frame_dropped(DROP_ENGINE_ERROR)
                detail = "".join(traceback.format_exception(err))
                self._warn(DROP_ENGINE_ERROR, f"frame failed and was dropped: {err}\n{detail}")

    def _process(self, frame: PendingFrame) -> None:
        engine = self._engine
        if engine is None:
            self._stats.frame_dropped(DROP_INACTIVE)
            return
        config = self._config
        deadline_ms = config.deadline.deadline_ms
        deadline_ns = frame.origin_ns + round(deadline_ms * 1e6) if deadline_ms > 0 else None
        start_ns = time.monotonic_ns()
        changes = engine.thread_changes

        def publish(mask: U8Array) -> None:
            self._publish_masks(frame.header, mask)

        result = engine.infer(frame.image, deadline_ns=deadline_ns, deliver=publish)
        if engine.thread_changes != changes and engine.last_thread_change is not None:
            change = engine.last_thread_change
            self._log.info(f"inference on {change.threads} thread(s): {change.reason}")
        # From the frame's stamp (its capture) to the mask published, as a subscriber sees it.
        end_to_end_ms = (result.done_ns - frame.origin_ns) / 1e6
        queue_ms = (start_ns - frame.received_ns) / 1e6
        if result.dropped:
            self._stats.frame_dropped(DROP_LATE, infeasible=result.infeasible)
        else:
            self._stats.frame_published(
                result.exit_id,
                result.measured_ms,
                end_to_end_ms,
                result.met_deadline,
                result.infeasible,
            )
        self._publish_exit_info(frame.header, result, config, queue_ms, end_to_end_ms)

    def _publish_masks(self, header: Header, mask: U8Array) -> None:
        if self._mask_pub is None:
            return
        self._mask_pub.publish(mask_to_image(mask, header))
        height, width = int(mask.shape[0]), int(mask.shape[1])
        info = self._camera_info
        if info is not None and self._info_pub is not None:
            # A fresh message (scaled when sizes differ) stamped like the mask it describes.
            scaled = scale_camera_info(info, height, width)
            scaled.header = header
            self._info_pub.publish(scaled)
        color_pub, engine = self._color_pub, self._engine
        if (
            self._config.node.publish_color_mask
            and color_pub is not None
            and engine is not None
            and color_pub.get_subscription_count() > 0
        ):
            color_pub.publish(rgb_to_image(engine.labels.colorize(mask), header))

    def _publish_exit_info(
        self,
        header: Header,
        result: SegmentationResult,
        config: SegmentationConfig,
        queue_ms: float,
        end_to_end_ms: float,
    ) -> None:
        if self._exit_pub is None:
            return
        self._exit_pub.publish(
            exit_info_message(
                header,
                result,
                status_name=self._exit_status_name,
                hardware_id=self.hardware_id,
                policy=config.policy.name,
                queue_ms=queue_ms,
                end_to_end_ms=end_to_end_ms,
            )
        )
