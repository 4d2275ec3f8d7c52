"""``synthetic_camera``: a camera driver stand-in that publishes labelled synthetic scenes.

Publishes, at a steady rate and all with the same header per frame:

* ``image`` (``sensor_msgs/Image`` in the chosen encoding, sensor-data QoS
  like a real driver, or reliable with ``--reliable``),
* ``mask_gt`` (``mono8`` ground-truth class ids, reliable) so a consumer can
  score every mask the segmentation node returns by stamp,
* ``camera_info`` (a pinhole model with a 90 degree horizontal field of view),
* optionally ``system_load`` from a schedule (``--load-schedule 0:0,10:0.8``).

Scenes come from :class:`mess_ros.data.synthetic.SceneGenerator`. A pool of
frames is rendered before publishing starts and then cycled, with the
messages prebuilt: only the header changes per tick, so the rate stays
steady even when inference and a background load saturate the CPU.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Float32, Header

from mess_ros.console import add_debug_option, console_main
from mess_ros.data.image_codec import SUPPORTED_ENCODINGS
from mess_ros.data.synthetic import DIFFICULTY_LEVELS, SceneGenerator, difficulty_from_name
from mess_ros.ros import qos
from mess_ros.ros.conversions import array_to_image, rgb_to_encoding
from mess_ros.ros.errors import RosError
from mess_ros.ros.startup import fatal_logger, ignore_further_signals, start_ros
from mess_ros.runtime.scheduling import freeze_heap

NODE_NAME: Final = "synthetic_camera"
LOAD_PERIOD_S: Final = 0.1


@dataclass(frozen=True)
class LoadStep:
    """From ``start_s`` seconds after the first frame on, the reported load is ``load``."""

    start_s: float
    load: float


def parse_load_schedule(text: str) -> list[LoadStep]:
    """``"0:0.0,10:0.8"`` -> steps sorted by time; :class:`RosError` says what is wrong."""
    steps = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        start, sep, load = item.partition(":")
        try:
            step = LoadStep(float(start), float(load))
        except ValueError as err:
            msg = f"load schedule entry {item!r} is not '<seconds>:<load>' (e.g. '10:0.8')"
            raise RosError(msg) from err
        if not sep or step.start_s < 0 or not 0.0 <= step.load <= 1.0:
            msg = f"load schedule entry {item!r}: expected seconds >= 0 and a load in 0..1"
            raise RosError(msg)
        steps.append(step)
    return sorted(steps, key=lambda s: s.start_s)


def load_at(schedule: Sequence[LoadStep], elapsed_s: float) -> float | None:
    """The scheduled load at ``elapsed_s``; ``None`` before the first step."""
    current = None
    for step in schedule:
        if step.start_s <= elapsed_s:
            current = step.load
    return current


def pinhole_camera_info(height: int, width: int, frame_id: str) -> CameraInfo:
    """An undistorted pinhole model with a 90 degree horizontal field of view."""
    focal = width / (2.0 * math.tan(math.radians(90.0) / 2.0))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo(height=height, width=width, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.d = [0.0] * 5
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def render_pool(
    count: int,
    size_hw: tuple[int, int],
    *,
    seed: int = 2,
    encoding: str = "rgb8",
    difficulty: int | None = None,
    frame_id: str = "camera_optical_frame",
) -> list[tuple[Image, Image]]:
    """``count`` distinct scenes as (image, ground-truth ``mono8``) messages, built up front.

    Rendering takes far longer than publishing, so a camera stand-in renders
    its pool before its clock starts and then only stamps and publishes.
    """
    generator = SceneGenerator(size_hw[0], size_hw[1], seed=seed)
    frames = []
    for index in range(count):
        sample = generator.render(index, difficulty)
        image = array_to_image(rgb_to_encoding(sample.image, encoding), encoding)
        mask = array_to_image(sample.mask, "mono8")
        image.header.frame_id = mask.header.frame_id = frame_id
        frames.append((image, mask))
    return frames


@dataclass(frozen=True)
class CameraOptions:
    rate_hz: float = 15.0
    height: int = 480
    width: int = 640
    seed: int = 2
    encoding: str = "rgb8"
    difficulty: int | None = None
    pool_size: int = 60
    count: int = 0
    frame_id: str = "camera_optical_frame"
    reliable: bool = False
    load_schedule: tuple[LoadStep, ...] = ()


class SyntheticCamera(Node):
    """Publishes the pool of prerendered scenes in a loop at ``rate_hz``."""

    def __init__(self, options: CameraOptions, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self.options = options
        self._frames = render_pool(
            options.pool_size,
            (options.height, options.width),
            seed=options.seed,
            encoding=options.encoding,
            difficulty=options.difficulty,
            frame_id=options.frame_id,
        )
        self._info = pinhole_camera_info(options.height, options.width, options.frame_id)
        reliability = "reliable" if options.reliable else "best_effort"
        self._image_pub = self.create_publisher(Image, "image", qos.image_qos(reliability, 1))
        self._mask_pub = self.create_publisher(Image, "mask_gt", qos.output_qos())
        self._info_pub = self.create_publisher(CameraInfo, "camera_info", qos.output_qos())
        self._load_pub = (
            self.create_publisher(Float32, "system_load", qos.output_qos())
            if options.load_schedule
            else None
        )
        self.published = 0
        self._start_s: float | None = None
        self._timer = self.create_timer(1.0 / options.rate_hz, self._tick)
        if self._load_pub is not None:
            self._load_timer = self.create_timer(LOAD_PERIOD_S, self._publish_load)
        self.get_logger().info(
            f"publishing {options.width}x{options.height} {options.encoding} at "
            f"{options.rate_hz:g} Hz on {self._image_pub.topic_name} "
            f"({options.pool_size} scenes, seed {options.seed})"
        )

    @property
    def done(self) -> bool:
        return 0 < self.options.count <= self.published

    def _tick(self) -> None:
        if self.done:
            return
        if self._start_s is None:
            self._start_s = time.monotonic()
        image, mask = self._frames[self.published % len(self._frames)]
        header = Header(frame_id=self.options.frame_id, stamp=self.get_clock().now().to_msg())
        image.header = header
        mask.header = header
        self._info.header = header
        self._image_pub.publish(image)
        self._mask_pub.publish(mask)
        self._info_pub.publish(self._info)
        self.published += 1

    def _publish_load(self) -> None:
        if self._load_pub is None or self._start_s is None:
            return
        load = load_at(self.options.load_schedule, time.monotonic() - self._start_s)
        if load is not None:
            self._load_pub.publish(Float32(data=load))


def _parse_options(argv: Sequence[str]) -> CameraOptions:
    parser = argparse.ArgumentParser(
        prog=NODE_NAME,
        description="Publish synthetic labelled camera frames. ROS arguments go after --ros-args.",
    )
    defaults = CameraOptions()
    parser.add_argument("--rate", type=float, default=defaults.rate_hz, help="frames per second")
    parser.add_argument("--height", type=int, default=defaults.height)
    parser.add_argument("--width", type=int, default=defaults.width)
    parser.add_argument("--seed", type=int, default=defaults.seed, help="scene seed (2 = test)")
    parser.add_argument("--encoding", choices=SUPPORTED_ENCODINGS, default=defaults.encoding)
    parser.add_argument(
        "--difficulty",
        choices=DIFFICULTY_LEVELS,
        default=None,
        help="fixed scene difficulty (default: drawn per scene)",
    )
    parser.add_argument("--pool", type=int, default=defaults.pool_size, help="distinct scenes")
    parser.add_argument("--count", type=int, default=0, help="stop after N frames (0: never)")
    parser.add_argument("--frame-id", default=defaults.frame_id)
    parser.add_argument("--reliable", action="store_true", help="publish images reliably")
    parser.add_argument(
        "--load-schedule",
        default="",
        help="publish system_load steps '<seconds>:<load>,...' counted from the first frame",
    )
    add_debug_option(parser)
    args = parser.parse_args(list(argv))
    if args.rate <= 0 or args.pool < 1 or args.count < 0:
        parser.error("--rate must be > 0, --pool >= 1 and --count >= 0")
    try:
        schedule = tuple(parse_load_schedule(args.load_schedule))
    except RosError as err:
        parser.error(str(err))
    return CameraOptions(
        rate_hz=args.rate,
        height=args.height,
        width=args.width,
        seed=args.seed,
        encoding=args.encoding,
        difficulty=None if args.difficulty is None else difficulty_from_name(args.difficulty),
        pool_size=args.pool,
        count=args.count,
        frame_id=args.frame_id,
        reliable=args.reliable,
        load_schedule=schedule,
    )


@console_main(NODE_NAME, report=fatal_logger(NODE_NAME))
def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point; stops on SIGINT/SIGTERM or after ``--count`` frames."""
    start = start_ros(argv, _parse_options, fatal_logger(NODE_NAME))
    if start is None:
        return 1
    camera: SyntheticCamera | None = None
    try:
        camera = SyntheticCamera(start.options)
        freeze_heap()  # a collection between stamping and publishing a frame would delay it
        start.stop.spin(camera, until=lambda: camera is not None and camera.done)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        ignore_further_signals()
        if camera is not None:
            camera.destroy_node()
        rclpy.try_shutdown(uninstall_handlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
