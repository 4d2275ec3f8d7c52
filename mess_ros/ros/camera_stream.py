"""One camera of the segmentation node: its topics, its latest camera info, its statistics.

A node serves either one camera on the plain topic names (``image``,
``mask`` ...) or several (``cameras.names``), each under its own name
(``front/image``, ``front/mask`` ...). All names are relative, so the node's
namespace and remappings apply to each as to any topic. Per camera:

* in: ``<name>/image`` (or ``<name>/image/compressed`` with
  ``node.use_compressed``), ``<name>/camera_info``;
* out: ``<name>/mask``, ``<name>/mask_color`` and ``<name>/mask_overlay``
  (each colour image computed only while someone subscribes),
  ``<name>/mask/camera_info`` and ``<name>/exit_info``.

The statistics of a camera count towards the node's too (their ``parent``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.subscription import Subscription
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mess_ros.config import NodeConfig
from mess_ros.data.image_codec import U8Array
from mess_ros.data.labels import LabelSet, overlay
from mess_ros.ros import qos
from mess_ros.ros.conversions import mask_to_image, rgb_to_image, scale_camera_info
from mess_ros.ros.stats import NodeStatistics
from mess_ros.runtime.frame_scheduler import ArrivalClock


class CameraStream:
    """The topics and figures of camera ``index`` (named ``name``; "" for the single camera)."""

    def __init__(
        self,
        node: Node,
        index: int,
        name: str,
        overall: NodeStatistics,
        bad_input_causes: frozenset[str],
    ) -> None:
        self.node = node
        self.index = index
        self.name = name
        self.stats = NodeStatistics(bad_input_causes=bad_input_causes, parent=overall)
        self.camera_info: CameraInfo | None = None
        # When its next frame is due, and of what size: what the scheduler reserves for it.
        self.arrivals = ArrivalClock()
        self.size_hw: tuple[int, int] | None = None
        self._subscriptions: list[Subscription[Any]] = []
        self._mask_pub: Publisher[Image] | None = None
        self._color_pub: Publisher[Image] | None = None
        self._overlay_pub: Publisher[Image] | None = None
        self._info_pub: Publisher[CameraInfo] | None = None
        self._exit_pub: Publisher[DiagnosticArray] | None = None

    def topic(self, base: str) -> str:
        """The relative name of this camera's topic ``base`` (``mask`` -> ``front/mask``)."""
        return f"{self.name}/{base}" if self.name else base

    @property
    def image_topic(self) -> str:
        """The resolved name of the image topic this camera listens on."""
        return self._subscriptions[0].topic_name if self._subscriptions else ""

    def create_topics(
        self,
        config: NodeConfig,
        on_image: Callable[[CameraStream, Image], None],
        on_compressed: Callable[[CameraStream, CompressedImage], None],
    ) -> None:
        node = self.node
        out = qos.output_qos()
        self._mask_pub = node.create_publisher(Image, self.topic("mask"), out)
        self._color_pub = node.create_publisher(Image, self.topic("mask_color"), out)
        self._overlay_pub = node.create_publisher(Image, self.topic("mask_overlay"), out)
        self._info_pub = node.create_publisher(CameraInfo, self.topic("mask/camera_info"), out)
        self._exit_pub = node.create_publisher(DiagnosticArray, self.topic("exit_info"), out)
        image_qos = qos.image_qos(config.image_qos_reliability, config.image_qos_depth)
        if config.use_compressed:
            # Remapping <name>/image moves <name>/image/compressed with it, as image_transport does.
            topic = node.resolve_topic_name(self.topic("image")) + "/compressed"
            subscription: Subscription[Any] = node.create_subscription(
                CompressedImage, topic, lambda msg: on_compressed(self, msg), image_qos
            )
        else:
            subscription = node.create_subscription(
                Image, self.topic("image"), lambda msg: on_image(self, msg), image_qos
            )
        self._subscriptions.append(subscription)
        self._subscriptions.append(
            node.create_subscription(
                CameraInfo, self.topic("camera_info"), self._on_camera_info, qos.small_input_qos()
            )
        )

    def destroy_topics(self) -> None:
        node = self.node
        for sub in self._subscriptions:
            node.destroy_subscription(sub)
        self._subscriptions.clear()
        for pub in (
            self._mask_pub,
            self._color_pub,
            self._overlay_pub,
            self._info_pub,
            self._exit_pub,
        ):
            if pub is not None:
                node.destroy_publisher(pub)
        self._mask_pub = self._color_pub = self._overlay_pub = None
        self._info_pub = self._exit_pub = None

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self.camera_info = msg

    def publish_masks(
        self,
        header: Header,
        image: U8Array,
        mask: U8Array,
        labels: LabelSet,
        config: NodeConfig,
    ) -> list[str]:
        """The frame's mask, scaled camera info, and the colour images someone subscribes to.

        Returns the outputs published (``mask``, ``mask/camera_info``, ``mask_color``,
        ``mask_overlay``), for the frame's ``exit_info``.
        """
        if self._mask_pub is None:
            return []
        self._mask_pub.publish(mask_to_image(mask, header))
        outputs = ["mask"]
        height, width = int(mask.shape[0]), int(mask.shape[1])
        info = self.camera_info
        if info is not None and self._info_pub is not None:
            # A fresh message (scaled when sizes differ) stamped like the mask it describes.
            scaled = scale_camera_info(info, height, width)
            scaled.header = header
            self._info_pub.publish(scaled)
            outputs.append("mask/camera_info")
        color = _wanted(self._color_pub, config.publish_color_mask)
        blend = _wanted(self._overlay_pub, config.publish_overlay)
        if color is None and blend is None:
            return outputs
        colored = labels.colorize(mask)
        if color is not None:
            color.publish(rgb_to_image(colored, header))
            outputs.append("mask_color")
        if blend is not None:
            blend.publish(rgb_to_image(overlay(image, colored, config.overlay_alpha), header))
            outputs.append("mask_overlay")
        return outputs

    def publish_exit_info(self, message: DiagnosticArray) -> None:
        if self._exit_pub is not None:
            self._exit_pub.publish(message)


def _wanted(publisher: Publisher[Image] | None, enabled: bool) -> Publisher[Image] | None:
    """``publisher`` when its output is enabled and someone subscribes, else None."""
    if not enabled or publisher is None or publisher.get_subscription_count() == 0:
        return None
    return publisher
