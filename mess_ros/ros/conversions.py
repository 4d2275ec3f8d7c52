"""numpy <-> ``sensor_msgs`` conversions, written with numpy alone.

The PyPI ``cv_bridge`` is the ROS 1 one and breaks with numpy 2, so the node
converts messages itself. Every check a malformed message can fail is made
before any pixel is touched and raises a specific
:class:`~mess_ros.ros.errors.ImageConversionError` subclass whose message names
the field that is wrong and what was expected: the node turns it into a
throttled warning and a drop counter, never into a crash.

Conversions avoid Python-level loops and needless copies: a message's
``data`` (an ``array.array``) is viewed with :func:`numpy.frombuffer`, rows
are cut to drop ``step`` padding, and only the channel reordering copies.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np
import numpy.typing as npt
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from mess_ros.ros.errors import (
    CompressedImageError,
    EmptyImageError,
    ImageConversionError,
    ImageDataLengthError,
    ImageStepError,
    ImageTooLargeError,
    UnsupportedEncodingError,
)

U8Array = npt.NDArray[np.uint8]

# A 4K frame is 8.3 Mpx; anything far above is a corrupted header, not a camera.
DEFAULT_MAX_IMAGE_PIXELS: Final = 4096 * 4096


@dataclass(frozen=True)
class PixelFormat:
    """Memory layout of one ``sensor_msgs/Image`` encoding."""

    channels: int
    bytes_per_channel: int

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_channel


PIXEL_FORMATS: Final[dict[str, PixelFormat]] = {
    "rgb8": PixelFormat(3, 1),
    "bgr8": PixelFormat(3, 1),
    "rgba8": PixelFormat(4, 1),
    "bgra8": PixelFormat(4, 1),
    "mono8": PixelFormat(1, 1),
    "mono16": PixelFormat(1, 2),
}
SUPPORTED_ENCODINGS: Final = tuple(PIXEL_FORMATS)
_TO_RGB: Final = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
}


def pixel_format(encoding: str) -> PixelFormat:
    """Layout of ``encoding``; :class:`UnsupportedEncodingError` lists the supported ones."""
    try:
        return PIXEL_FORMATS[encoding]
    except KeyError as err:
        msg = (
            f"unsupported image encoding {encoding!r}; "
            f"supported encodings: {', '.join(SUPPORTED_ENCODINGS)}"
        )
        raise UnsupportedEncodingError(msg) from err


def check_image_size(height: int, width: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Reject empty and absurdly large frames before memory is allocated for them."""
    if height <= 0 or width <= 0:
        msg = f"image has zero size ({width}x{height}); width and height must be positive"
        raise EmptyImageError(msg)
    if height * width > max_pixels:
        msg = (
            f"image of {width}x{height} = {height * width} pixels exceeds the limit of "
            f"{max_pixels} pixels (parameter node.max_image_pixels)"
        )
        raise ImageTooLargeError(msg)


def image_to_array(msg: Image, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """The pixels of ``msg`` in their native layout: HxW (mono) or HxWxC, dtype per encoding.

    ``step`` padding is cut away and ``mono16`` is read with the byte order
    ``is_bigendian`` names and returned in native order. The result may share
    memory with ``msg.data`` (it keeps the message buffer alive); callers that
    modify pixels must copy.
    """
    fmt = pixel_format(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_image_size(height, width, max_pixels)
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        msg_text = (
            f"step {step} is smaller than one row of {width} {msg.encoding} pixels "
            f"({row_bytes} bytes)"
        )
        raise ImageStepError(msg_text)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        msg_text = (
            f"data length {data.size} does not match step * height = {step} * {height} = "
            f"{step * height} bytes ({width}x{height} {msg.encoding})"
        )
        raise ImageDataLengthError(msg_text)
    rows = data.reshape(height, step)[:, :row_bytes]
    if fmt.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        # A row cut out of a padded buffer is not contiguous; view() needs it to be.
        pixels = np.ascontiguousarray(rows).view(dtype).astype(np.uint16, copy=False)
        return pixels.reshape(height, width)
    if fmt.channels == 1:
        return rows
    return rows.reshape(height, width, fmt.channels)


def image_to_rgb(msg: Image, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """``msg`` as the HxWx3 uint8 RGB array the engine expects.

    Alpha is discarded, grey is replicated to three channels and ``mono16``
    keeps its 8 most significant bits (full 16-bit range mapped to 0..255),
    which is what a network trained on 8-bit images can use.
    """
    pixels = image_to_array(msg, max_pixels)
    encoding = msg.encoding
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
        encoding = "mono8"
    if encoding == "mono8":
        grey: U8Array = np.ascontiguousarray(pixels, dtype=np.uint8)
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), dtype=np.uint8)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    # OpenCV reorders channels about ten times faster than a negative-stride numpy copy.
    code = _TO_RGB[encoding]
    source = np.ascontiguousarray(pixels, dtype=np.uint8)
    return np.asarray(cv2.cvtColor(source, code), dtype=np.uint8)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """Decode a ``CompressedImage`` (JPEG, PNG, ...) to HxWx3 uint8 RGB.

    OpenCV decodes colour images to BGR whatever the ``format`` string says
    (``"rgb8; jpeg compressed bgr8"`` means the publisher already swapped to
    BGR before compressing), so the decoded image is only swapped to RGB.
    ``compressedDepth`` payloads (a depth header before the PNG) are not
    colour images and are refused.
    """
    if "compresseddepth" in msg.format.lower():
        msg_text = (
            f"compressed image format {msg.format!r} is a depth image; "
            "expected a colour JPEG or PNG payload"
        )
        raise UnsupportedEncodingError(msg_text)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise EmptyImageError("compressed image has no data; expected a JPEG or PNG payload")
    # A compressed payload larger than the raw limit cannot be a sane frame.
    if data.size > 3 * max_pixels:
        msg_text = (
            f"compressed payload of {data.size} bytes exceeds three bytes per pixel of the "
            f"{max_pixels}-pixel limit (parameter node.max_image_pixels)"
        )
        raise ImageTooLargeError(msg_text)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as err:
        msg_text = f"cannot decode compressed image (format {msg.format!r}): {err}"
        raise CompressedImageError(msg_text) from err
    if decoded is None:
        msg_text = (
            f"cannot decode compressed image of {data.size} bytes (format {msg.format!r}); "
            "expected a JPEG or PNG payload"
        )
        raise CompressedImageError(msg_text)
    check_image_size(int(decoded.shape[0]), int(decoded.shape[1]), max_pixels)
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)


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
    fmt = pixel_format(encoding)
    expected_dims = 2 if fmt.channels == 1 else 3
    if pixels.ndim != expected_dims or (fmt.channels > 1 and pixels.shape[2] != fmt.channels):
        msg = (
            f"array of shape {pixels.shape} does not fit encoding {encoding!r}; expected "
            f"{'HxW' if fmt.channels == 1 else f'HxWx{fmt.channels}'}"
        )
        raise ImageConversionError(msg)
    dtype = np.dtype(np.uint16 if fmt.bytes_per_channel == 2 else np.uint8)
    if pixels.dtype != dtype:
        msg = f"array of dtype {pixels.dtype} does not fit encoding {encoding!r}; expected {dtype}"
        raise ImageConversionError(msg)
    if row_padding < 0:
        raise ImageConversionError(f"row_padding must be >= 0, got {row_padding}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    if fmt.bytes_per_channel == 2:
        pixels = pixels.astype(">u2" if is_bigendian else "<u2", copy=False)
    row_bytes = width * fmt.bytes_per_pixel
    step = row_bytes + row_padding
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, row_bytes)
    if row_padding:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    out = Image()
    if header is not None:
        out.header = header
    out.height = height
    out.width = width
    out.encoding = encoding
    out.is_bigendian = bool(is_bigendian and fmt.bytes_per_channel == 2)
    out.step = step
    out.data = _to_byte_array(rows)
    return out


def rgb_to_encoding(rgb: U8Array, encoding: str) -> np.ndarray:
    """An RGB array in the channel layout of ``encoding`` (inverse of :func:`image_to_rgb`).

    Grey encodings use OpenCV's luma weights; ``mono16`` spreads 0..255 over
    the full 16-bit range (x 257) so that :func:`image_to_rgb` gives the grey
    values back exactly. Alpha is opaque.
    """
    pixel_format(encoding)
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    if encoding in ("rgba8", "bgra8"):
        code = cv2.COLOR_RGB2RGBA if encoding == "rgba8" else cv2.COLOR_RGB2BGRA
        return np.asarray(cv2.cvtColor(rgb, code), dtype=np.uint8)
    grey = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    if encoding == "mono16":
        return grey.astype(np.uint16) * np.uint16(257)
    return grey


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
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise CompressedImageError(f"JPEG encoding of a {rgb.shape} array failed")
    out = CompressedImage()
    if header is not None:
        out.header = header
    out.format = "rgb8; jpeg compressed bgr8"
    out.data = _to_byte_array(np.asarray(encoded, dtype=np.uint8))
    return out


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
