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
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParametersAtomically
from rclpy.client import Client
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import Image
from std_msgs.msg import Float32

from mess_ros.package_files import package_data_file
from mess_ros.ros import qos
from mess_ros.ros.diagnostics import ExitInfo
from mess_ros.ros.errors import RosError
from mess_ros.ros.processes import PROFILE_NAME, PROFILE_VARIABLE

NS_PER_S: Final = 1_000_000_000
DEFAULT_NODE_NAME: Final = "segmentation_node"
SPIN_PERIOD_S: Final = 0.01


def stamp_to_ns(stamp: Time) -> int:
    """A ``builtin_interfaces/Time`` as integer nanoseconds."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Time:
    return Time(sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)


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

    def lateness_ms(self, deadline_ms: float) -> float | None:
        """How long after ``stamp + deadline`` the mask arrived (negative: early; None: no mask)."""
        if self.mask_system_ns is None:
            return None
        return (self.mask_system_ns - self.stamp_ns) / 1e6 - deadline_ms

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
    spin thread for every traced mask (e.g. to score it); keep it short.
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        domain_id: int,
        *,
        name: str = "mess_client",
        node_name: str = DEFAULT_NODE_NAME,
        image_reliability: str = "best_effort",
        image_depth: int = 1,
        output_depth: int = 30,
        on_mask: MaskCallback | None = None,
        track_all: bool = False,
        cameras: Sequence[str] = (),
    ) -> None:
        # Read by Fast DDS when the participant is created: a camera frame is larger than the
        # default shared-memory segment, and discovery stays on this machine unless set.
        os.environ.setdefault(PROFILE_VARIABLE, str(package_data_file(f"config/{PROFILE_NAME}")))
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        self.context = Context()
        rclpy.init(
            context=self.context,
            domain_id=domain_id,
            signal_handler_options=SignalHandlerOptions.NO,
        )
        self.node = rclpy.create_node(name, context=self.context)
        self.node_name = node_name
        self._on_mask = on_mask
        self._track_all = track_all
        self._lock = threading.Lock()
        self._frames: dict[tuple[str, int], FrameTrace] = {}
        self._last_stamp_ns = 0
        out = qos.output_qos(depth=output_depth)
        image_qos = qos.image_qos(image_reliability, image_depth)
        self.image_pubs: dict[str, Publisher[Image]] = {}
        for camera in cameras or [""]:
            prefix = f"{camera}/" if camera else ""
            self.node.create_subscription(
                Image, f"{prefix}mask", functools.partial(self._on_mask_msg, camera), out
            )
            self.node.create_subscription(
                DiagnosticArray,
                f"{prefix}exit_info",
                functools.partial(self._on_exit_info, camera),
                out,
            )
            self.image_pubs[camera] = self.node.create_publisher(Image, f"{prefix}image", image_qos)
        self.load_pub = self.node.create_publisher(Float32, "system_load", qos.output_qos())
        self._parameters: Client[Any, Any] = self.node.create_client(
            SetParametersAtomically, f"/{node_name}/set_parameters_atomically"
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

    # --- frames --------------------------------------------------------------------------

    @property
    def image_pub(self) -> Publisher[Image]:
        """The image publisher of a single-camera node."""
        return self.image_pubs[""]

    def publish_image(
        self, image: Image, stamp_ns: int | None = None, camera: str = ""
    ) -> FrameTrace:
        """Stamp ``image`` (now on the system clock unless given; unique) and publish it."""
        publisher = self.image_pubs[camera]
        now_ns = time.time_ns() if stamp_ns is None else stamp_ns
        with self._lock:
            stamp = max(now_ns, self._last_stamp_ns + 1)
            self._last_stamp_ns = stamp
            trace = FrameTrace(stamp, time.monotonic_ns(), camera=camera)
            self._frames[(camera, stamp)] = trace
        image.header.stamp = ns_to_stamp(stamp)
        publisher.publish(image)
        return trace

    def publish_load(self, load: float) -> None:
        self.load_pub.publish(Float32(data=float(load)))

    def trace(self, stamp_ns: int, camera: str = "") -> FrameTrace | None:
        with self._lock:
            return self._frames.get((camera, stamp_ns))

    def expect(self, stamp_ns: int, camera: str = "") -> FrameTrace:
        """The trace of a frame another process published (created at first sight)."""
        with self._lock:
            return self._frames.setdefault((camera, stamp_ns), FrameTrace(stamp_ns, camera=camera))

    def _traced(self, stamp_ns: int, camera: str) -> FrameTrace | None:
        return self.expect(stamp_ns, camera) if self._track_all else self.trace(stamp_ns, camera)

    def traces(self) -> list[FrameTrace]:
        """Every frame sent so far, in sending order."""
        with self._lock:
            return list(self._frames.values())

    def forget(self, stamps: Iterable[int], camera: str = "") -> None:
        """Drop the records of frames nobody needs any more (long runs)."""
        with self._lock:
            for stamp in stamps:
                self._frames.pop((camera, stamp), None)

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
        trace = self._traced(stamp_to_ns(msg.header.stamp), camera)
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

    # --- parameters ----------------------------------------------------------------------

    def set_parameters(self, values: Mapping[str, Any], timeout_s: float = 10.0) -> str:
        """Set parameters of the node all at once; '' on success, else the node's reason.

        The request is sent again when no answer comes: DDS matches a new
        client's reply reader some time after the service reports itself
        ready, and a reply sent before that is lost. Setting the same values
        twice changes nothing.
        """
        deadline = time.monotonic() + timeout_s
        if not self.wait_until(self._parameters.service_is_ready, timeout_s):
            raise RosError(f"/{self.node_name}/set_parameters_atomically is not available")
        request = SetParametersAtomically.Request(
            parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
        )
        while time.monotonic() < deadline:
            future = self._parameters.call_async(request)
            if self.wait_until(future.done, min(2.0, max(deadline - time.monotonic(), 0.0))):
                response = future.result()
                if response is None:
                    raise RosError(f"/{self.node_name} failed to answer a parameter change")
                result = response.result
                return "" if result.successful else str(result.reason)
            self._parameters.remove_pending_request(future)
        raise RosError(f"/{self.node_name} did not answer a parameter change in {timeout_s:g} s")


class FrameStream:
    """Publishes prebuilt frames through a :class:`NodeClient` at a steady rate, like a camera.

    Ticks lie on a fixed grid from the first one. When the caller falls
    behind by more than a period (a busy machine), the missed ticks are
    skipped rather than sent in a burst, as a camera driver would: two
    frames back to back would make the node's keep-last-1 subscription
    replace the first before it is taken.
    """

    def __init__(
        self, client: NodeClient, frames: Sequence[Image], rate_hz: float, camera: str = ""
    ) -> None:
        if not frames or rate_hz <= 0:
            raise RosError("a frame stream needs at least one frame and a rate above 0 Hz")
        self.client = client
        self.camera = camera
        self.frames = list(frames)
        self.period_ns = round(NS_PER_S / rate_hz)
        self.published = 0
        self._next_ns: int | None = None

    def tick(self) -> FrameTrace:
        """Wait for the next tick of the grid, then publish the next frame of the pool."""
        now_ns = time.monotonic_ns()
        if self._next_ns is None or now_ns - self._next_ns > self.period_ns:
            self._next_ns = now_ns  # first tick, or fell behind: restart the grid from now
        elif now_ns < self._next_ns:
            time.sleep((self._next_ns - now_ns) / 1e9)
        self._next_ns += self.period_ns
        frame = self.frames[self.published % len(self.frames)]
        self.published += 1
        return self.client.publish_image(frame, camera=self.camera)
