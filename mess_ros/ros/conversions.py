"""``sensor_msgs`` image messages <-> numpy for the node: rclpy glue around the shared codec.

The PyPI ``cv_bridge`` is the ROS 1 one and breaks with numpy 2, so the node
converts messages itself with :mod:`mess_ros.data.image_codec`, the codec the
bag tools use too (the node and the offline evaluation then see identical
pixels). This module only adds what is particular to rclpy: building message
objects, storing pixels as the ``array.array`` rclpy takes without a
per-element check, and rescaling ``CameraInfo``. The codec's
:class:`~mess_ros.data.errors.ImageFormatError` subclasses pass through
unchanged (a size error names the node parameter to change); the node turns
them into a throttled warning and a drop counter named by their ``cause``,
never into a crash.
"""

from __future__ import annotations

import array
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mess_ros.common.stamps import split_ns
from mess_ros.data import image_codec
from mess_ros.data.errors import ImageTooLargeError
from mess_ros.data.image_codec import DEFAULT_MAX_IMAGE_PIXELS, U8Array


@contextmanager
def _pixel_limit_named() -> Iterator[None]:
    """A frame over the pixel limit names the node parameter that sets it."""
    try:
        yield
    except ImageTooLargeError as err:
        raise ImageTooLargeError(f"{err} (parameter node.max_image_pixels)") from err


def image_to_array(msg: Image, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """The pixels of ``msg`` in their native layout (see :func:`.image_codec.image_to_array`).

    The result may share memory with ``msg.data``; callers that modify pixels must copy.
    """
    with _pixel_limit_named():
        return image_codec.image_to_array(msg, max_pixels)


def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """``msg`` as the HxWx3 uint8 RGB array the engine expects."""
    with _pixel_limit_named():
        return image_codec.image_to_rgb(msg, max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """A JPEG or PNG ``CompressedImage`` as HxWx3 uint8 RGB."""
    with _pixel_limit_named():
        return image_codec.compressed_to_rgb(msg, max_pixels)


def rgb_to_encoding(rgb: U8Array, encoding: str) -> np.ndarray:
    """An RGB array in the channel layout of ``encoding`` (inverse of :func:`image_to_rgb`)."""
    return image_codec.rgb_to_encoding(rgb, encoding)


def array_to_image(
    pixels: np.ndarray,
    encoding: str,
    header: Header | None = None,
    *,
    row_padding: int = 0,
    is_bigendian: bool = False,
) -> Image:
    """Pack ``pixels`` (already in ``encoding``'s channel order) into an ``Image``.

    ``row_padding`` extra bytes per row and ``is_bigendian`` exist so tests and
    benchmarks can produce every layout a real driver may send.
    """
    raw = image_codec.array_to_raw(
        pixels, encoding, row_padding=row_padding, big_endian=is_bigendian
    )
    out = Image()
    if header is not None:
        out.header = header
    out.height = raw.height
    out.width = raw.width
    out.encoding = raw.encoding
    out.is_bigendian = raw.is_bigendian
    out.step = raw.step
    out.data = _to_byte_array(raw.data)
    return out


def mask_to_image(mask: U8Array, header: Header) -> Image:
    """A class-id mask as ``mono8`` with the input frame's header copied unchanged."""
    return array_to_image(mask, "mono8", header)


def rgb_to_image(rgb: U8Array, header: Header) -> Image:
    """An RGB array (the colour mask) as ``rgb8``."""
    return array_to_image(rgb, "rgb8", header)


def rgb_to_compressed(
    rgb: U8Array, header: Header | None = None, quality: int = 90
) -> CompressedImage:
    """JPEG-compress an RGB array (used by the synthetic camera and the tests)."""
    payload = image_codec.rgb_to_compressed(rgb, "jpeg", quality)
    out = CompressedImage()
    if header is not None:
        out.header = header
    out.format = payload.format
    out.data = _to_byte_array(payload.data)
    return out


def ns_to_stamp(stamp_ns: int) -> Time:
    """Integer nanoseconds as a ``builtin_interfaces/Time``."""
    sec, nanosec = split_ns(stamp_ns)
    return Time(sec=sec, nanosec=nanosec)


def scale_camera_info(info: CameraInfo, height: int, width: int) -> CameraInfo:
    """``info`` rescaled to a ``width`` x ``height`` image of the same view.

    Focal lengths, principal point and the projection's translation scale
    with the image axes (as image_proc's resize does); distortion and
    rectification do not depend on resolution and are copied. A zero-sized
    ``info`` cannot be scaled and is returned with only the size changed.
    """
    out = CameraInfo()
    out.header = info.header
    out.distortion_model = info.distortion_model
    out.d = list(info.d)
    out.r = list(info.r)
    out.binning_x = info.binning_x
    out.binning_y = info.binning_y
    out.height = height
    out.width = width
    if info.width == 0 or info.height == 0:
        out.k = list(info.k)
        out.p = list(info.p)
        out.roi = info.roi
        return out
    sx = width / info.width
    sy = height / info.height
    k = [float(v) for v in info.k]
    k[0] *= sx
    k[2] *= sx
    k[4] *= sy
    k[5] *= sy
    p = [float(v) for v in info.p]
    p[0] *= sx
    p[2] *= sx
    p[3] *= sx
    p[5] *= sy
    p[6] *= sy
    out.k = k
    out.p = p
    roi = info.roi
    out.roi.x_offset = math.floor(roi.x_offset * sx)
    out.roi.y_offset = math.floor(roi.y_offset * sy)
    out.roi.width = math.floor(roi.width * sx)
    out.roi.height = math.floor(roi.height * sy)
    out.roi.do_rectify = roi.do_rectify
    return out


def _to_byte_array(pixels: np.ndarray) -> array.array[int]:
    """One copy into the ``array.array('B')`` the message stores.

    Assigning ``bytes`` to a message field makes rclpy check every element in
    Python (seconds for a VGA frame); an ``array.array`` is taken as is.
    """
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(pixels).data)
    return out
