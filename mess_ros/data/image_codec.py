"""ROS image payloads <-> numpy: the one codec the node and the bag tools share.

``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` have the same fields
whether rclpy received them or ``rosbags`` deserialised them from a bag, so
the decoders here only read attributes (:class:`ImageLike`,
:class:`CompressedLike`) and take both. The node and the offline evaluation
therefore see the same pixels for the same message by construction, which is
what lets an offline score stand for the live one. The encoders return plain
field values (:class:`RawImage`, :class:`CompressedPayload`) that each caller
copies into its own message class, so this module imports neither rclpy nor
rosbags.

Every check a malformed message can fail is made before any pixel is touched
and raises a subclass of :class:`~mess_ros.data.errors.ImageFormatError`: its ``cause`` tag
is what the node counts drops under and what the bag reader counts skipped
frames under, its message names the wrong field and what was expected.

Decoding avoids Python-level loops and needless copies: ``data`` is viewed
with :func:`numpy.frombuffer`, rows are cut to drop ``step`` padding, and only
channel reordering copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from mess_ros.data.errors import (
    EmptyImageError,
    ImageArrayError,
    ImageDataLengthError,
    ImageDecodeError,
    ImageEncodeError,
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

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy type of one channel value, in native byte order."""
        return np.dtype(np.uint16 if self.bytes_per_channel == 2 else np.uint8)


# The colour and grey encodings a camera image may use.
PIXEL_FORMATS: Final[Mapping[str, PixelFormat]] = {
    "rgb8": PixelFormat(3, 1),
    "bgr8": PixelFormat(3, 1),
    "rgba8": PixelFormat(4, 1),
    "bgra8": PixelFormat(4, 1),
    "mono8": PixelFormat(1, 1),
    "mono16": PixelFormat(1, 2),
}
SUPPORTED_ENCODINGS: Final = tuple(PIXEL_FORMATS)
# Class-id masks: labelling tools write the OpenCV type name as often as mono8.
MASK_FORMATS: Final[Mapping[str, PixelFormat]] = {
    "mono8": PixelFormat(1, 1),
    "8UC1": PixelFormat(1, 1),
}
MASK_ENCODINGS: Final = tuple(MASK_FORMATS)
# Payloads the encoder writes into a CompressedImage.
COMPRESSED_FORMATS: Final = ("jpeg", "png")

_TO_RGB: Final = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
}


class ImageLike(Protocol):
    """The fields of ``sensor_msgs/Image`` the decoders read (rclpy and rosbags messages alike)."""

    @property
    def height(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def encoding(self) -> str: ...
    @property
    def is_bigendian(self) -> int: ...
    @property
    def step(self) -> int: ...
    @property
    def data(self) -> Any: ...


class CompressedLike(Protocol):
    """The fields of ``sensor_msgs/CompressedImage`` the decoder reads."""

    @property
    def format(self) -> str: ...
    @property
    def data(self) -> Any: ...


@dataclass(frozen=True)
class RawImage:
    """The fields of an encoded ``sensor_msgs/Image``, before a message class holds them.

    ``data`` is one-dimensional, ``step * height`` bytes long. A :class:`RawImage`
    is itself :class:`ImageLike`, so it decodes without any message class.
    """

    height: int
    width: int
    encoding: str
    is_bigendian: bool
    step: int
    data: U8Array


@dataclass(frozen=True)
class CompressedPayload:
    """The fields of an encoded ``sensor_msgs/CompressedImage`` (itself :class:`CompressedLike`)."""

    format: str
    data: U8Array


def pixel_format(encoding: str, formats: Mapping[str, PixelFormat] = PIXEL_FORMATS) -> PixelFormat:
    """Layout of ``encoding`` among ``formats``; the error lists the supported ones."""
    try:
        return formats[encoding]
    except KeyError as err:
        msg = f"unsupported encoding {encoding!r}; supported encodings: {', '.join(formats)}"
        raise UnsupportedEncodingError(msg) from err


def check_image_size(height: int, width: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Reject empty and absurdly large frames before memory is allocated for them."""
    if height <= 0 or width <= 0:
        msg = f"image has zero size ({width}x{height}); width and height must be positive"
        raise EmptyImageError(msg)
    if height * width > max_pixels:
        msg = (
            f"image of {width}x{height} = {height * width} pixels exceeds the limit of "
            f"{max_pixels} pixels"
        )
        raise ImageTooLargeError(msg)


def image_to_array(
    msg: ImageLike,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    formats: Mapping[str, PixelFormat] = PIXEL_FORMATS,
) -> np.ndarray:
    """The pixels of ``msg`` in their native layout: HxW (one channel) or HxWxC, dtype per encoding.

    ``step`` padding is cut away and 16-bit values are read with the byte
    order ``is_bigendian`` names and returned in native order. The result may
    share memory with ``msg.data`` (it keeps the message buffer alive);
    callers that modify pixels must copy.
    """
    encoding = str(msg.encoding)
    fmt = pixel_format(encoding, formats)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    check_image_size(height, width, max_pixels)
    row_bytes = width * fmt.bytes_per_pixel
    if step < row_bytes:
        text = (
            f"step {step} is smaller than one row of {width} {encoding} pixels ({row_bytes} bytes)"
        )
        raise ImageStepError(text)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size != step * height:
        text = (
            f"data length {data.size} does not match step * height = {step} * {height} = "
            f"{step * height} bytes ({width}x{height} {encoding})"
        )
        raise ImageDataLengthError(text)
    rows = data.reshape(height, step)[:, :row_bytes]
    if fmt.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
        # A row cut out of a padded buffer is not contiguous; view() needs it to be.
        pixels = np.ascontiguousarray(rows).view(dtype).astype(np.uint16, copy=False)
        return pixels.reshape(height, width)
    if fmt.channels == 1:
        return rows
    return rows.reshape(height, width, fmt.channels)


def image_to_rgb(msg: ImageLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """``msg`` as the HxWx3 uint8 RGB array the engine expects (a new, contiguous array).

    Alpha is discarded, grey is replicated to three channels and ``mono16``
    keeps its 8 most significant bits (full 16-bit range mapped to 0..255),
    which is what a network trained on 8-bit images can use.
    """
    pixels = image_to_array(msg, max_pixels)
    encoding = str(msg.encoding)
    if encoding == "mono16":
        pixels = (pixels >> 8).astype(np.uint8)
        encoding = "mono8"
    if encoding == "mono8":
        grey: U8Array = np.ascontiguousarray(pixels, dtype=np.uint8)
        return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB), dtype=np.uint8)
    if encoding == "rgb8":
        return np.ascontiguousarray(pixels, dtype=np.uint8)
    # OpenCV reorders channels about ten times faster than a negative-stride numpy copy.
    source = np.ascontiguousarray(pixels, dtype=np.uint8)
    return np.asarray(cv2.cvtColor(source, _TO_RGB[encoding]), dtype=np.uint8)


def image_to_mask(msg: ImageLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """A class-id mask (``mono8`` or ``8UC1``) as HxW uint8; may share memory with ``msg.data``."""
    return np.asarray(image_to_array(msg, max_pixels, MASK_FORMATS), dtype=np.uint8)


def compressed_to_rgb(msg: CompressedLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> U8Array:
    """Decode a JPEG or PNG ``CompressedImage`` to HxWx3 uint8 RGB.

    OpenCV decodes colour images to BGR whatever the ``format`` string says
    (``"rgb8; jpeg compressed bgr8"`` means the publisher already swapped to
    BGR before compressing), so the decoded image is only swapped to RGB.
    ``compressedDepth`` payloads (a depth header before the PNG) are not
    colour images and are refused.
    """
    fmt = str(msg.format)
    if "compresseddepth" in fmt.lower():
        text = f"compressed image format {fmt!r} is a depth image; expected a colour JPEG or PNG"
        raise UnsupportedEncodingError(text)
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise EmptyImageError("compressed image has no data; expected a JPEG or PNG payload")
    # A compressed payload larger than the raw limit cannot be a sane frame.
    if data.size > 3 * max_pixels:
        text = (
            f"compressed payload of {data.size} bytes exceeds three bytes per pixel of the "
            f"{max_pixels}-pixel limit"
        )
        raise ImageTooLargeError(text)
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as err:
        text = f"cannot decode compressed image (format {fmt!r}): {err}"
        raise ImageDecodeError(text) from err
    if decoded is None:
        text = (
            f"cannot decode compressed image of {data.size} bytes (format {fmt!r}); "
            "expected a JPEG or PNG payload"
        )
        raise ImageDecodeError(text)
    check_image_size(int(decoded.shape[0]), int(decoded.shape[1]), max_pixels)
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)


def check_rgb(rgb: np.ndarray) -> U8Array:
    """``rgb`` typed as an RGB image, or the error an encoder raises for any other array."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        text = f"array of shape {rgb.shape} and dtype {rgb.dtype}; expected HxWx3 uint8 RGB"
        raise ImageArrayError(text)
    return np.asarray(rgb, dtype=np.uint8)


def rgb_to_encoding(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """An RGB array in the channel layout of ``encoding`` (inverse of :func:`image_to_rgb`).

    Grey encodings use OpenCV's luma weights; ``mono16`` spreads 0..255 over
    the full 16-bit range (x 257) so that :func:`image_to_rgb` gives the grey
    values back exactly. Alpha is opaque.
    """
    rgb = check_rgb(rgb)
    pixel_format(encoding)
    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[:, :, ::-1])
    source = np.ascontiguousarray(rgb)
    if encoding in ("rgba8", "bgra8"):
        code = cv2.COLOR_RGB2RGBA if encoding == "rgba8" else cv2.COLOR_RGB2BGRA
        return np.asarray(cv2.cvtColor(source, code), dtype=np.uint8)
    grey = np.asarray(cv2.cvtColor(source, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
    if encoding == "mono16":
        return grey.astype(np.uint16) * np.uint16(257)
    return grey


def array_to_raw(
    pixels: np.ndarray, encoding: str, *, row_padding: int = 0, big_endian: bool = False
) -> RawImage:
    """Pack ``pixels`` (already in ``encoding``'s channel order) into ``Image`` fields.

    ``row_padding`` extra zero bytes per row and ``big_endian`` (16-bit
    encodings only) exist so tests, benchmarks and bag writers can produce
    every layout a real driver may send.
    """
    fmt = pixel_format(encoding)
    expected_dims = 2 if fmt.channels == 1 else 3
    if pixels.ndim != expected_dims or (fmt.channels > 1 and pixels.shape[2] != fmt.channels):
        text = (
            f"array of shape {pixels.shape} does not fit encoding {encoding!r}; expected "
            f"{'HxW' if fmt.channels == 1 else f'HxWx{fmt.channels}'}"
        )
        raise ImageArrayError(text)
    if pixels.dtype != fmt.dtype:
        text = (
            f"array of dtype {pixels.dtype} does not fit encoding {encoding!r}; "
            f"expected {fmt.dtype}"
        )
        raise ImageArrayError(text)
    if row_padding < 0:
        raise ImageStepError(f"row_padding must be >= 0, got {row_padding}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    is_bigendian = big_endian and fmt.bytes_per_channel == 2
    if fmt.bytes_per_channel == 2:
        pixels = pixels.astype(">u2" if is_bigendian else "<u2", copy=False)
    row_bytes = width * fmt.bytes_per_pixel
    step = row_bytes + row_padding
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, row_bytes)
    if row_padding:
        padded = np.zeros((height, step), dtype=np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    return RawImage(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=is_bigendian,
        step=step,
        data=rows.reshape(-1),
    )


def rgb_to_compressed(
    rgb: np.ndarray, fmt: str = "jpeg", jpeg_quality: int = 95
) -> CompressedPayload:
    """Compress an RGB array to a JPEG (lossy, ``jpeg_quality``) or lossless PNG payload.

    The payload holds BGR as OpenCV writes it, which ``format`` states in the
    ``image_transport`` convention (``"rgb8; jpeg compressed bgr8"``).
    """
    rgb = check_rgb(rgb)
    if fmt not in COMPRESSED_FORMATS:
        text = f"unknown compressed format {fmt!r}; expected one of {', '.join(COMPRESSED_FORMATS)}"
        raise UnsupportedEncodingError(text)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else []
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise ImageEncodeError(f"{fmt} encoding of a {rgb.shape} image failed")
    return CompressedPayload(
        format=f"rgb8; {fmt} compressed bgr8", data=np.asarray(encoded, dtype=np.uint8).reshape(-1)
    )
