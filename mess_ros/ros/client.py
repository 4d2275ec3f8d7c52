"""A client of ``segmentation_node`` in another process: frames in, masks and reports out.

The demo, live evaluation, the benchmarks and the tests all talk to a node
the way a robot's other nodes do: over DDS, from their own process. This is
the one place that does it. A :class:`NodeClient` has its own rclpy context
on the node's domain and spins it on a thread of its own, so a caller can
publish at a steady rate while every mask is time-stamped the moment it
arrives. Masks and ``exit_info`` reports are matched to the frame they
answer by camera and header stamp (:class:`FrameTrace`). A client of a node
serving several cameras names them (``cameras``) and talks to each on its
own topics (``<camera>/image``, ``<camera>/mask``, ``<camera>/exit_info``).

Arrival times are taken on two clocks: ``time.monotonic_ns`` (for durations
inside this process) and the system clock that ROS stamps are written on
(``time.time_ns``), so that a mask's lateness against ``stamp +
deadline`` is measured where a subscriber would measure it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import MessageInfo
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32

from mess_ros.common.stamps import NS_PER_S, header_stamp_ns
from mess_ros.config import SegmentationConfig
from mess_ros.ros import qos
from mess_ros.ros.conversions import ns_to_stamp
from mess_ros.ros.diagnostics import ExitInfo
from mess_ros.ros.errors import RosError
from mess_ros.ros.params import parameter_type
from mess_ros.ros.processes import NODE_NAME, ManagedProcess, join_ros_environment

SPIN_PERIOD_S: Final = 0.01
# A service call unanswered this long is sent again (when repeating it is harmless).
RETRY_PERIOD_S: Final = 2.0


@dataclass
class FrameTrace:
    """One frame sent to the node and what came back for it (None: nothing yet).

    ``sent_monotonic_ns`` is None for frames another process published (a camera).
    ``camera`` is "" for a single-camera node.
    """

    stamp_ns: int
    sent_monotonic_ns: int | None = None
    mask_monotonic_ns: int | None = None
    mask_system_ns: int | None = None
    mask_dds_ns: int | None = None  # when DDS had the mask here, on the system clock
    exit_info: ExitInfo | None = None
    camera: str = ""

    @property
    def answered(self) -> bool:
        return self.mask_monotonic_ns is not None

    @property
    def end_to_end_ms(self) -> float | None:
        """From the frame's stamp to its mask at this subscriber (None: no mask)."""
        if self.mask_system_ns is None:
            return None
        return (self.mask_system_ns - self.stamp_ns) / 1e6

    def lateness_ms(self, deadline_ms: float) -> float | None:
        """How long after ``stamp + deadline`` the mask arrived (negative: early; None: no mask)."""
        end_to_end = self.end_to_end_ms
        return None if end_to_end is None else end_to_end - deadline_ms

    def met(self, deadline_ms: float) -> bool:
        """The mask reached this subscriber by ``stamp + deadline`` (a missing mask misses)."""
        lateness = self.lateness_ms(deadline_ms)
        return lateness is not None and lateness <= 0.0


MaskCallback = Callable[[FrameTrace, Image], None]


class NodeClient:
    """Publishes frames and load, records masks and exit reports, sets parameters.

    By default only frames this client sent are traced; with ``track_all``
    every mask and report is, so frames of another publisher (a camera
    process) can be followed too (:meth:`expect` registers one seen
    elsewhere, e.g. by its ground truth). ``on_mask`` runs on the client's
    spin thread for every traced mask (e.g. to score it); keep it short. An
    exception it raises stops the spin thread and is kept in :attr:`failure`.

    The client joins ``domain_id`` (None: ``ROS_DOMAIN_ID``, as for any ROS
    process, to reach a node started elsewhere) with the discovery range and
    DDS profile of the nodes this package starts. Topics are the node's
    relative ones resolved in ``namespace``; frames go to ``image``, or to
    ``image/compressed`` as ``CompressedImage`` with ``compressed``; services
    are those of ``node_name`` in that namespace. With ``clock`` the client
    also publishes ``/clock`` (:meth:`publish_clock`) for a node that runs on
    simulated time. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        domain_id: int | None,
        *,
        name: str = "mess_client",
        node_name: str = NODE_NAME,
        namespace: str = "",
        image_reliability: str = "best_effort",
        image_depth: int = 1,
        compressed: bool = False,
        output_depth: int = 30,
        clock: bool = False,
        on_mask: MaskCallback | None = None,
        track_all: bool = False,
        cameras: Sequence[str] = (),
    ) -> None:
        join_ros_environment()
        self.context = Context()
        rclpy.init(
            context=self.context,
            domain_id=domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        namespace = namespace.strip("/")
        try:
            self.node = rclpy.create_node(
                name, context=self.context, namespace=f"/{namespace}" if namespace else None
            )
        except BaseException:
            rclpy.try_shutdown(context=self.context)
            raise
        self.node_name = node_name
        self.node_path = f"/{namespace}/{node_name}" if namespace else f"/{node_name}"
        self.failure: BaseException | None = None
        self._on_mask = on_mask
        self._track_all = track_all
        self._lock = threading.Lock()
        self._frames: dict[tuple[str, int], FrameTrace] = {}
        self._last_stamp_ns = 0
        self._last_arrival_ns = 0
        self._services: dict[str, Client[Any, Any]] = {}
        out = qos.output_qos(depth=output_depth)
        image_qos = qos.image_qos(image_reliability, image_depth)
        self.image_pubs: dict[str, Publisher[Any]] = {}
        self._answer_topics: list[str] = []
        for camera in cameras or [""]:
            prefix = f"{camera}/" if camera else ""
            subscriptions = (
                self.node.create_subscription(
                    Image, f"{prefix}mask", functools.partial(self._on_mask_msg, camera), out
                ),
                self.node.create_subscription(
                    DiagnosticArray,
                    f"{prefix}exit_info",
                    functools.partial(self._on_exit_info, camera),
                    out,
                ),
            )
            self._answer_topics += [sub.topic_name for sub in subscriptions]
            self.image_pubs[camera] = (
                self.node.create_publisher(CompressedImage, f"{prefix}image/compressed", image_qos)
                if compressed
                else self.node.create_publisher(Image, f"{prefix}image", image_qos)
            )
        self.load_pub = self.node.create_publisher(Float32, "system_load", qos.output_qos())
        self.clock_pub = (
            self.node.create_publisher(Clock, "/clock", qos.output_qos(qos.SMALL_TOPIC_DEPTH))
            if clock
            else None
        )
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._spinning = True
        self._thread = threading.Thread(target=self._spin, name="mess_client_spin", daemon=True)
        self._thread.start()

    # --- lifetime ------------------------------------------------------------------------

    def _spin(self) -> None:
        try:
            while self._spinning and self.context.ok():
                self._executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except (ExternalShutdownException, rclpy.executors.ShutdownException):
            pass
        except Exception as err:  # kept for the caller, who reports it; never lost on a thread
            self.failure = err

    def close(self) -> None:
        self._spinning = False
        self._thread.join(5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> NodeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node_discovered(self) -> bool:
        """The node takes this client's frames (and ``/clock``) and publishes its answers."""
        if self.clock_pub is not None and self.clock_pub.get_subscription_count() == 0:
            return False
        return all(pub.get_subscription_count() > 0 for pub in self.image_pubs.values()) and all(
            self.node.count_publishers(topic) > 0 for topic in self._answer_topics
        )

    # --- frames --------------------------------------------------------------------------

    @property
    def image_pub(self) -> Publisher[Any]:
        """The image publisher of a single-camera node."""
        return self._publisher("")

    def _publisher(self, camera: str) -> Publisher[Any]:
        try:
            return self.image_pubs[camera]
        except KeyError as err:
            known = ", ".join(repr(name) for name in self.image_pubs)
            msg = f"this client publishes no images for camera {camera!r}; it has {known}"
            raise RosError(msg) from err

    def _sent(self, stamp_ns: int | None, camera: str) -> FrameTrace:
        """The trace of a frame about to be published: ``stamp_ns``, or now made unique."""
        with self._lock:
            if stamp_ns is None:
                stamp_ns = max(time.time_ns(), self._last_stamp_ns + 1)
            self._last_stamp_ns = max(self._last_stamp_ns, stamp_ns)
            trace = FrameTrace(stamp_ns, time.monotonic_ns(), camera=camera)
            self._frames[(camera, stamp_ns)] = trace
        return trace

    def publish_image(
        self, image: Image | CompressedImage, stamp_ns: int | None = None, camera: str = ""
    ) -> FrameTrace:
        """Stamp ``image`` (``stamp_ns``, else now on the system clock, unique) and publish it."""
        publisher = self._publisher(camera)
        trace = self._sent(stamp_ns, camera)
        image.header.stamp = ns_to_stamp(trace.stamp_ns)
        publisher.publish(image)
        return trace

    def publish_serialized(self, message: bytes, stamp_ns: int) -> FrameTrace:
        """Publish a serialized image message (a recorded one) whose header stamp is ``stamp_ns``.

        The bytes go out as they are, without a round trip through a
        message object; restamping them is the caller's (e.g.
        :func:`mess_ros.eval.messages.restamp`).
        """
        trace = self._sent(stamp_ns, "")
        self.image_pub.publish(message)
        return trace

    def publish_load(self, load: float) -> None:
        self.load_pub.publish(Float32(data=float(load)))

    def publish_clock(self, time_ns: int) -> None:
        """Publish ``/clock`` (only with ``clock``): the simulated time a node follows."""
        if self.clock_pub is None:
            raise RosError("this client was created without clock=True; it cannot publish /clock")
        self.clock_pub.publish(Clock(clock=ns_to_stamp(time_ns)))

    def trace(self, stamp_ns: int, camera: str = "") -> FrameTrace | None:
        with self._lock:
            return self._frames.get((camera, stamp_ns))

    def expect(self, stamp_ns: int, camera: str = "") -> FrameTrace:
        """The trace of a frame another process published (created at first sight)."""
        with self._lock:
            return self._frames.setdefault((camera, stamp_ns), FrameTrace(stamp_ns, camera=camera))

    def _traced(self, stamp_ns: int, camera: str) -> FrameTrace | None:
        trace = self.expect(stamp_ns, camera) if self._track_all else self.trace(stamp_ns, camera)
        if trace is not None:
            self._last_arrival_ns = time.monotonic_ns()
        return trace

    def traces(self) -> list[FrameTrace]:
        """Every frame sent so far, in sending order."""
        with self._lock:
            return list(self._frames.values())

    def forget(self, stamps: Iterable[int], camera: str = "") -> None:
        """Drop the records of frames nobody needs any more (long runs)."""
        with self._lock:
            for stamp in stamps:
                self._frames.pop((camera, stamp), None)

    @property
    def last_arrival_ns(self) -> int:
        """When the latest mask or report of a traced frame arrived (monotonic ns; 0: none yet)."""
        return self._last_arrival_ns

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        """Poll ``predicate`` (callbacks keep running on the spin thread) until true or timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.005)
        return predicate()

    def _on_mask_msg(self, camera: str, msg: Image, info: MessageInfo) -> None:
        monotonic_ns, system_ns = time.monotonic_ns(), time.time_ns()  # first: it is here now
        trace = self._traced(header_stamp_ns(msg), camera)
        if trace is None or trace.answered:
            return
        trace.mask_monotonic_ns, trace.mask_system_ns = monotonic_ns, system_ns
        if info["received_timestamp"] > 0:
            trace.mask_dds_ns = int(info["received_timestamp"])
        if self._on_mask is not None:
            self._on_mask(trace, msg)

    def _on_exit_info(self, camera: str, msg: DiagnosticArray) -> None:
        try:
            info = ExitInfo.from_message(msg)
        except ValueError:
            return
        trace = self._traced(info.stamp_ns, camera)
        if trace is not None:
            trace.exit_info = info

    # --- services and parameters ---------------------------------------------------------

    def call(
        self,
        srv_type: Any,
        service: str,
        request: Any,
        timeout_s: float = 10.0,
        *,
        repeat: bool = False,
    ) -> Any:
        """Call ``service`` of the node (a name under :attr:`node_path`) and return the response.

        With ``repeat`` a request that gets no answer is sent again: DDS
        matches a new client's reply reader some time after the service
        reports itself ready, and a reply sent before that is lost. Only a
        request whose repetition changes nothing may be repeated. Clients
        are kept per service, so only a first call can fall into that window.
        """
        name = f"{self.node_path}/{service}"
        client = self._services.get(name)
        if client is None:
            client = self._services[name] = self.node.create_client(srv_type, name)
        deadline = time.monotonic() + timeout_s
        if not self.wait_until(client.service_is_ready, timeout_s):
            raise RosError(f"{name} is not available; is the node running in this ROS_DOMAIN_ID?")
        while True:
            future = client.call_async(request)
            left_s = max(deadline - time.monotonic(), 0.0)
            if self.wait_until(future.done, min(left_s, RETRY_PERIOD_S) if repeat else left_s):
                response = future.result()
                if response is None:
                    raise RosError(f"{name} failed to answer")
                return response
            client.remove_pending_request(future)
            if time.monotonic() >= deadline:
                raise RosError(f"{name} did not answer in {timeout_s:g} s")

    def set_parameters(
        self, values: Mapping[str, Any] | Sequence[Parameter[Any]], timeout_s: float = 10.0
    ) -> str:
        """Set parameters of the node all at once; '' on success, else the node's reason.

        ``values`` are parameters, or values whose type rclpy infers. The
        request is sent again when no answer comes; setting the same values
        twice changes nothing.
        """
        parameters = (
            [Parameter(name, value=value) for name, value in values.items()]
            if isinstance(values, Mapping)
            else list(values)
        )
        request = SetParametersAtomically.Request(
            parameters=[parameter.to_parameter_msg() for parameter in parameters]
        )
        response = self.call(
            SetParametersAtomically, "set_parameters_atomically", request, timeout_s, repeat=True
        )
        return "" if response.result.successful else str(response.result.reason)

    def set_configuration(self, config: SegmentationConfig, timeout_s: float = 10.0) -> str:
        """Give the node the run-time parameters of ``config`` ('' on success, else why not).

        Read-only parameters (model, device, input size: a restart) are left
        as the node was started; each value is sent with its declared type,
        so an empty list is still the array the node declared.
        """
        values = config.to_parameters()
        parameters = [
            Parameter(spec.name, Parameter.Type(parameter_type(spec)), values[spec.name])
            for spec in config.parameter_specs()
            if not spec.read_only
        ]
        return self.set_parameters(parameters, timeout_s)


class TickGrid:
    """A camera's trigger: ticks on a fixed grid of ``rate_hz`` from the first one.

    When the caller falls behind by more than a period (a busy machine), the
    missed ticks are skipped rather than sent in a burst, as a camera driver
    would: two frames back to back would make the node's keep-last-1
    subscription replace the first before it is taken.
    """

    def __init__(self, rate_hz: float) -> None:
        if rate_hz <= 0:
            raise RosError(f"a camera rate must be above 0 Hz, got {rate_hz:g}")
        self.period_ns = round(NS_PER_S / rate_hz)
        self._next_ns: int | None = None

    def wait(self) -> None:
        """Return at the next tick (at once on the first, or after falling behind)."""
        now_ns = time.monotonic_ns()
        if self._next_ns is None or now_ns - self._next_ns > self.period_ns:
            self._next_ns = now_ns  # first tick, or fell behind: restart the grid from now
        elif now_ns < self._next_ns:
            time.sleep((self._next_ns - now_ns) / 1e9)
        self._next_ns += self.period_ns


class FrameStream:
    """Publishes prebuilt frames through a :class:`NodeClient` at a steady rate, like a camera."""

    def __init__(
        self, client: NodeClient, frames: Sequence[Image], rate_hz: float, camera: str = ""
    ) -> None:
        if not frames or rate_hz <= 0:
            raise RosError("a frame stream needs at least one frame and a rate above 0 Hz")
        self.client = client
        self.camera = camera
        self.frames = list(frames)
        self.grid = TickGrid(rate_hz)
        self.published = 0

    def until_answered(self, node: ManagedProcess, timeout_s: float) -> float:
        """Stream until ``node`` answers a frame (model loaded, topics matched); seconds taken.

        A :class:`RosError` with the node's output when it exits or the
        timeout passes first.
        """
        start_ns = time.monotonic_ns()
        sent: list[FrameTrace] = []
        while not any(trace.answered for trace in sent):
            node.check_running("start-up")
            if time.monotonic_ns() - start_ns > timeout_s * NS_PER_S:
                raise RosError(
                    f"no mask within {timeout_s:.0f} s; {node.name} output:\n{node.tail()}"
                )
            sent.append(self.tick())
        return (time.monotonic_ns() - start_ns) / NS_PER_S

    def tick(self) -> FrameTrace:
        """Wait for the next tick of the grid, then publish the next frame of the pool."""
        self.grid.wait()
        frame = self.frames[self.published % len(self.frames)]
        self.published += 1
        return self.client.publish_image(frame, camera=self.camera)
